// The client's device calls against a real `authority serve`, as the Python client makes
// them: the device list's class, name and last use. The authority counts two classes,
// `mobile` and every other ('*'), one session each.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { AuthorityClient } from '../src/index.js';
import { session } from '../src/convert.js';
import { Authority, missingAuthority, until } from './support/authority.js';

const skip = missingAuthority();
let authority;
let client;
const subject = () => `node-device-${Math.random().toString(36).slice(2)}`;

before(async () => {
  if (skip) return;
  authority = await new Authority({ env: { AUTHORITY_SESSION_LIMITS: 'mobile=1,*=1' } }).start();
  client = new AuthorityClient(authority.target);
});
after(async () => {
  client?.close();
  await authority?.close();
});

test('the device list carries each device\'s class, name and last use', { skip }, async () => {
  const user = subject();
  const phone = await client.issueToken(user, 'phone', { deviceClass: 'mobile', deviceName: 'the phone' });
  const [listed] = await client.listSessions(user);
  assert.deepEqual([listed.sessionId, listed.deviceClass, listed.deviceName], [phone.sessionId, 'mobile', 'the phone']);
  assert.ok(listed.lastUsedAt instanceof Date);
  assert.equal(listed.lastUsedAt.getTime(), listed.createdAt.getTime(), 'a sign-in is its first use');

  // Bounded: the clock moves past the sign-in's millisecond, so a refresh is a later use.
  assert.ok(await until(() => Date.now() > listed.createdAt.getTime() + 1, 1000, 1));
  await client.refreshToken(phone.refreshToken);
  const [refreshed] = await client.listSessions(user);
  assert.ok(refreshed.lastUsedAt > listed.createdAt, 'a refresh is a use');
  assert.equal(refreshed.createdAt.getTime(), listed.createdAt.getTime());
});

test('a session from an authority that sends no last use has lastUsedAt null', () => {
  const converted = session({
    sessionId: 's', subject: 'u', deviceId: 'd', createdAt: { seconds: '1700000000', nanos: 0 },
    expiresAt: { seconds: '1700003600', nanos: 0 }, lastUsedAt: null,
  });
  assert.equal(converted.lastUsedAt, null);
  assert.deepEqual([converted.deviceClass, converted.deviceName], ['', '']);
  assert.deepEqual(converted.createdAt, new Date(1_700_000_000_000));
});
