// requireToken through real HTTP requests to a real Express app, in both modes, against a
// real `authority serve`.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';

import express from 'express';

import { AuthorityClient, REASON_TEXTS, requireToken } from '../src/index.js';
import { Authority, missingAuthority, quietLog, until } from './support/authority.js';

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

/** A GET written by hand, its header lines exactly as given (names in any case, repeated). */
async function rawGet(url, lines) {
  const { hostname, port, pathname } = new URL(url);
  const socket = connect(Number(port), hostname);
  socket.write([`GET ${pathname} HTTP/1.1`, `Host: ${hostname}:${port}`, 'Connection: close', ...lines, '', ''].join('\r\n'));
  let text = '';
  for await (const chunk of socket) text += chunk;
  const [head, body] = text.split('\r\n\r\n');
  return { status: Number(head.split(' ')[1]), challenge: /^www-authenticate: (.*)$/im.exec(head)?.[1], body };
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

    test('two Authorization headers are answered as a malformed one, the first never believed', async () => {
      const signedIn = await client.issueToken(`node-express-twice-${mode}-${Date.now()}`, 'laptop', { audience: 'api' });
      const token = signedIn.accessToken;
      const malformed = await rawGet(`${app.url}/me`, ['Authorization: Bearer two words']);
      assert.equal(malformed.status, 401);
      assert.equal(malformed.challenge, 'Bearer realm="token-authority"');
      assert.equal((await rawGet(`${app.url}/me`, [`Authorization: Bearer ${token}`])).status, 200);
      // Node's req.headers keeps the first of them alone: each of these let the good token in.
      for (const [name, lines] of Object.entries({
        'the good one first': [`Authorization: Bearer ${token}`, 'authorization: Bearer not-a-token'],
        'the good one twice': [`AUTHORIZATION: Bearer ${token}`, `Authorization: Bearer ${token}`],
        'the good one and Basic': [`authorization: Bearer ${token}`, 'Authorization: Basic dXNlcjpwYXNz'],
      })) {
        const response = await rawGet(`${app.url}/me`, lines);
        assert.deepEqual(response, malformed, name);
        assert.ok(!response.body.includes(token));
      }
    });

    test('public paths need no token', async () => {
      assert.equal((await get('/health')).status, 200);
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
    assert.deepEqual(await response.json(), { error: 'temporarily_unavailable', error_description: 'the token cannot be checked right now' });
  } finally {
    await app.close();
    await authority.start();
  }
});
