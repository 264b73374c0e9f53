// The revocation log's epoch against a real `authority serve`: `authority migrate
// --renew-epoch` (what an operator runs after restoring the database) gives the log a new
// epoch, and a local-mode consumer reads it again from 0, keeping what it held, whether
// the log changes under its open stream or while the authority is down.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { AuthorityClient, InvalidToken, Unavailable, Validator } from '../src/index.js';
import { Authority, missingAuthority, quietLog, until } from './support/authority.js';

const skip = missingAuthority();
let authority;
let client;
let validator;
const subject = () => `node-epoch-${Math.random().toString(36).slice(2)}`;

// Every WatchRevocations call of the consumer's own client: [afterSequence, epoch].
const requests = [];
// Every session id the consumer's mirror applied a revocation of, in order.
const applied = [];

before(async () => {
  if (skip) return;
  authority = await new Authority().start();
  client = new AuthorityClient(authority.target, { timeoutMs: 1000 });
  const consumerClient = new AuthorityClient(authority.target, { timeoutMs: 500, maxAttempts: 2 });
  const watch = consumerClient.watchRevocations.bind(consumerClient);
  consumerClient.watchRevocations = (afterSequence, options) => {
    requests.push([BigInt(afterSequence), options?.epoch ?? '']);
    return watch(afterSequence, options);
  };
  validator = new Validator({
    client: consumerClient, mode: 'local', maxStalenessMs: 1000, log: quietLog(),
    follow: { heartbeatIntervalMs: 100, idleTimeoutMs: 600, minBackoffMs: 20, maxBackoffMs: 200 },
  });
  validator.mirror.onRevocation((sessionId) => applied.push(sessionId));
  await validator.start();
  assert.ok(await validator.waitUntilFresh(10_000), 'the mirror never caught up');
});
after(async () => {
  await validator?.close();
  validator?.client.close();
  client?.close();
  await authority?.close();
});

const verdict = (token) => validator.validate(token, 'api').then(() => 'VALID', (error) => {
  if (error instanceof InvalidToken) return error.reason;
  if (error instanceof Unavailable) return 'UNAVAILABLE';
  throw error;
});

/** A session signed out by a second device, once the consumer's mirror holds it. */
async function revokedSession() {
  const user = subject();
  const laptop = await client.issueToken(user, 'laptop', { audience: 'api' });
  await client.issueToken(user, 'phone', { audience: 'api' });
  assert.ok(await until(() => validator.mirror.isRevoked(laptop.sessionId, ''), 5000), 'the revocation never arrived');
  return laptop;
}

test('a log given a new epoch under an open stream is read again from 0', { skip }, async () => {
  const before = await revokedSession();
  const oldEpoch = validator.mirror.epoch;
  assert.ok(oldEpoch !== '' && validator.mirror.lastSequence > 0n, 'the stream announced no epoch');
  const streamsBefore = requests.length;
  const appliedBefore = applied.length;

  const newEpoch = await authority.renewEpoch();
  assert.notEqual(newEpoch, oldEpoch);
  assert.ok(await until(() => validator.mirror.epoch === newEpoch && validator.mirror.isFresh(), 10_000),
    `never caught up in the new epoch (held ${validator.mirror.epoch})`);
  // A stream from 0 with no epoch, which re-read the backlog: the old revocation came again.
  assert.deepEqual(requests.slice(streamsBefore).at(-1), [0n, '']);
  assert.ok(applied.slice(appliedBefore).includes(before.sessionId), 'the backlog was not read again');
  assert.equal(await verdict(before.accessToken), 'REVOKED');

  const afterRenewal = await revokedSession();
  assert.equal(await verdict(afterRenewal.accessToken), 'REVOKED');
  assert.equal(validator.mirror.epoch, newEpoch);
  assert.ok(await validator.waitUntilFresh(5000), 'not fresh after catching up');
});

test('an authority restarted on a renewed log refuses the old position, and the consumer starts again from 0', { skip }, async () => {
  const before = await revokedSession();
  const [sequence, oldEpoch] = [validator.mirror.lastSequence, validator.mirror.epoch];
  await authority.stop();
  const newEpoch = await authority.renewEpoch();
  const streamsBefore = requests.length;
  await authority.start();
  assert.ok(await until(() => validator.mirror.epoch === newEpoch && validator.mirror.isFresh(), 15_000),
    `never caught up in the new epoch (held ${validator.mirror.epoch})`);
  // It resumed with its position and that position's epoch, was refused, and read from 0.
  const reopened = requests.slice(streamsBefore);
  const fromZero = reopened.findIndex(([afterSequence, epoch]) => afterSequence === 0n && epoch === '');
  assert.ok(fromZero >= 1, JSON.stringify(reopened, (_, value) => (typeof value === 'bigint' ? String(value) : value)));
  assert.deepEqual(reopened[0], [sequence, oldEpoch]);
  assert.equal(await verdict(before.accessToken), 'REVOKED');
  const afterRenewal = await revokedSession();
  assert.equal(await verdict(afterRenewal.accessToken), 'REVOKED');
});
