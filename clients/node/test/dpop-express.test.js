// requireToken and device-bound tokens (RFC 9449) through real HTTP requests to a real
// Express app, in both modes, against a real `authority serve` that binds sessions to the
// key of a sign-in's proof: `Authorization: DPoP` with exactly one DPoP header, checked
// against the request's method and URL; each bad proof refused with the DPoP challenge;
// a stolen token (and refresh token) useless with another key while the device goes on.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';

import express from 'express';
import { SignJWT } from 'jose';

import { AuthorityClient, MAX_PROOF_BYTES, REASON_TEXTS, RefreshRejected, requireToken } from '../src/index.js';
import { Authority, missingAuthority, quietLog } from './support/authority.js';
import { Device, REFRESH_URI, signInBound, unsigned } from './support/dpop.js';

const skip = missingAuthority();
const DPOP_ALGS = 'DPoP algs="EdDSA ES256 RS256"';
// The request problems' texts as the Python package's reasons.py has them, from the shared corpus.
const REQUEST_TEXTS = JSON.parse(readFileSync(new URL('../../../tests/vectors/tokens.json', import.meta.url), 'utf8')).request_problems;
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

async function serve(mode, options = {}) {
  const auth = requireToken({
    target: authority.target, mode, audience: 'api', log: quietLog(), follow: { heartbeatIntervalMs: 100 }, ...options,
  });
  await auth.ready;
  if (mode === 'local') assert.ok(await auth.validator.waitUntilFresh(10_000));
  const app = express();
  app.all('/me', auth, (req, res) => res.json({ subject: req.auth.subject, keyThumbprint: req.auth.keyThumbprint }));
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const origin = `http://127.0.0.1:${server.address().port}`;
  return { origin, url: `${origin}/me`, close: async () => { server.close(); await auth.close(); } };
}

/** One request with exactly the headers given (an array value: one header line each). */
function send(url, { method = 'GET', path, headers = {} } = {}) {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: target.hostname, port: target.port, path: path ?? target.pathname, method, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => resolve({ status: res.statusCode, challenge: res.headers['www-authenticate'], body, json: () => JSON.parse(body) }));
    });
    req.on('error', reject);
    req.end();
  });
}

const dpop = (token, proof) => ({ authorization: `DPoP ${token}`, ...(proof === undefined ? {} : { dpop: proof }) });

function assertRefused(response, reason, secrets = []) {
  assert.equal(response.status, 401, response.body);
  const error = reason === 'BAD_PROOF' ? 'invalid_dpop_proof' : 'invalid_token';
  assert.equal(response.challenge, `${DPOP_ALGS}, error="${error}", error_description="${REASON_TEXTS[reason]}"`);
  assert.deepEqual(response.json(), { error, error_description: REASON_TEXTS[reason] });
  for (const secret of secrets) assert.ok(!response.body.includes(secret) && !response.challenge.includes(secret));
}

/** 400 invalid_request for `problem` (RFC 6750 §3.1), with the challenge of `scheme` as the
 * Python middlewares give it, and none of `secrets` in the answer. */
function assertInvalidRequest(response, problem, scheme, secrets = [], name = problem) {
  const text = REQUEST_TEXTS[problem];
  const parameters = `error="invalid_request", error_description="${text}"`;
  assert.equal(response.status, 400, `${name}: ${response.body}`);
  assert.equal(response.challenge, scheme === 'DPoP' ? `${DPOP_ALGS}, ${parameters}` : `Bearer realm="token-authority", ${parameters}`, name);
  assert.deepEqual(response.json(), { error: 'invalid_request', error_description: text }, name);
  for (const secret of secrets) assert.ok(!response.body.includes(secret) && !response.challenge.includes(secret), name);
}

