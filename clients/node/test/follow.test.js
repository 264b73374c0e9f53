// The follower's handling of the log's epoch, with one fake at one seam: the client's
// watchRevocations, which hands out scripted streams. The real authority's side of the same
// behaviour is in epoch.test.js.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { status } from '@grpc/grpc-js';

import { fromServiceError } from '../src/errors.js';
import { MirrorFollower } from '../src/local/follow.js';
import { RevocationMirror } from '../src/local/mirror.js';
import { quietLog, until } from './support/authority.js';

const FOLLOW = { heartbeatIntervalMs: 100, idleTimeoutMs: 5000, minBackoffMs: 1, maxBackoffMs: 5 };
const later = () => new Date(Date.now() + 600_000);
const revocation = (sequence, epoch, sessionId) => ({ kind: 'REVOCATION', sequence, sessionId, tokenId: '', expiresAt: later(), jwksJson: '', epoch });
const caughtUp = (sequence, epoch) => ({ kind: 'CAUGHT_UP', sequence, sessionId: '', tokenId: '', jwksJson: '', epoch });

/** A scripted stream: its steps are events, functions returning a promise to wait on, or
 * an error to end with; after them it ends, or stays open until cancelled (`open`). */
class ScriptedStream {
  constructor(steps, { open = false } = {}) {
    this.steps = steps;
    this.open = open;
    this.cancelled = false;
    this.wake = () => {};
  }

  async *[Symbol.asyncIterator]() {
    for (const step of this.steps) {
      if (this.cancelled) return;
      if (step instanceof Error) throw step;
      if (typeof step === 'function') await step();
      else yield step;
    }
    if (this.open && !this.cancelled) await new Promise((resolve) => { this.wake = resolve; });
  }

  cancel() {
    this.cancelled = true;
    this.wake();
  }
}

/** The seam: records every [afterSequence, epoch] asked for and answers the next script. */
class ScriptedClient {
  constructor(scripts) {
    this.scripts = scripts;
    this.requests = [];
    this.streams = [];
  }

  watchRevocations(afterSequence, { epoch = '' } = {}) {
    this.requests.push([BigInt(afterSequence), epoch]);
    const script = this.scripts[Math.min(this.requests.length, this.scripts.length) - 1];
    const stream = new ScriptedStream(...script(this.requests.length));
    this.streams.push(stream);
    return stream;
  }
}

/** A promise and the function that resolves it. */
function gate() {
  let open;
  const opened = new Promise((resolve) => { open = resolve; });
  return { opened, open };
}

async function following(client, mirror, body) {
  const follower = new MirrorFollower(client, mirror, { ...FOLLOW, log: quietLog() });
  follower.start();
  try {
    await body();
  } finally {
    await follower.stop();
  }
}

test('a stream announcing another epoch past 0 makes the follower reopen from 0 without applying its event', async () => {
  const release = gate();
  const client = new ScriptedClient([
    // The first stream of e1 ends after catching up at 7: the follower resumes after 7 of e1.
    () => [[revocation(7n, 'e1', 's7-e1'), caughtUp(7n, 'e1')]],
    // The log was restored: its stream (from a server that does not check the request's
    // epoch) answers the old position with an event of e2.
    () => [[revocation(9n, 'e2', 's9-e2')], { open: true }],
    // From 0, e2's backlog; CAUGHT_UP only when the test lets it through.
    () => [[revocation(3n, 'e2', 's3-e2'), () => release.opened, caughtUp(3n, 'e2')], { open: true }],
  ]);
  const mirror = new RevocationMirror({ maxStalenessMs: 5000 });
  await following(client, mirror, async () => {
    assert.ok(await until(() => mirror.isRevoked('s3-e2', ''), 5000), String(client.requests));
    assert.deepEqual(client.requests, [[0n, ''], [7n, 'e1'], [0n, '']]);
    assert.ok(client.streams[1].cancelled, 'the stream of another epoch was left open');
    assert.equal(mirror.isRevoked('s9-e2', ''), false, 'the event of another epoch was applied');
    assert.ok(mirror.isRevoked('s7-e1', ''), 'what it held was dropped');
    // Before the new stream's CAUGHT_UP the copy vouches for nothing.
    assert.equal(mirror.isFresh(), false);
    assert.equal(mirror.stalenessMs(), null);
    release.open();
    assert.ok(await until(() => mirror.isFresh(), 5000), 'never fresh after the new CAUGHT_UP');
    assert.equal(mirror.epoch, 'e2');
    assert.equal(mirror.lastSequence, 3n);
  });
});

test('OUT_OF_RANGE drops the position and its epoch, keeps what is held, and vouches only after CAUGHT_UP', async () => {
  const release = gate();
  // As the real stream throws it: grpc-js's error through the client's one seam.
  const refused = fromServiceError({ code: status.OUT_OF_RANGE, details: 'after_sequence is not a position of this log' });
  const client = new ScriptedClient([
    () => [[revocation(7n, 'e1', 's7-e1'), caughtUp(7n, 'e1')]],
    () => [[refused]],
    () => [[revocation(2n, 'e2', 's2-e2'), () => release.opened, caughtUp(2n, 'e2')], { open: true }],
  ]);
  const mirror = new RevocationMirror({ maxStalenessMs: 5000 });
  await following(client, mirror, async () => {
    assert.ok(await until(() => mirror.isRevoked('s2-e2', ''), 5000), String(client.requests));
    assert.deepEqual(client.requests, [[0n, ''], [7n, 'e1'], [0n, '']]);
    assert.ok(mirror.isRevoked('s7-e1', ''));
    assert.equal(mirror.isFresh(), false);
    release.open();
    assert.ok(await until(() => mirror.isFresh(), 5000));
    assert.equal(mirror.epoch, 'e2');
  });
});

test('an authority without epochs (an empty epoch) is followed without a check', async () => {
  const client = new ScriptedClient([
    () => [[revocation(7n, 'e1', 's7-e1'), caughtUp(7n, 'e1')]],
    () => [[revocation(8n, '', 's8'), caughtUp(8n, '')], { open: true }],
  ]);
  const mirror = new RevocationMirror({ maxStalenessMs: 5000 });
  await following(client, mirror, async () => {
    assert.ok(await until(() => mirror.isRevoked('s8', '') && mirror.isFresh(), 5000), String(client.requests));
    assert.deepEqual(client.requests, [[0n, ''], [7n, 'e1']]);
    assert.equal(mirror.lastSequence, 8n);
    assert.equal(mirror.epoch, 'e1');
  });
});
