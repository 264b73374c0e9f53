// requireToken through real HTTP requests to a real Express app, in both modes, against a
// real `authority serve`.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';

import express from 'express';

import { AuthorityClient, REASON_TEXTS, requireToken } from '../src/index.js';
import { Authority, missingAuthority, newApiKey, quietLog, until } from './support/authority.js';

const skip = missingAuthority();
// The request problems' texts as the Python package's reasons.py has them, from the shared corpus.
const REQUEST_TEXTS = JSON.parse(readFileSync(new URL('../../../tests/vectors/tokens.json', import.meta.url), 'utf8')).request_problems;
// The Python package's MAX_AUTHORIZATION_BYTES (http/bearer.py).
const MAX_AUTHORIZATION_BYTES = 8192;
let authority;
let client;
// An API key, sent where a client might wrongly put one: never echoed either.
let apiKey;
before(async () => {
  if (skip) return;
  authority = await new Authority().start();
  client = new AuthorityClient(authority.target);
  apiKey = newApiKey('node-express-misplaced', ['verifier']).key;
});
after(async () => {
  client?.close();
  await authority?.close();
});

async function serve(mode) {
  const auth = requireToken({
    target: authority.target, mode, audience: 'api', publicPaths: ['/health'], log: quietLog(),
    follow: { heartbeatIntervalMs: 100 },
  });
  await auth.ready;
  if (mode === 'local') assert.ok(await auth.validator.waitUntilFresh(10_000));
  const app = express();
  app.get('/health', (req, res) => res.json({ ok: true }));
  app.get('/me', auth, (req, res) => res.json({ subject: req.auth.subject, device: req.auth.deviceId }));
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${server.address().port}`;
  return { url, close: async () => { server.close(); await auth.close(); } };
}

/** A GET written by hand, its header lines exactly as given (names in any case, repeated;
 * a string is written as UTF-8, so 'ö' arrives as two bytes above 0x7f). */
async function rawGet(url, lines) {
  const { hostname, port, pathname } = new URL(url);
  const socket = connect(Number(port), hostname);
  socket.write([`GET ${pathname} HTTP/1.1`, `Host: ${hostname}:${port}`, 'Connection: close', ...lines, '', ''].join('\r\n'));
  let text = '';
  for await (const chunk of socket) text += chunk;
  const [head, body] = text.split('\r\n\r\n');
  return { status: Number(head.split(' ')[1]), challenge: /^www-authenticate: (.*)$/im.exec(head)?.[1], body };
}

/** A fetch answer as rawGet gives one. */
async function answer(response) {
  return { status: response.status, challenge: response.headers.get('www-authenticate') ?? undefined, body: await response.text() };
}

/** 400 invalid_request for `problem` with the Bearer challenge (RFC 6750 §3.1), as the
 * Python middlewares answer, and none of `secrets` in the answer. */
function assertInvalidRequest(response, problem, secrets, name = problem) {
  const text = REQUEST_TEXTS[problem];
  assert.equal(response.status, 400, `${name}: ${response.body}`);
  assert.equal(response.challenge, `Bearer realm="token-authority", error="invalid_request", error_description="${text}"`, name);
  assert.deepEqual(JSON.parse(response.body), { error: 'invalid_request', error_description: text }, name);
  for (const secret of secrets) assert.ok(!response.body.includes(secret) && !response.challenge.includes(secret), name);
}

for (const mode of ['remote', 'local']) {
  describe(`requireToken in ${mode} mode`, { skip }, () => {
    let app;
    before(async () => { app = await serve(mode); });
    after(async () => { await app?.close(); });
    const get = (path, token) => fetch(app.url + path, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });

    test('a valid token reaches the handler with its claims in req.auth', async () => {
      const user = `node-express-${mode}-${Date.now()}`;
      const signedIn = await client.issueToken(user, 'laptop', { audience: 'api' });
      const response = await get('/me', signedIn.accessToken);
      assert.equal(response.status, 200);
      assert.deepEqual(await response.json(), { subject: user, device: 'laptop' });
    });

    test('no token: 401 with the realm only, and the text in the body', async () => {
      const response = await get('/me');
      assert.equal(response.status, 401);
      assert.equal(response.headers.get('www-authenticate'), 'Bearer realm="token-authority"');
      assert.deepEqual(await response.json(), { error: 'unauthorized', error_description: 'no token was presented' });
    });

    test('a header in another scheme is no token: 401 with the realm only', async () => {
      const signedIn = await client.issueToken(`node-express-basic-${mode}-${Date.now()}`, 'laptop', { audience: 'api' });
      // Basic, a scheme alone, a scheme that only begins as Bearer, and a token with no scheme.
      for (const value of ['Basic dXNlcjpwYXNz', 'basic', `Bearerx ${signedIn.accessToken}`, signedIn.accessToken]) {
        const response = await answer(await fetch(`${app.url}/me`, { headers: { authorization: value } }));
        assert.deepEqual({ ...response, body: JSON.parse(response.body) }, {
          status: 401, challenge: 'Bearer realm="token-authority"', body: { error: 'unauthorized', error_description: 'no token was presented' },
        }, value);
        assert.ok(!response.body.includes(signedIn.accessToken));
      }
    });

    test('a bad token: 401 invalid_token with the reason text, never the token', async () => {
      const signedIn = await client.issueToken(`node-express-bad-${mode}`, 'laptop', { audience: 'billing' });
      for (const [token, reason] of [[signedIn.accessToken, 'WRONG_AUDIENCE'], ['not-a-token', 'MALFORMED']]) {
        const response = await get('/me', token);
        assert.equal(response.status, 401);
        const challenge = response.headers.get('www-authenticate');
        assert.equal(challenge, `Bearer realm="token-authority", error="invalid_token", error_description="${REASON_TEXTS[reason]}"`);
        const body = await response.text();
        assert.deepEqual(JSON.parse(body), { error: 'invalid_token', error_description: REASON_TEXTS[reason] });
        assert.ok(!body.includes(token) && !challenge.includes(token));
      }
    });

    test('a token signed out by a sign-in on another device: 401 revoked, with the cause', async () => {
      const user = `node-express-revoked-${mode}-${Date.now()}`;
      const laptop = await client.issueToken(user, 'laptop', { audience: 'api' });
      // A name in another script, with a character outside the BMP: a header holds ASCII only.
      await client.issueToken(user, 'phone', { audience: 'api', deviceName: 'Zhang 的手机 📱' });
      let response;
      assert.ok(await until(async () => (response = await get('/me', laptop.accessToken)).status === 401, 2000));
      // Remote mode names the device (ValidateToken reads it); the local mirror knows the cause alone.
      const text = mode === 'remote' ? 'revoked: signed in on Zhang 的手机 📱' : 'revoked: signed in on another device';
      const inHeader = mode === 'remote' ? 'revoked: signed in on Zhang ??? ?' : text;
      assert.equal(response.headers.get('www-authenticate'),
        `Bearer realm="token-authority", error="invalid_token", error_description="${inHeader}"`);
      assert.deepEqual(await response.json(), { error: 'invalid_token', error_description: text });
    });

    test('a logged-out token: 401 with the cause of a logout', async () => {
      const signedIn = await client.issueToken(`node-express-logout-${mode}-${Date.now()}`, 'laptop', { audience: 'api' });
      await client.revokeToken({ token: signedIn.accessToken });
      let response;
      assert.ok(await until(async () => (response = await get('/me', signedIn.accessToken)).status === 401, 2000));
      assert.deepEqual(await response.json(), { error: 'invalid_token', error_description: 'revoked: logged out' });
    });

    test('two Authorization headers: 400 SEVERAL_HEADERS, the first never believed', async () => {
      const signedIn = await client.issueToken(`node-express-twice-${mode}-${Date.now()}`, 'laptop', { audience: 'api' });
      const token = signedIn.accessToken;
      assert.equal((await rawGet(`${app.url}/me`, [`Authorization: Bearer ${token}`])).status, 200);
      // Node's req.headers keeps the first of them alone: each of these would let the good token in.
      for (const [name, lines] of Object.entries({
        'the good one first': [`Authorization: Bearer ${token}`, 'authorization: Bearer not-a-token'],
        'the good one twice': [`AUTHORIZATION: Bearer ${token}`, `Authorization: Bearer ${token}`],
        'the good one and Basic': [`authorization: Bearer ${token}`, 'Authorization: Basic dXNlcjpwYXNz'],
        'the good one and an API key': [`Authorization: Bearer ${token}`, `Authorization: Bearer ${apiKey}`],
        // Joined by a proxy into one value: every part a `<scheme> <credentials>`.
        'two joined by a comma': [`Authorization: Bearer ${token}, Bearer ${token}`],
        'a Bearer and a Basic joined': [`Authorization: Bearer ${token},Basic dXNlcjpwYXNz`],
      })) {
        assertInvalidRequest(await rawGet(`${app.url}/me`, lines), 'SEVERAL_HEADERS', [token, apiKey], name);
      }
    });

    test(`a header over ${MAX_AUTHORIZATION_BYTES} bytes: 400 OVERSIZED, before any token is read`, async () => {
      const signedIn = await client.issueToken(`node-express-long-${mode}-${Date.now()}`, 'laptop', { audience: 'api' });
      const token = signedIn.accessToken;
      const header = (bytes) => `Bearer ${token}${'A'.repeat(bytes - 'Bearer '.length - token.length)}`;
      assertInvalidRequest(await answer(await get('/me', header(MAX_AUTHORIZATION_BYTES + 1).slice('Bearer '.length))), 'OVERSIZED', [token]);
      // In any scheme, and whatever it holds: its length is all that is read.
      assertInvalidRequest(await rawGet(`${app.url}/me`, [`Authorization: Basic ${'A'.repeat(MAX_AUTHORIZATION_BYTES)}`]), 'OVERSIZED', []);
      assertInvalidRequest(await rawGet(`${app.url}/me`, [`Authorization: Bearer ${'ö'.repeat(MAX_AUTHORIZATION_BYTES / 2)}`]), 'OVERSIZED', []);
      // At the limit the token is read, and refused as the token it is (no JWT).
      const atLimit = await answer(await get('/me', 'A'.repeat(MAX_AUTHORIZATION_BYTES - 'Bearer '.length)));
      assert.equal(atLimit.status, 401, atLimit.body);
      assert.deepEqual(JSON.parse(atLimit.body), { error: 'invalid_token', error_description: REASON_TEXTS.MALFORMED });
    });

    test('Bearer with no token: 400 EMPTY_TOKEN', async () => {
      for (const value of ['Bearer', 'bearer', 'BEARER   ', ' Bearer \t']) {
        assertInvalidRequest(await rawGet(`${app.url}/me`, [`Authorization: ${value}`]), 'EMPTY_TOKEN', [], JSON.stringify(value));
      }
    });

    test('anything but `<scheme> <token68>`: 400 MALFORMED_HEADER, never quoting it', async () => {
      const signedIn = await client.issueToken(`node-express-malformed-${mode}-${Date.now()}`, 'laptop', { audience: 'api' });
      const token = signedIn.accessToken;
      const malformed = {
        'two words': `Bearer ${token} ${apiKey}`,
        'a comma in the token': `Bearer ${token},${token}`,
        'a trailing comma': `Bearer ${token},`,
        'a quote in the token': `Bearer ${token}"`,
        "'=' inside the token": `Bearer ${token.slice(0, 10)}=${token.slice(10)}`,
        'a tab for the space': `Bearer\t${token}`,
        'bytes that are not ASCII in the token': `Bearer ${token}ö`,
        'bytes that are not ASCII in the scheme': `Bëarer ${token}`,
        'a scheme that is no token': `Bearer/x ${token}`,
        'nothing at all': '',
      };
      for (const [name, value] of Object.entries(malformed)) {
        assertInvalidRequest(await rawGet(`${app.url}/me`, [`Authorization: ${value}`]), 'MALFORMED_HEADER', [token, apiKey], name);
      }
      // The scheme is case-insensitive: the token itself is read so.
      assert.equal((await rawGet(`${app.url}/me`, [`Authorization: bEARER   ${token}`])).status, 200);
    });

    test('access_token in the query string: 400 TOKEN_IN_QUERY, whatever the headers (RFC 6750 §2.3)', async () => {
      const signedIn = await client.issueToken(`node-express-query-${mode}-${Date.now()}`, 'laptop', { audience: 'api' });
      const token = signedIn.accessToken;
      for (const [query, headers] of [
        [`access_token=${token}`, {}],
        [`page=2&access_token=${token}`, { authorization: `Bearer ${token}` }],
        [`access_token=${apiKey}`, { authorization: `Bearer ${token}` }],
        ['access_token', { authorization: `Bearer ${token}` }],
        [`access_token=${token}`, { authorization: 'Bearer two words' }],
        [`access%5Ftoken=${token}`, { authorization: `Bearer ${token}` }], // the same name, escaped
        [`q=1&ACCESS_TOKEN=${token}`, { authorization: `Bearer ${token}` }], // in another case
      ]) {
        assertInvalidRequest(await answer(await fetch(`${app.url}/me?${query}`, { headers })), 'TOKEN_IN_QUERY', [token, apiKey], query);
      }
      // Another parameter, or one that only holds the name, is no token in the query.
      for (const query of ['page=access_token', 'my_access_token=1']) {
        assert.equal((await fetch(`${app.url}/me?${query}`, { headers: { authorization: `Bearer ${token}` } })).status, 200, query);
      }
    });

    test('every refusal is Cache-Control: no-store, as the Python middlewares answer', async () => {
      const bad = { authorization: 'Bearer not-a-token' };
      for (const [path, headers, status] of [['/me', {}, 401], ['/me', bad, 401], ['/me?access_token=x', {}, 400]]) {
        const response = await fetch(app.url + path, { headers });
        assert.equal(response.status, status, path);
        assert.equal(response.headers.get('cache-control'), 'no-store', `${status} ${path}`);
      }
    });

    test('public paths need no token', async () => {
      assert.equal((await get('/health')).status, 200);
      // Nor are they read: as in the Python middlewares, a public path answers whatever comes.
      assert.equal((await fetch(`${app.url}/health?access_token=x`, { headers: { authorization: 'Bearer two words' } })).status, 200);
    });
  });
}

