// What close() leaves behind: nothing running and nothing rejected unhandled when it
// comes before start has settled, and Unavailable, the package's own error, for every
// call after it.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { after, before, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';
import express from 'express';

import { AuthorityClient, Unavailable, Validator, authInterceptor, requireToken } from '../src/index.js';
import { Authority, missingAuthority, quietLog, until } from './support/authority.js';

const skip = missingAuthority();
let authority;
before(async () => {
  if (!skip) authority = await new Authority().start();
});
after(async () => { await authority?.close(); });

/** A loopback address nothing listens on. */
async function deadTarget() {
  // Port 1: nothing listens there, and no other test's server can be given it (a port
  // bound and released here could be).
  return '127.0.0.1:1';
}

/** Runs support/close-early.js against `target` in a child process: its exit code and output. */
function closeEarly(target) {
  const script = new URL('./support/close-early.js', import.meta.url).pathname;
  return new Promise((resolve) => {
    execFile(process.execPath, [script, target], { timeout: 20_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? error.code ?? error.signal : 0, stdout, stderr });
    });
  });
}

const assertClosed = async (promise, message, name) => {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof Unavailable, `${name}: ${error?.constructor?.name} ${error?.message}`);
    assert.equal(error.code, grpc.status.UNAVAILABLE, name);
    assert.equal(error.message, message, name);
    return true;
  });
};

// A regression test: close() while start() was fetching the keys let start() go on to open
// the revocation stream on the closed channel, and grpc-js's throw became an unhandled
// rejection that ended the process (Node 20).
for (const [name, targetOf] of [
  ['an authority that does not answer', deadTarget],
  ['a real authority', async () => authority.target],
]) {
  test(`closed before start settles, against ${name}: no crash, nothing left running`, {
    skip: name === 'a real authority' && skip,
  }, async () => {
    const { code, stdout, stderr } = await closeEarly(await targetOf());
    assert.equal(code, 0, stderr);
    assert.deepEqual(JSON.parse(stdout), { validator: 'resolved', middleware: 'resolved', interceptor: 'resolved' });
  });
}

test('every call of a closed client rejects with Unavailable', async () => {
  const client = new AuthorityClient(await deadTarget());
  client.close();
  client.close(); // twice is once
  const message = 'the authority client is closed';
  await assertClosed(client.issueToken('alice', 'laptop'), message, 'issueToken');
  await assertClosed(client.validateToken('a.b.c', 'api'), message, 'validateToken');
  await assertClosed(client.revokeToken({ subject: 'alice' }), message, 'revokeToken');
  await assertClosed(client.refreshToken('r'), message, 'refreshToken');
  await assertClosed(client.listSessions('alice'), message, 'listSessions');
  await assertClosed(client.getSigningKeys(), message, 'getSigningKeys');
  const stream = client.watchRevocations();
  await assertClosed((async () => { for await (const event of stream) assert.fail(`an event: ${event.kind}`); })(),
    message, 'watchRevocations');
  stream.cancel();
});

test('every call of a closed validator rejects with Unavailable, in both modes', async () => {
  const target = await deadTarget();
  for (const mode of ['remote', 'local']) {
    const validator = new Validator({ target, mode, log: quietLog() });
    await validator.close();
    const message = 'the validator is closed';
    await assertClosed(validator.start(), message, `${mode} start`);
    await assertClosed(validator.validate('a.b.c', 'api'), message, `${mode} validate`);
    await assertClosed(validator.waitUntilFresh(5000), message, `${mode} waitUntilFresh`);
  }
});

test('a validator stops following the stream when the client it was given is closed', async () => {
  const client = new AuthorityClient(await deadTarget(), { timeoutMs: 200 });
  const validator = new Validator({ client, mode: 'local', log: quietLog(), follow: { minBackoffMs: 10, maxBackoffMs: 50 } });
  await validator.start();
  assert.equal(validator.follower.running, true);
  client.close();
  // Reconnecting forever on the closed client would keep its timers, and the process, alive.
  assert.ok(await until(() => !validator.follower.running, 5000), 'still following a closed client');
  await validator.close();
});

test('closing a client ends its open revocation streams: a validator given it stops following', { skip }, async () => {
  const client = new AuthorityClient(authority.target);
  const validator = new Validator({ client, mode: 'local', log: quietLog(), follow: { heartbeatIntervalMs: 100 } });
  await validator.start();
  assert.ok(await validator.waitUntilFresh(10_000));
  const stream = client.watchRevocations();
  const reading = (async () => { for await (const event of stream) assert.ok(event.kind); })();
  client.close();
  // A healthy stream never ends of itself: left open, it would keep following, and the process alive.
  await assertClosed(reading, 'the authority client is closed', 'a stream open at close()');
  assert.ok(await until(() => !validator.follower.running, 5000), 'still following a closed client');
  assert.equal(client.streams.size, 0);
  await validator.close();
});

test('a closed middleware answers 503 and a closed interceptor UNAVAILABLE, not a 500 or INTERNAL', async () => {
  const target = await deadTarget();
  const middleware = requireToken({ target, audience: 'api', log: quietLog() });
  await middleware.ready;
  await middleware.close();
  const app = express();
  app.get('/me', middleware, (req, res) => res.json({}));
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const url = `http://127.0.0.1:${server.address().port}/me`;
    const response = await fetch(url, { headers: { authorization: 'Bearer a.b.c' } });
    assert.equal(response.status, 503, await response.text());
  } finally {
    server.close();
  }

  const interceptor = authInterceptor({ target, audience: 'api', log: quietLog() });
  await interceptor.ready;
  await interceptor.close();
  const json = {
    serialize: (value) => Buffer.from(JSON.stringify(value)), deserialize: (bytes) => JSON.parse(bytes.toString()),
  };
  const GREETER = { Greet: { path: '/demo.Greeter/Greet', requestStream: false, responseStream: false,
    requestSerialize: json.serialize, requestDeserialize: json.deserialize,
    responseSerialize: json.serialize, responseDeserialize: json.deserialize } };
  const grpcServer = new grpc.Server({ interceptors: [interceptor] });
  grpcServer.addService(GREETER, { Greet: (call, callback) => callback(null, {}) });
  const port = await new Promise((resolve, reject) => {
    const bound = (error, boundPort) => (error ? reject(error) : resolve(boundPort));
    grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), bound);
  });
  const Greeter = grpc.makeGenericClientConstructor(GREETER, 'Greeter');
  const stub = new Greeter(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    const metadata = new grpc.Metadata();
    metadata.set('authorization', 'Bearer a.b.c');
    const error = await new Promise((resolve) => {
      stub.Greet({}, metadata, { deadline: Date.now() + 5000 }, (failure) => resolve(failure));
    });
    assert.equal(error?.code, grpc.status.UNAVAILABLE, error?.details);
  } finally {
    stub.close();
    grpcServer.forceShutdown();
  }
});