for (const mode of ['remote', 'local']) {
  describe(`requireToken with device-bound tokens in ${mode} mode`, { skip }, () => {
    let app;
    let device;
    let signedIn;
    before(async () => {
      app = await serve(mode);
      device = await Device.generate();
      signedIn = await signInBound(client, `node-dpop-express-${mode}-${Date.now()}`, 'laptop', device, { audience: 'api' });
    });
    after(async () => { await app?.close(); });

    test('a bound token with a fresh proof of its key reaches the handler, with the key in req.auth', async () => {
      const token = signedIn.accessToken;
      for (const method of ['GET', 'POST']) {
        const response = await send(app.url, { method, headers: dpop(token, await device.proof(method, app.url, { accessToken: token })) });
        assert.equal(response.status, 200, response.body);
        assert.equal(response.json().keyThumbprint, device.thumbprint);
      }
      // The query is not part of htu: a proof for /me is good for /me?page=2.
      const response = await send(app.url, { path: '/me?page=2', headers: dpop(token, await device.proof('GET', app.url, { accessToken: token })) });
      assert.equal(response.status, 200, response.body);
    });

    test('a bound token sent as Bearer, or as DPoP without a proof, is PROOF_REQUIRED with the DPoP challenge', async () => {
      const token = signedIn.accessToken;
      assertRefused(await send(app.url, { headers: { authorization: `Bearer ${token}` } }), 'PROOF_REQUIRED', [token]);
      // A DPoP header does not rescue a Bearer token: the scheme is the promise.
      const proof = await device.proof('GET', app.url, { accessToken: token });
      assertRefused(await send(app.url, { headers: { authorization: `Bearer ${token}`, dpop: proof } }), 'PROOF_REQUIRED', [token, proof]);
      assertRefused(await send(app.url, { headers: dpop(token) }), 'PROOF_REQUIRED', [token]);
    });

    test('two DPoP headers are BAD_PROOF, even when both are good proofs', async () => {
      const token = signedIn.accessToken;
      const proofs = [await device.proof('GET', app.url, { accessToken: token }), await device.proof('GET', app.url, { accessToken: token })];
      assertRefused(await send(app.url, { headers: dpop(token, proofs) }), 'BAD_PROOF', [token, ...proofs]);
      // Joined into one by a proxy: a compact JWS holds no comma.
      assertRefused(await send(app.url, { headers: dpop(token, proofs.join(', ')) }), 'BAD_PROOF', [token]);
      // Neither was spent: one of them alone still lets the request in.
      assert.equal((await send(app.url, { headers: dpop(token, proofs[0]) })).status, 200);
    });

    test('two Authorization headers: 400 SEVERAL_HEADERS with the Bearer challenge, even with one good proof', async () => {
      const token = signedIn.accessToken;
      const proof = await device.proof('GET', app.url, { accessToken: token });
      assertInvalidRequest(await send(app.url, { headers: { authorization: [`DPoP ${token}`, `DPoP ${token}`], dpop: proof } }),
        'SEVERAL_HEADERS', 'Bearer', [token, proof]);
      // Joined into one by a proxy.
      assertInvalidRequest(await send(app.url, { headers: { authorization: `DPoP ${token}, Bearer ${token}`, dpop: proof } }),
        'SEVERAL_HEADERS', 'Bearer', [token, proof], 'joined');
      // The proof was not spent on them: alone with its token, it lets the request in.
      assert.equal((await send(app.url, { headers: dpop(token, proof) })).status, 200);
    });

    test('DPoP with no token: 400 EMPTY_TOKEN with the DPoP challenge', async () => {
      const proof = await device.proof('GET', app.url, { accessToken: signedIn.accessToken });
      for (const value of ['DPoP', 'dpop', 'dPoP   ']) {
        assertInvalidRequest(await send(app.url, { headers: { authorization: value, dpop: proof } }), 'EMPTY_TOKEN', 'DPoP', [proof], value);
        assertInvalidRequest(await send(app.url, { headers: { authorization: value } }), 'EMPTY_TOKEN', 'DPoP', [], `${value} without a proof`);
      }
    });

    test('DPoP with anything but a token68: 400 MALFORMED_HEADER with the DPoP challenge, its proof not spent', async () => {
      const token = signedIn.accessToken;
      const proof = await device.proof('GET', app.url, { accessToken: token });
      const malformed = {
        'two words': `DPoP ${token} ${token}`,
        'a quote in the token': `DPoP "${token}"`,
        'a byte that is not ASCII': `DPoP ${token}\xf6`,
        'in lower case': `dpop ${token} x`,
      };
      for (const [name, value] of Object.entries(malformed)) {
        assertInvalidRequest(await send(app.url, { headers: { authorization: value, dpop: proof } }), 'MALFORMED_HEADER', 'DPoP', [token, proof], name);
      }
      // A comma (no token68 holds one), or a tab for the space, is refused before any scheme
      // is read: the challenge is Bearer's, as in the Python package.
      for (const value of [`DPoP ${token},x`, `DPoP\t${token}`]) {
        assertInvalidRequest(await send(app.url, { headers: { authorization: value, dpop: proof } }), 'MALFORMED_HEADER', 'Bearer', [token, proof], value.slice(0, 5));
      }
      // Without its proof, a malformed DPoP header is still malformed, not PROOF_REQUIRED.
      assertInvalidRequest(await send(app.url, { headers: { authorization: `DPoP ${token} x` } }), 'MALFORMED_HEADER', 'DPoP', [token]);
      // The proof was not spent: alone with its token, in any case of the scheme, it lets the request in.
      assert.equal((await send(app.url, { headers: { authorization: `dpop ${token}`, dpop: proof } })).status, 200);
    });

    test('a DPoP header over 8192 bytes: 400 OVERSIZED with the Bearer challenge', async () => {
      const token = signedIn.accessToken;
      const proof = await device.proof('GET', app.url, { accessToken: token });
      const value = `DPoP ${token}${'A'.repeat(8193 - 'DPoP '.length - token.length)}`;
      assertInvalidRequest(await send(app.url, { headers: { authorization: value, dpop: proof } }), 'OVERSIZED', 'Bearer', [token, proof]);
      assert.equal((await send(app.url, { headers: dpop(token, proof) })).status, 200);
    });

    test('access_token in the query string: 400 TOKEN_IN_QUERY with the Bearer challenge, even with a good proof', async () => {
      const token = signedIn.accessToken;
      const proof = await device.proof('GET', app.url, { accessToken: token });
      assertInvalidRequest(await send(app.url, { path: `/me?access_token=${token}`, headers: dpop(token, proof) }), 'TOKEN_IN_QUERY', 'Bearer', [token, proof]);
      assertInvalidRequest(await send(app.url, { path: '/me?page=2&access_token', headers: dpop(token, proof) }), 'TOKEN_IN_QUERY', 'Bearer', [token, proof]);
      // The proof was not spent (the query is not part of htu).
      assert.equal((await send(app.url, { path: '/me?page=2', headers: dpop(token, proof) })).status, 200);
    });

    test('a Host header cannot point a proof at another path', async () => {
      // "Host: 127.0.0.1:port/other?" would make the request's URL /other's, /me its query.
      const token = signedIn.accessToken;
      const { host } = new URL(app.origin);
      for (const ending of ['?', '#']) {
        const proof = await device.proof('GET', `${app.origin}/other`, { accessToken: token });
        assertRefused(await send(app.url, { headers: { ...dpop(token, proof), host: `${host}/other${ending}` } }), 'BAD_PROOF', [token, proof]);
      }
    });

    test('every bad proof is BAD_PROOF (invalid_dpop_proof), never quoting the proof or the token', async () => {
      const token = signedIn.accessToken;
      const url = app.url;
      const iat = Math.floor(Date.now() / 1000);
      const jwk = device.jwk;
      const thief = await Device.generate('ES256');
      const bad = {
        'a malformed proof': 'not.a-proof',
        'a wrong typ': await device.proof('GET', url, { accessToken: token, header: { typ: 'JWT' } }),
        'alg none': unsigned({ typ: 'dpop+jwt', alg: 'none', jwk }, { jti: 'n', htm: 'GET', htu: url, iat, ath: '' }),
        'alg HS256': await new SignJWT({ jti: 'h', htm: 'GET', htu: url, iat }).setProtectedHeader({ typ: 'dpop+jwt', alg: 'HS256', jwk }).sign(Buffer.alloc(32, 1)),
        'a jwk with the private member d': await device.proof('GET', url, { accessToken: token, header: { jwk: { ...jwk, d: jwk.x } } }),
        'a wrong htm': await device.proof('PUT', url, { accessToken: token }),
        'a wrong htu': await device.proof('GET', `${app.origin}/other`, { accessToken: token }),
        'an htu on another host': await device.proof('GET', url.replace('127.0.0.1', 'localhost'), { accessToken: token }),
        'a stale iat': await device.proof('GET', url, { accessToken: token, iat: iat - 600 }),
        'a future iat': await device.proof('GET', url, { accessToken: token, iat: iat + 600 }),
        'an ath mismatch': await device.proof('GET', url, { accessToken: `${token}x` }),
        'no ath': await device.proof('GET', url),
        'a proof by another key': await thief.proof('GET', url, { accessToken: token }),
        'a proof over 8 KiB': await device.proof('GET', url, { accessToken: token, claims: { pad: 'p'.repeat(MAX_PROOF_BYTES) } }),
      };
      for (const [name, proof] of Object.entries(bad)) {
        const response = await send(url, { headers: dpop(token, proof) });
        assert.equal(response.status, 401, name);
        assertRefused(response, 'BAD_PROOF', [token, proof]);
      }
      // A replayed jti: the same good proof twice.
      const proof = await device.proof('GET', url, { accessToken: token });
      assert.equal((await send(url, { headers: dpop(token, proof) })).status, 200);
      assertRefused(await send(url, { headers: dpop(token, proof) }), 'BAD_PROOF', [token, proof]);
    });

    test('an unbound token with a proof is BAD_PROOF; as Bearer it keeps the Bearer challenge', async () => {
      const bearer = await client.issueToken(`node-dpop-express-bearer-${mode}-${Date.now()}`, 'laptop', { audience: 'api' });
      assert.equal(bearer.tokenType, 'Bearer');
      const token = bearer.accessToken;
      assertRefused(await send(app.url, { headers: dpop(token, await device.proof('GET', app.url, { accessToken: token })) }), 'BAD_PROOF', [token]);
      assert.equal((await send(app.url, { headers: { authorization: `Bearer ${token}` } })).status, 200);
      const wrong = await send(app.url, { headers: { authorization: `Bearer ${token}x` } });
      assert.match(wrong.challenge, /^Bearer realm="token-authority", error="invalid_token"/);
    });

    test('a stolen token and refresh token are useless with another key, and the device goes on working', async () => {
      const user = `node-dpop-stolen-${mode}-${Date.now()}`;
      const phone = await Device.generate('ES256');
      const attacker = await Device.generate();
      const stolen = await signInBound(client, user, 'phone', phone, { audience: 'api' });
      const token = stolen.accessToken;
      // The attacker presents the copied tokens with proofs of its own key, every way it can.
      assertRefused(await send(app.url, { headers: dpop(token, await attacker.proof('GET', app.url, { accessToken: token })) }), 'BAD_PROOF');
      assertRefused(await send(app.url, { headers: { authorization: `Bearer ${token}` } }), 'PROOF_REQUIRED');
      await assert.rejects(client.refreshToken(stolen.refreshToken, { proof: await attacker.proofFor('POST', REFRESH_URI) }), RefreshRejected);
      await assert.rejects(client.refreshToken(stolen.refreshToken), RefreshRejected);
      // The phone is not signed out by any of it: its token works, and so does its refresh.
      const ok = await send(app.url, { headers: dpop(token, await phone.proof('GET', app.url, { accessToken: token })) });
      assert.equal(ok.status, 200);
      const renewed = await client.refreshToken(stolen.refreshToken, { proof: await phone.proofFor('POST', REFRESH_URI) });
      assert.equal(renewed.tokenType, 'DPoP');
      const next = renewed.accessToken;
      assert.equal((await send(app.url, { headers: dpop(next, await phone.proof('GET', app.url, { accessToken: next })) })).status, 200);
      assertRefused(await send(app.url, { headers: dpop(next, await attacker.proof('GET', app.url, { accessToken: next })) }), 'BAD_PROOF');
    });
  });
}

