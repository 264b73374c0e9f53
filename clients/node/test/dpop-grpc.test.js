// The grpc-js server interceptor and device-bound tokens (RFC 9449) on a real grpc-js
// server, in both modes, against a real `authority serve` that binds sessions: the token
// as `authorization: DPoP <token>` with the proof in exactly one `dpop` metadata value,
// htm POST and htu https://<call.getHost()>/<package.Service>/<Method> (or the configured
// externalAuthority). Refused calls end UNAUTHENTICATED before the handler runs, with
// PROOF_REQUIRED or BAD_PROOF in x-token-invalid-reason.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { AuthorityClient, REASON_TEXTS, authInterceptor, claimsOf } from '../src/index.js';
import { Authority, missingAuthority, quietLog } from './support/authority.js';
import { Device, signInBound } from './support/dpop.js';

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

const json = { serialize: (value) => Buffer.from(JSON.stringify(value)), deserialize: (bytes) => JSON.parse(bytes.toString()) };
const method = (path) => ({ path, requestStream: false, responseStream: false,
  requestSerialize: json.serialize, requestDeserialize: json.deserialize,
  responseSerialize: json.serialize, responseDeserialize: json.deserialize });
const GREETER = { Greet: method('/demo.Greeter/Greet'), Wave: method('/demo.Greeter/Wave') };

async function serve(mode, options = {}) {
  const interceptor = authInterceptor({ target: authority.target, mode, audience: 'api', log: quietLog(), ...options });
  await interceptor.ready;
  if (mode === 'local') assert.ok(await interceptor.validator.waitUntilFresh(10_000));
  const server = new grpc.Server({ interceptors: [interceptor] });
  const handled = [];
  const handler = (name) => (call, callback) => { handled.push(name); callback(null, { key: claimsOf(call).keyThumbprint }); };
  server.addService(GREETER, { Greet: handler('Greet'), Wave: handler('Wave') });
  const port = await new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))));
  const target = `127.0.0.1:${port}`;
  const Greeter = grpc.makeGenericClientConstructor(GREETER, 'Greeter');
  const stub = new Greeter(target, grpc.credentials.createInsecure());
  /** A call with `authorization` and each of `proofs` as a dpop metadata value. */
  const call = (name, authorization, proofs = []) => new Promise((resolve) => {
    const metadata = new grpc.Metadata();
    if (authorization !== undefined) metadata.set('authorization', authorization);
    for (const proof of proofs) metadata.add('dpop', proof);
    stub[name]({}, metadata, { deadline: Date.now() + 5000 }, (error, response) => resolve({ error, response }));
  });
  return { call, handled, htu: (path) => `https://${target}${path}`, close: async () => { stub.close(); server.forceShutdown(); await interceptor.close(); } };
}

function assertRefused({ error }, reason, secrets = []) {
  assert.ok(error, 'the call was let in');
  assert.equal(error.code, grpc.status.UNAUTHENTICATED);
  assert.equal(error.details, REASON_TEXTS[reason]);
  assert.deepEqual(error.metadata.get('x-token-invalid-reason'), [reason]);
  for (const secret of secrets) assert.ok(!error.details.includes(secret));
}

for (const mode of ['remote', 'local']) {
  describe(`authInterceptor with device-bound tokens in ${mode} mode`, { skip }, () => {
    let greeter;
    let device;
    let token;
    before(async () => {
      greeter = await serve(mode);
      device = await Device.generate();
      token = (await signInBound(client, `node-dpop-grpc-${mode}-${Date.now()}`, 'laptop', device, { audience: 'api' })).accessToken;
    });
    after(async () => { await greeter?.close(); });
    const proof = (path = '/demo.Greeter/Greet', options = {}) => device.proof('POST', greeter.htu(path), { accessToken: token, ...options });

    test('DPoP with one fresh proof for POST https://<host>/<service>/<method> reaches the handler', async () => {
      const { error, response } = await greeter.call('Greet', `DPoP ${token}`, [await proof()]);
      assert.equal(error, null);
      assert.deepEqual(response, { key: device.thumbprint });
    });

    test('refused before the handler: Bearer, no proof, two proofs, and each bad proof', async () => {
      const before = greeter.handled.length;
      const good = [await proof(), await proof()];
      assertRefused(await greeter.call('Greet', `Bearer ${token}`, [good[0]]), 'PROOF_REQUIRED', [token]);
      assertRefused(await greeter.call('Greet', `DPoP ${token}`), 'PROOF_REQUIRED', [token]);
      assertRefused(await greeter.call('Greet', `DPoP ${token}`, good), 'BAD_PROOF', [token, ...good]);
      const thief = await Device.generate('ES256');
      const bad = {
        'a malformed proof': 'x.y.z',
        'another method (htu)': await proof('/demo.Greeter/Wave'),
        'another host (htu)': await device.proof('POST', 'https://elsewhere.example.com/demo.Greeter/Greet', { accessToken: token }),
        'htm GET': await device.proof('GET', greeter.htu('/demo.Greeter/Greet'), { accessToken: token }),
        'a stale iat': await proof(undefined, { iat: Math.floor(Date.now() / 1000) - 600 }),
        'an ath mismatch': await proof(undefined, { accessToken: `${token}x` }),
        'another key': await thief.proof('POST', greeter.htu('/demo.Greeter/Greet'), { accessToken: token }),
      };
      for (const [name, value] of Object.entries(bad)) {
        const outcome = await greeter.call('Greet', `DPoP ${token}`, [value]);
        assert.ok(outcome.error, name);
        assertRefused(outcome, 'BAD_PROOF', [token, value]);
      }
      // A replay of a proof that was accepted once.
      const once = await proof();
      assert.equal((await greeter.call('Greet', `DPoP ${token}`, [once])).error, null);
      assertRefused(await greeter.call('Greet', `DPoP ${token}`, [once]), 'BAD_PROOF');
      assert.equal(greeter.handled.length, before + 1, 'no refused call reached a handler');
    });
  });
}

test('externalAuthority names the authority clients address, for htu', { skip }, async () => {
  const greeter = await serve('local', { externalAuthority: 'greeter.example.com' });
  try {
    const device = await Device.generate('ES256');
    const { accessToken: token } = await signInBound(client, `node-dpop-grpc-ext-${Date.now()}`, 'laptop', device, { audience: 'api' });
    const external = await device.proof('POST', 'https://greeter.example.com/demo.Greeter/Greet', { accessToken: token });
    assert.equal((await greeter.call('Greet', `DPoP ${token}`, [external])).error, null);
    const direct = await device.proof('POST', greeter.htu('/demo.Greeter/Greet'), { accessToken: token });
    assertRefused(await greeter.call('Greet', `DPoP ${token}`, [direct]), 'BAD_PROOF');
  } finally {
    await greeter.close();
  }
});
