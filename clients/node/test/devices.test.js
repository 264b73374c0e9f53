// The client's device calls against a real `authority serve`, as the Python client makes
// them: the device list's class, name and last use, PreviewSignIn, the guarded sign-in
// (expectedReplacements, ABORTED as SignInAborted), logout by refresh token, and "sign out
// my other devices". The authority counts two classes, `mobile` and every other ('*'), one
// session each.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import {
  AuthorityClient, AuthorityError, Internal, InvalidArgument, RefreshRejected, SignInAborted,
} from '../src/index.js';
import { session } from '../src/convert.js';
import { Authority, missingAuthority, until } from './support/authority.js';
import { Device, SIGN_IN_URI } from './support/dpop.js';

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

const isAborted = (error) => error instanceof SignInAborted && error instanceof AuthorityError
  && !(error instanceof Internal) && error.code === grpc.status.ABORTED && /expected_replacements/.test(error.details);

test('a preview names whom the sign-in would sign out, changes nothing, and guards the sign-in', { skip }, async () => {
  const user = subject();
  const laptop = await client.issueToken(user, 'laptop', { deviceName: 'the laptop' });

  const preview = await client.previewSignIn(user, 'phone');
  assert.equal(preview.allowed, true);
  assert.deepEqual(preview.wouldReplace.map((s) => [s.sessionId, s.subject, s.deviceId, s.deviceName, s.deviceClass]),
    [[laptop.sessionId, user, 'laptop', 'the laptop', '']]);
  assert.ok(preview.wouldReplace[0].createdAt instanceof Date && preview.wouldReplace[0].lastUsedAt instanceof Date);
  const rejecting = await client.previewSignIn(user, 'phone', { policy: 'REJECT' });
  assert.equal(rejecting.allowed, false);
  assert.deepEqual(rejecting.wouldReplace.map((s) => s.sessionId), [laptop.sessionId], 'whom it would have to sign out');
  assert.deepEqual((await client.listSessions(user)).map((s) => s.sessionId), [laptop.sessionId]);
  assert.equal((await client.validateToken(laptop.accessToken)).valid, true);

  const phone = await client.issueToken(user, 'phone', { expectedReplacements: preview.wouldReplace.map((s) => s.sessionId) });
  assert.deepEqual(phone.replacedSessionIds, [laptop.sessionId]);
  assert.deepEqual((await client.listSessions(user)).map((s) => s.sessionId), [phone.sessionId]);
});

test('a guarded sign-in that would sign out others than expected is SignInAborted, and nothing changes', { skip }, async () => {
  const user = subject();
  await client.issueToken(user, 'laptop');
  const preview = await client.previewSignIn(user, 'phone');
  const intruder = await client.issueToken(user, 'tablet'); // signs in meanwhile
  const expected = preview.wouldReplace.map((s) => s.sessionId);

  assert.equal((await client.previewSignIn(user, 'phone', { expectedReplacements: expected })).allowed, false);
  await assert.rejects(client.issueToken(user, 'phone', { expectedReplacements: expected }), isAborted);
  // An empty guard is "sign out nobody", not "unguarded".
  await assert.rejects(client.issueToken(user, 'phone', { expectedReplacements: [] }), isAborted);
  assert.deepEqual((await client.listSessions(user)).map((s) => s.sessionId), [intruder.sessionId]);
  assert.equal((await client.validateToken(intruder.accessToken)).valid, true);

  const first = await client.issueToken(subject(), 'laptop', { expectedReplacements: [] });
  assert.deepEqual(first.replacedSessionIds, []);
});

test('a preview acts within the device class it names', { skip }, async () => {
  const user = subject();
  const phone = await client.issueToken(user, 'phone', { deviceClass: 'mobile' });
  const laptop = await client.issueToken(user, 'laptop');
  assert.deepEqual(laptop.replacedSessionIds, [], 'another class: both stay signed in');

  const tablet = await client.previewSignIn(user, 'tablet', { deviceClass: 'mobile' });
  assert.deepEqual(tablet.wouldReplace.map((s) => [s.sessionId, s.deviceClass]), [[phone.sessionId, 'mobile']]);
  assert.equal((await client.previewSignIn(user, 'tablet', { deviceClass: 'mobile', expectedReplacements: [] })).allowed, false);
  assert.deepEqual((await client.previewSignIn(user, 'desktop')).wouldReplace.map((s) => s.sessionId), [laptop.sessionId]);
});

test('a preview carries the sign-in\'s proof where proofs are required, and does not use it up', { skip }, async () => {
  const binding = await new Authority({ env: { AUTHORITY_REQUIRE_PROOF_OF_POSSESSION: 'true' } }).start();
  const bound = new AuthorityClient(binding.target);
  try {
    const user = subject();
    await assert.rejects(bound.previewSignIn(user, 'phone'), (error) => error instanceof InvalidArgument && /^proof/.test(error.details));
    const proof = await (await Device.generate()).proofFor('POST', SIGN_IN_URI);
    assert.deepEqual(await bound.previewSignIn(user, 'phone', { proof }), { allowed: true, wouldReplace: [] });
    const signedIn = await bound.issueToken(user, 'phone', { proof, expectedReplacements: [] });
    assert.equal(signedIn.tokenType, 'DPoP');
  } finally {
    bound.close();
    await binding.close();
  }
});

