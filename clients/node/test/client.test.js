// The typed client against a real `authority serve`: every RPC, the conversions, and
// errors that carry the gRPC code.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { inspect } from 'node:util';

import * as grpc from '@grpc/grpc-js';

import {
  AuthorityClient, InvalidArgument, RefreshRejected, SessionLimitReached, Unavailable,
} from '../src/index.js';
import { Authority, missingAuthority } from './support/authority.js';

const skip = missingAuthority();
let authority;
let client;
const subject = () => `node-user-${Math.random().toString(36).slice(2)}`;

before(async () => {
  if (skip) return;
  authority = await new Authority().start();
  client = new AuthorityClient(authority.target);
});
after(async () => {
  client?.close();
  await authority?.close();
});

test('sign-in, validation, replacement on a second device, refresh and logout', { skip }, async () => {
  const user = subject();
  const laptop = await client.issueToken(user, 'laptop', { audience: 'api', claims: { role: 'admin', level: 3, tags: ['a', { deep: null }] }, ttlMs: 60_000 });
  assert.ok(laptop.expiresAt instanceof Date && laptop.refreshExpiresAt instanceof Date);
  assert.ok(Math.abs(laptop.expiresAt.getTime() - Date.now() - 60_000) < 5_000);
  assert.deepEqual(laptop.replacedSessionIds, []);
  assert.ok(!inspect(laptop).includes(laptop.accessToken), 'tokens stay out of inspection output');

  const valid = await client.validateToken(laptop.accessToken, 'api');
  assert.equal(valid.valid, true);
  assert.equal(valid.claims.subject, user);
  assert.equal(valid.claims.deviceId, 'laptop');
  assert.equal(valid.claims.sessionId, laptop.sessionId);
  assert.deepEqual(valid.claims.extra, { role: 'admin', level: 3, tags: ['a', { deep: null }] });
  assert.ok(Number.isInteger(valid.claims.extra.level));
  assert.ok(valid.claims.expiresAt instanceof Date);

  assert.deepEqual(await client.validateToken(laptop.accessToken, 'billing'), { valid: false, reason: 'WRONG_AUDIENCE' });

  const phone = await client.issueToken(user, 'phone', { audience: 'api', deviceName: 'the phone' });
  assert.deepEqual(phone.replacedSessionIds, [laptop.sessionId]);
  const { revokedAt, ...revoked } = await client.validateToken(laptop.accessToken, 'api');
  assert.deepEqual(revoked, {
    valid: false, reason: 'REVOKED', revocationCause: 'REPLACED_BY_SIGN_IN',
    replacedByDeviceId: 'phone', replacedByDeviceName: 'the phone',
  });
  assert.ok(revokedAt instanceof Date && Math.abs(revokedAt.getTime() - Date.now()) < 60_000);
  const sessions = await client.listSessions(user);
  assert.deepEqual(sessions.map((s) => [s.deviceId, s.sessionId]), [['phone', phone.sessionId]]);
  assert.ok(sessions[0].createdAt instanceof Date);

  const refreshed = await client.refreshToken(phone.refreshToken);
  assert.equal(refreshed.sessionId, phone.sessionId);
  // The new pair is used, so the old refresh token presented again is reuse, not a retry
  // within the reuse grace period: the session is revoked.
  await client.refreshToken(refreshed.refreshToken);
  await assert.rejects(client.refreshToken(phone.refreshToken), (error) => error instanceof RefreshRejected && error.code === grpc.status.UNAUTHENTICATED);

  assert.equal(await client.revokeToken({ subject: user }), 0, 'the reused refresh token already ended the session');
  const tablet = await client.issueToken(user, 'tablet', { audience: 'api' });
  assert.equal(await client.revokeToken({ token: tablet.accessToken, reason: 'logout' }), 1);
  assert.equal(await client.revokeToken({ token: tablet.accessToken }), 0);
});

test('a REJECT sign-in while another device is signed in is SessionLimitReached', { skip }, async () => {
  const user = subject();
  await client.issueToken(user, 'laptop');
  await assert.rejects(client.issueToken(user, 'phone', { policy: 'REJECT' }),
    (error) => error instanceof SessionLimitReached && error.code === grpc.status.FAILED_PRECONDITION);
});