test('behind a prefix-stripping proxy, externalOrigin carries the prefix clients address', { skip }, async () => {
  const app = await serve('remote', { externalOrigin: 'https://example.com/shop/' });
  try {
    const device = await Device.generate();
    const { accessToken: token } = await signInBound(client, `node-dpop-prefix-${Date.now()}`, 'laptop', device, { audience: 'api' });
    const proof = (uri) => device.proof('GET', uri, { accessToken: token });
    const outside = await send(app.url, { headers: dpop(token, await proof('https://example.com/shop/me')) });
    assert.equal(outside.status, 200, outside.body);
    assertRefused(await send(app.url, { headers: dpop(token, await proof('https://example.com/me')) }), 'BAD_PROOF');
  } finally {
    await app.close();
  }
});

test('externalOrigin is scheme://host[:port] with an optional path prefix, checked at construction', () => {
  const bad = ['api.example.com', 'ftp://api.example.com', 'https://', 'https://api.example.com/x?y=1',
    'https://api.example.com/#top', 'https://user@api.example.com', 'https://api.example.com:99999', 42];
  for (const externalOrigin of bad) {
    assert.throws(() => requireToken({ target: '127.0.0.1:1', audience: 'api', log: quietLog(), externalOrigin }),
      (error) => error instanceof TypeError && error.message.includes('externalOrigin'), String(externalOrigin));
  }
});

test('behind a proxy, externalOrigin names the URL clients address (htu)', { skip }, async () => {
  const app = await serve('local', { externalOrigin: 'https://api.example.com/' });
  try {
    const device = await Device.generate();
    const { accessToken: token } = await signInBound(client, `node-dpop-origin-${Date.now()}`, 'laptop', device, { audience: 'api' });
    const external = await send(app.url, { headers: dpop(token, await device.proof('GET', 'https://api.example.com/me', { accessToken: token })) });
    assert.equal(external.status, 200, external.body);
    // The URL as the proxy reached the app is not the one the device signed.
    assertRefused(await send(app.url, { headers: dpop(token, await device.proof('GET', app.url, { accessToken: token })) }), 'BAD_PROOF');
  } finally {
    await app.close();
  }
});
