// Retries: only idempotent calls are repeated on UNAVAILABLE, as in the Python client. A
// real grpc-js server speaking the authority's contract fails each call's first attempt
// with UNAVAILABLE and counts the attempts it sees.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { AuthorityClient, Unavailable } from '../src/index.js';
import { authorityPackage } from '../src/protos.js';

const attempts = {};
let server;
let client;

function failingFirst(method, answer) {
  return (call, callback) => {
    attempts[method] = (attempts[method] ?? 0) + 1;
    if (attempts[method] === 1) callback({ code: grpc.status.UNAVAILABLE, details: 'try again' });
    else callback(null, answer);
  };
}

before(async () => {
  server = new grpc.Server();
  server.addService(authorityPackage().TokenAuthority.service, {
    ValidateToken: failingFirst('ValidateToken', { valid: false, reason: 'INVALID_REASON_EXPIRED' }),
    GetSigningKeys: failingFirst('GetSigningKeys', { jwksJson: '{"keys":[]}' }),
    RevokeToken: failingFirst('RevokeToken', { revokedSessions: 1 }),
    IssueToken: failingFirst('IssueToken', {}),
    RefreshToken: failingFirst('RefreshToken', {}),
  });
  const port = await new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))));
  client = new AuthorityClient(`127.0.0.1:${port}`, { timeoutMs: 3000 });
});
after(() => {
  client?.close();
  server?.forceShutdown();
});

test('ValidateToken, GetSigningKeys and RevokeToken are retried on UNAVAILABLE', async () => {
  assert.deepEqual(await client.validateToken('a.b.c'), { valid: false, reason: 'EXPIRED' });
  assert.equal(await client.getSigningKeys(), '{"keys":[]}');
  assert.equal(await client.revokeToken({ sessionId: 's' }), 1);
  assert.deepEqual([attempts.ValidateToken, attempts.GetSigningKeys, attempts.RevokeToken], [2, 2, 2]);
});

test('a sign-in and a refresh are never repeated behind the caller', async () => {
  await assert.rejects(client.issueToken('alice', 'laptop'), Unavailable);
  await assert.rejects(client.refreshToken('r'), Unavailable);
  assert.deepEqual([attempts.IssueToken, attempts.RefreshToken], [1, 1]);
});
