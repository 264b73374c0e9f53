// The grpc-js server interceptor on a real grpc-js server, in both modes, against a real
// `authority serve`: refused calls end UNAUTHENTICATED before the handler runs, with the
// reason in x-token-invalid-reason; the handler reads the claims; public methods pass.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { AuthorityClient, MISSING_TEXT, REASON_TEXTS, Validator, authInterceptor, claimsOf, requireToken } from '../src/index.js';
import { Authority, missingAuthority, quietLog } from './support/authority.js';

const skip = missingAuthority();
let authority;
let client;
before(async () => {
  if (skip) return;
  authority = await new Authority().start();
  client = new AuthorityClient(authority.target);
});
after(async () => {
  client?.close();
  await authority?.close();
});

// A tiny service defined in code, so the test needs no .proto of its own.
const json = { serialize: (value) => Buffer.from(JSON.stringify(value)), deserialize: (bytes) => JSON.parse(bytes.toString()) };
const method = (path) => ({ path, requestStream: false, responseStream: false,
  requestSerialize: json.serialize, requestDeserialize: json.deserialize,
  responseSerialize: json.serialize, responseDeserialize: json.deserialize });
const GREETER = { Greet: method('/demo.Greeter/Greet'), Ping: method('/demo.Greeter/Ping') };

async function serve(mode, options = {}) {
  const interceptor = authInterceptor({
    target: authority.target, mode, audience: 'api', publicMethods: ['/demo.Greeter/Ping'], log: quietLog(), ...options,
  });
  await interceptor.ready;
  if (mode === 'local') assert.ok(await interceptor.validator.waitUntilFresh(10_000));
  const server = new grpc.Server({ interceptors: [interceptor] });
  const handled = [];
  server.addService(GREETER, {
    Greet: (call, callback) => { handled.push('Greet'); callback(null, { hello: claimsOf(call).subject }); },
    Ping: (call, callback) => { handled.push('Ping'); callback(null, { pong: claimsOf(call) === undefined }); },
  });
  const port = await new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))));
  const Greeter = grpc.makeGenericClientConstructor(GREETER, 'Greeter');
  const stub = new Greeter(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const call = (name, token) => new Promise((resolve) => {
    const metadata = new grpc.Metadata();
    if (token !== undefined) metadata.set('authorization', `Bearer ${token}`);
    const status = {};
    const grpcCall = stub[name]({}, metadata, { deadline: Date.now() + 5000 }, (error, response) => resolve({ error, response, status }));
    grpcCall.on('status', (s) => Object.assign(status, s));
  });
  return { call, handled, close: async () => { stub.close(); server.forceShutdown(); await interceptor.close(); } };
}

for (const mode of ['remote', 'local']) {
  describe(`authInterceptor in ${mode} mode`, { skip }, () => {
    let greeter;
    before(async () => { greeter = await serve(mode); });
    after(async () => { await greeter?.close(); });

    test('a valid token reaches the handler, which reads the claims', async () => {
      const user = `node-grpc-${mode}`;
      const signedIn = await client.issueToken(user, 'laptop', { audience: 'api' });
      const { error, response } = await greeter.call('Greet', signedIn.accessToken);
      assert.equal(error, null);
      assert.deepEqual(response, { hello: user });
    });

    test('a missing or bad token is UNAUTHENTICATED before the handler, with the reason in the trailers', async () => {
      const revoked = await client.issueToken(`node-grpc-revoked-${mode}`, 'laptop', { audience: 'api' });
      await client.revokeToken({ token: revoked.accessToken });
      const elsewhere = await client.issueToken(`node-grpc-else-${mode}`, 'laptop', { audience: 'billing' });
      const before = greeter.handled.length;
      for (const [token, reason] of [[undefined, 'MISSING'], ['nonsense', 'MALFORMED'], [elsewhere.accessToken, 'WRONG_AUDIENCE']]) {
        const { error } = await greeter.call('Greet', token);
        assert.equal(error.code, grpc.status.UNAUTHENTICATED);
        assert.equal(error.details, reason === 'MISSING' ? MISSING_TEXT : REASON_TEXTS[reason]);
        assert.ok(token === undefined || !error.details.includes(token));
        assert.deepEqual(error.metadata.get('x-token-invalid-reason'), [reason]);
      }
      // Local mode sees the revocation within its staleness bound: calls let in until then are counted.
      let last;
      let letIn = 0;
      const deadline = Date.now() + 2000;
      for (;;) {
        last = await greeter.call('Greet', revoked.accessToken);
        if (last.error !== null || Date.now() > deadline) break;
        letIn++;
      }
      assert.deepEqual(last.error?.metadata.get('x-token-invalid-reason'), ['REVOKED']);
      // The cause, in both modes: its short name in the trailers, its text in the details.
      assert.deepEqual(last.error.metadata.get('x-token-revocation-cause'), ['LOGGED_OUT']);
      assert.equal(last.error.details, 'revoked: logged out');
      assert.equal(greeter.handled.length, before + letIn, 'no refused call reached a handler');
    });

    test('audiences sets a method\'s audience: a token for another is WRONG_AUDIENCE', async () => {
      const billing = await serve(mode, { audiences: { '/demo.Greeter/Greet': 'billing' } });
      try {
        const forBilling = await client.issueToken(`node-grpc-billing-${mode}`, 'laptop', { audience: 'billing' });
        const forApi = await client.issueToken(`node-grpc-api-${mode}`, 'laptop', { audience: 'api' });
        assert.equal((await billing.call('Greet', forBilling.accessToken)).error, null);
        const { error } = await billing.call('Greet', forApi.accessToken);
        assert.equal(error.code, grpc.status.UNAUTHENTICATED);
        assert.deepEqual(error.metadata.get('x-token-invalid-reason'), ['WRONG_AUDIENCE']);
      } finally {
        await billing.close();
      }
    });

    test('public methods answer without a token', async () => {
      const { error, response } = await greeter.call('Ping');
      assert.equal(error, null);
      assert.deepEqual(response, { pong: true });
    });
  });
}

test('an empty or non-string audience is refused at construction, naming the option', async () => {
  // ValidateToken reads '' as the authority's default audience (remote mode accepted its
  // tokens) and local mode as no token's: neither checks the audience that was meant.
  const target = '127.0.0.1:1';
  for (const audiences of [{ 'demo.Greeter': '' }, { '/demo.Greeter/Greet': '' }, { 'demo.Greeter': 7 }, { 'demo.Greeter': null }]) {
    const [name] = Object.keys(audiences);
    assert.throws(() => authInterceptor({ target, audience: 'api', audiences }),
      (error) => error instanceof TypeError && error.message === `authInterceptor: audiences["${name}"] needs an audience`);
  }
  for (const audiences of [null, 'api', ['api']]) {
    assert.throws(() => authInterceptor({ target, audience: 'api', audiences }), /^TypeError: authInterceptor: audiences maps/);
  }
  for (const audience of ['', undefined, 7]) {
    assert.throws(() => authInterceptor({ target, audience }), /^TypeError: authInterceptor needs an audience$/);
    assert.throws(() => requireToken({ target, audience }), /^TypeError: requireToken needs an audience$/);
  }
  // A Validator used directly is held to it too, in both modes, before any call is made.
  for (const mode of ['remote', 'local']) {
    const validator = new Validator({ target, mode, log: quietLog() });
    for (const audience of ['', undefined]) {
      await assert.rejects(validator.validate('a.token.here', audience), /^TypeError: validate needs an audience$/);
    }
    await validator.close();
  }
});
