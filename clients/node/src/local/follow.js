// Keeps a RevocationMirror current from the WatchRevocations stream: open the stream
// after the last sequence applied, apply every event, and when the stream ends or fails,
// reconnect after a backoff (doubling, with jitter) and resume from the last sequence, so
// no revocation is missed. The position is kept with the log's epoch and both are sent: a
// stream that announces another epoch (the authority's database restored, or failed over
// to a new timeline) is cancelled before its event is applied, and OUT_OF_RANGE (a position
// the log does not know) too starts again from 0. A stream that has caught up and then
// stays silent for idleTimeoutMs is presumed dead and reopened. A closed client ends it.
import { status } from '@grpc/grpc-js';

import { MAX_TIMER_MS, checkNumber } from '../options.js';

/** The follower's settings, defaults filled in; TypeError or RangeError naming an option
 * that is not a number of milliseconds above 0 that a timer keeps (heartbeatIntervalMs at
 * least 1, idleTimeoutMs above heartbeatIntervalMs, maxBackoffMs at least minBackoffMs). */
export function followSettings({
  heartbeatIntervalMs = 1000, idleTimeoutMs = 3000, minBackoffMs = 50, maxBackoffMs = 2000,
} = {}) {
  const timer = { above: true, max: MAX_TIMER_MS };
  // At least 1 ms: less is sent as a zero Duration, which the authority refuses, and the
  // follower would reconnect for ever.
  checkNumber('follow.heartbeatIntervalMs', heartbeatIntervalMs, { ...timer, above: false, min: 1 });
  // Longer than a heartbeat: a stream cut for silence before each could arrive would reopen for ever.
  checkNumber('follow.idleTimeoutMs', idleTimeoutMs, { ...timer, min: heartbeatIntervalMs });
  checkNumber('follow.minBackoffMs', minBackoffMs, timer);
  checkNumber('follow.maxBackoffMs', maxBackoffMs, { ...timer, above: false, min: minBackoffMs });
  return { heartbeatIntervalMs, idleTimeoutMs, minBackoffMs, maxBackoffMs };
}

/** Follows the revocation stream until stop(). */
export class MirrorFollower {
  constructor(client, mirror, { log = console, ...settings } = {}) {
    this.client = client;
    this.mirror = mirror;
    this.settings = followSettings(settings);
    this.log = log;
    this.running = false;
    this.stream = null;
    this.loop = null;
    this.wake = null;
  }

  /** Starts following. */
  start() {
    if (this.loop === null) {
      this.running = true;
      this.loop = this.follow();
    }
  }

  /** Ends the stream and waits for the loop to finish. */
  async stop() {
    this.running = false;
    this.stream?.cancel();
    this.wake?.();
    await this.loop;
    this.loop = null;
  }

  async follow() {
    const { heartbeatIntervalMs, idleTimeoutMs, minBackoffMs, maxBackoffMs } = this.settings;
    let backoff = minBackoffMs;
    while (this.running) {
      let failure = null;
      let epochChanged = false;
      let silentForMs = null;
      const stream = this.client.watchRevocations(this.mirror.lastSequence, { heartbeatIntervalMs, epoch: this.mirror.epoch });
      this.stream = stream;
      this.mirror.streamStarted();
      // A silent stream gives the iterator nothing to end on: the watchdog cancels it.
      const watchdog = setInterval(() => {
        if (this.mirror.caughtUp && this.mirror.idleForMs() > idleTimeoutMs) {
          silentForMs = this.mirror.idleForMs();
          stream.cancel();
        }
      }, Math.min(heartbeatIntervalMs, idleTimeoutMs) / 2);
      watchdog.unref();
      try {
        for await (const event of stream) {
          if (!this.mirror.sameEpoch(event)) {
            epochChanged = true;
            stream.cancel();
            break;
          }
          this.mirror.apply(event);
          if (this.mirror.caughtUp) backoff = minBackoffMs;
        }
      } catch (error) {
        failure = error;
        if (error?.code === status.OUT_OF_RANGE) this.mirror.restart();
      } finally {
        clearInterval(watchdog);
        this.stream = null;
      }
      if (!this.running) break;
      // Closed under us (a client the validator was given): every reconnection would fail.
      if (this.client.closed === true) {
        this.log.warn?.('the authority client was closed; the revocation stream is no longer followed');
        this.running = false;
        break;
      }
      // Loud once per outage, quiet for every retry after it.
      if (epochChanged) {
        this.log.warn?.('the revocation log changed epoch (a restore or a failover); reading it again from 0');
      } else if (silentForMs !== null) {
        this.log.warn?.(`revocation stream silent for ${Math.round(silentForMs)} ms; reopening`);
      } else if (backoff === minBackoffMs) {
        this.log.warn?.(`revocation stream lost (${failure?.name ?? 'ended'}); reconnecting`);
      }
      const delay = backoff * (0.5 + Math.random() / 2);
      backoff = Math.min(backoff * 2, maxBackoffMs);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.wake = () => { clearTimeout(timer); resolve(); };
      });
      this.wake = null;
    }
  }
}