test('bad input is InvalidArgument naming the field, and nothing is signed in', { skip }, async () => {
  const user = subject();
  await assert.rejects(client.issueToken(user, ''), (error) => error instanceof InvalidArgument && /device_id/.test(error.details));
  await assert.rejects(client.issueToken(user, 'laptop', { claims: { sub: 'x' } }), (error) => error instanceof InvalidArgument && /claims/.test(error.details));
  assert.deepEqual(await client.listSessions(user), []);
  await assert.rejects(client.issueToken(user, 'laptop', { claims: { big: 2 ** 60 } }), /claims\.big/);
});

test('claims nested as deep as the authority takes pass; deeper, or a cycle, are a TypeError, not a stack overflow', { skip }, async () => {
  const nested = (levels) => {
    let value = {};
    for (let i = 1; i < levels; i++) value = { a: value };
    return value;
  };
  const user = subject();
  const deepest = await client.issueToken(user, 'laptop', { audience: 'api', claims: { deep: nested(32) } });
  assert.ok((await client.validateToken(deepest.accessToken, 'api')).valid);
  const cycle = {};
  cycle.self = cycle;
  for (const claims of [{ deep: nested(33) }, { deep: nested(100_000) }, { list: [nested(32)] }, cycle]) {
    await assert.rejects(client.issueToken(user, 'phone', { claims }),
      (error) => error instanceof TypeError && /claims must not nest more than 32 levels deep/.test(error.message));
  }
  assert.deepEqual((await client.listSessions(user)).map((session) => session.deviceId), ['laptop']);
});

test('the signing keys are a JWK Set', { skip }, async () => {
  const jwks = JSON.parse(await client.getSigningKeys());
  assert.ok(jwks.keys.length >= 1 && jwks.keys.every((key) => key.kid && key.alg));
});

test('the revocation stream sends the keys, the backlog, CAUGHT_UP and heartbeats', { skip }, async () => {
  const user = subject();
  const signedIn = await client.issueToken(user, 'laptop');
  await client.revokeToken({ token: signedIn.accessToken });
  const stream = client.watchRevocations(0n, { heartbeatIntervalMs: 100 });
  const kinds = [];
  let revoked = false;
  for await (const event of stream) {
    kinds.push(event.kind);
    if (event.kind === 'REVOCATION' && event.sessionId === signedIn.sessionId) revoked = typeof event.sequence === 'bigint';
    if (event.kind === 'HEARTBEAT') break;
  }
  assert.equal(kinds[0], 'SIGNING_KEYS');
  assert.ok(revoked);
  assert.ok(kinds.indexOf('CAUGHT_UP') > kinds.indexOf('REVOCATION'));
  const beyond = client.watchRevocations(10n ** 15n);
  await assert.rejects(async () => { for await (const _ of beyond); }, (error) => error.code === grpc.status.OUT_OF_RANGE);
});

test('a stopped authority is Unavailable, after the retries, within the deadline', { skip }, async () => {
  const nobody = new AuthorityClient('127.0.0.1:1', { timeoutMs: 500 });
  const started = Date.now();
  await assert.rejects(nobody.validateToken('x.y.z'), (error) => error instanceof Unavailable || error.code === grpc.status.DEADLINE_EXCEEDED);
  assert.ok(Date.now() - started < 5000, 'the deadline bounds the retries');
  nobody.close();
});

test('an API key metadata cannot carry is refused, never quoted', () => {
  // grpc-js's own refusal quotes the value; a newline from a file is enough.
  for (const apiKey of ['tak_s3cret\n', ' tak_s3cret', 'tak_s3cr\u00e9t', 'tak\u0000s3cret']) {
    assert.throws(() => new AuthorityClient('127.0.0.1:1', { apiKey }), (error) => error instanceof TypeError
      && error.message.startsWith('apiKey must be printable ASCII') && !error.message.includes('s3c'));
  }
  new AuthorityClient('127.0.0.1:1', { apiKey: 'tak_s3cret' }).close();
});
