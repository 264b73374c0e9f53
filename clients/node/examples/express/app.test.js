// The single-device scenario through the example app, over real HTTP, against a real
// `authority serve`: sign in on the laptop, use the API, sign in on the phone, the laptop
// gets 401 with the cause, the phone logs out.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, test } from 'node:test';

import { Authority, missingAuthority, until } from '../../test/support/authority.js';
import { createApp } from './app.js';

const skip = missingAuthority();
let authority;
let example;
let base;
before(async () => {
  if (skip) return;
  authority = await new Authority().start();
  example = await createApp({ authority: authority.target });
  assert.ok(await example.auth.validator.waitUntilFresh(10_000));
  const server = example.app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  example.server = server;
  base = `http://127.0.0.1:${server.address().port}`;
});
after(async () => {
  example?.server.close();
  await example?.close();
  await authority?.close();
});

const login = async (device) => (await (await fetch(`${base}/login`, {
  method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'alice', device }),
})).json());
const me = (token) => fetch(`${base}/api/me`, { headers: { authorization: `Bearer ${token}` } });

test('one device at a time: the phone signs the laptop out, then logs out', { skip }, async () => {
  const laptop = await login('laptop');
  assert.deepEqual(await (await me(laptop.access_token)).json(), { user: 'alice', device: 'laptop' });

  const phone = await login('phone');
  assert.equal(phone.replaced_sessions, 1);
  let refused;
  assert.ok(await until(async () => (refused = await me(laptop.access_token)).status === 401, 2000));
  // The laptop is told why: the cause, from the one table of texts.
  assert.match(refused.headers.get('www-authenticate'), /error="invalid_token", error_description="revoked: signed in on another device"/);
  assert.deepEqual(await refused.json(), { error: 'invalid_token', error_description: 'revoked: signed in on another device' });
  assert.equal((await me(phone.access_token)).status, 200);

  assert.equal((await fetch(`${base}/logout`, { method: 'POST', headers: { authorization: `Bearer ${phone.access_token}` } })).status, 204);
  assert.ok(await until(async () => (await me(phone.access_token)).status === 401, 2000));
});

test('a login without a user is 400 naming the fields', { skip }, async () => {
  const response = await fetch(`${base}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.equal(response.status, 400);
  assert.match((await response.json()).error_description, /user and device/);
});