test('a stale view is 503 with Retry-After', { skip }, async () => {
  const signedIn = await client.issueToken(`node-express-stale-${Date.now()}`, 'laptop', { audience: 'api' });
  const app = await serve('local');
  try {
    assert.equal((await fetch(`${app.url}/me`, { headers: { authorization: `Bearer ${signedIn.accessToken}` } })).status, 200);
    await authority.stop();
    let response;
    assert.ok(await until(async () => (response = await fetch(`${app.url}/me`, { headers: { authorization: `Bearer ${signedIn.accessToken}` } })).status === 503, 10_000, 50));
    assert.equal(response.headers.get('retry-after'), '1');
    assert.equal(response.headers.get('cache-control'), 'no-store');
    assert.deepEqual(await response.json(), { error: 'temporarily_unavailable', error_description: 'the token cannot be checked right now' });
  } finally {
    await app.close();
    await authority.start();
  }
});

// A regression test: a validator that throws what it should not (a bug) reached Express's
// own handler, a 500 with the stack in development, or a 500 the Python middlewares never send.
test('a failure the middleware did not expect is 503, never the error or the token', async () => {
  const token = 'eyJhbGciOiJFZERTQSJ9.e30.c2lnbmF0dXJl';
  const bugs = {
    'a plain Error': async () => { throw new Error(`bug near ${token}`); },
    'no claims and no refusal': async () => undefined,
  };
  for (const [name, validate] of Object.entries(bugs)) {
    const logged = [];
    const log = { error: (...line) => logged.push(line) };
    const auth = requireToken({ validator: { validate, close: async () => {} }, audience: 'api', log });
    const app = express();
    app.get('/me', auth, (req, res) => res.json({ ok: true }));
    const server = app.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const url = `http://127.0.0.1:${server.address().port}/me`;
      const response = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
      const body = await response.text();
      assert.equal(response.status, 503, `${name}: ${body}`);
      const unavailable = {
        error: 'temporarily_unavailable', error_description: 'the token cannot be checked right now',
      };
      assert.deepEqual(JSON.parse(body), unavailable, name);
      assert.equal(response.headers.get('cache-control'), 'no-store', name);
      assert.equal(response.headers.get('retry-after'), '1', name);
      assert.equal(response.headers.get('www-authenticate'), null, name);
      assert.ok(!body.includes(token) && !body.includes('bug'), name);
      assert.equal(logged.length, 1, name);
    } finally {
      server.close();
    }
  }
});