test('a guard is an array of session ids, and a policy one of three names, or a TypeError before any call', async () => {
  // Nothing listens on port 1: a request that were sent would fail otherwise.
  const offline = new AuthorityClient('127.0.0.1:1', { timeoutMs: 200 });
  try {
    const typeError = (pattern) => (error) => error instanceof TypeError && pattern.test(error.message);
    for (const expectedReplacements of ['s1', [1], new Set(['s1'])]) {
      await assert.rejects(offline.issueToken('u', 'd', { expectedReplacements }), typeError(/expectedReplacements/));
      await assert.rejects(offline.previewSignIn('u', 'd', { expectedReplacements }), typeError(/expectedReplacements/));
    }
    await assert.rejects(offline.previewSignIn('u', 'd', { policy: 'NEWEST' }), typeError(/policy/));
  } finally {
    offline.close();
  }
});

test('sign out my other devices, by access token or by session id', { skip }, async () => {
  const user = subject();
  const phone = await client.issueToken(user, 'phone', { deviceClass: 'mobile' });
  const laptop = await client.issueToken(user, 'laptop');

  assert.equal(await client.revokeOtherSessions({ token: laptop.accessToken, reason: 'lost phone' }), 1);
  assert.deepEqual((await client.listSessions(user)).map((s) => s.sessionId), [laptop.sessionId]);
  const refused = await client.validateToken(phone.accessToken);
  assert.deepEqual([refused.reason, refused.revocationCause], ['REVOKED', 'OTHER_DEVICES_SIGNED_OUT']);
  assert.equal((await client.validateToken(laptop.accessToken)).valid, true);

  const again = await client.issueToken(user, 'phone', { deviceClass: 'mobile' });
  assert.equal(await client.revokeOtherSessions({ sessionId: again.sessionId }), 1);
  assert.equal(await client.revokeOtherSessions({ sessionId: again.sessionId }), 0, 'nobody else is left');
  assert.deepEqual((await client.listSessions(user)).map((s) => s.sessionId), [again.sessionId]);
  // The target is sent as named, even empty, so the authority's refusal names it.
  await assert.rejects(client.revokeOtherSessions({ token: '' }),
    (error) => error instanceof InvalidArgument && error.details.startsWith('other_sessions.token'));
});

test('a bound token signs the other devices out only with its device\'s proof', { skip }, async () => {
  const user = subject();
  const laptop = await client.issueToken(user, 'laptop');
  const device = await Device.generate();
  const phone = await client.issueToken(user, 'phone', { deviceClass: 'mobile', proof: await device.proofFor('POST', SIGN_IN_URI) });
  assert.equal(phone.tokenType, 'DPoP');

  // A copy of the token alone ends nothing.
  await assert.rejects(client.revokeOtherSessions({ token: phone.accessToken }),
    (error) => error instanceof InvalidArgument && error.details.startsWith('other_sessions.proof: is required'));
  assert.equal((await client.listSessions(user)).length, 2);

  const proof = await device.proofFor('POST', 'https://api.example.com/sign-out-others', { accessToken: phone.accessToken });
  assert.equal(await client.revokeOtherSessions({ token: phone.accessToken, proof }), 1);
  assert.deepEqual((await client.listSessions(user)).map((s) => s.sessionId), [phone.sessionId]);
  assert.equal((await client.validateToken(laptop.accessToken)).reason, 'REVOKED');
});

test('logout by refresh token ends the session, however idle', { skip }, async () => {
  const user = subject();
  const signedIn = await client.issueToken(user, 'laptop');
  assert.equal(await client.revokeToken({ refreshToken: signedIn.refreshToken, reason: 'logout' }), 1);
  const refused = await client.validateToken(signedIn.accessToken);
  assert.deepEqual([refused.reason, refused.revocationCause], ['REVOKED', 'LOGGED_OUT']);
  await assert.rejects(client.refreshToken(signedIn.refreshToken), RefreshRejected);
  assert.equal(await client.revokeToken({ refreshToken: signedIn.refreshToken }), 0);
  assert.deepEqual(await client.listSessions(user), []);
});

test('a revocation names exactly one target, or a TypeError before any call', async () => {
  // Nothing listens on port 1: a request that were sent would fail otherwise.
  const offline = new AuthorityClient('127.0.0.1:1', { timeoutMs: 200 });
  try {
    const typeError = (pattern) => (error) => error instanceof TypeError && pattern.test(error.message);
    for (const target of [{}, { token: 'a', refreshToken: 'b' }, { refreshToken: 'b', subject: 'u' }]) {
      await assert.rejects(offline.revokeToken(target), typeError(/^name exactly one of token, refreshToken, sessionId or subject$/));
    }
    for (const target of [{}, { token: 'a', sessionId: 's' }, { reason: 'r' }]) {
      await assert.rejects(offline.revokeOtherSessions(target), typeError(/^name exactly one of token or sessionId$/));
    }
  } finally {
    offline.close();
  }
});
