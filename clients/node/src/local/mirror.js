// A consumer's copy of the authority's live revocations, and how fresh it is.
//
// Fed by the WatchRevocations stream (follow.js). It vouches for a token only while it is
// fresh: complete as of a moment no longer than maxStalenessMs ago. It becomes complete
// when the stream says CAUGHT_UP after its backlog, and stays so while HEARTBEATs keep
// arriving. Freshness is measured on this process's monotonic clock when an event
// arrives, never on the server's sent_at, so clock skew cannot make a stale view look
// fresh. Entries expire with the tokens they revoke (plus the leeway). Each revoked
// session also keeps why (its cause) and, for a replacement, the device that signed in,
// in side tables holding only those that have one, purged with the entry.
//
// The position is kept with the log's epoch (an opaque string, compared for equality
// only): a sequence means something only within its epoch. A stream of another epoch (the
// authority's database restored, or failed over to a new timeline) drops the position,
// and the copy vouches for nothing until a stream from 0 has caught up again.
import { performance } from 'node:perf_hooks';

import { MAX_DURATION_SECONDS, checkNumber } from '../options.js';
import { InvalidReason } from '../reasons.js';
import { InvalidToken } from '../verify.js';

const PURGE_EVERY_MS = 10_000;

/** Revoked sessions and tokens that can still matter, and when the copy was last complete. */
export class RevocationMirror {
  constructor({ maxStalenessMs = 5000, leewaySeconds = 30, monotonic = () => performance.now(), clock = () => Date.now() } = {}) {
    this.maxStalenessMs = checkNumber('maxStalenessMs', maxStalenessMs, { above: true });
    this.leewayMs = checkNumber('leewaySeconds', leewaySeconds, { max: MAX_DURATION_SECONDS }) * 1000;
    this.monotonic = monotonic;
    this.clock = clock;
    this.sessions = new Map(); // session id -> expiry (ms since the epoch)
    this.tokens = new Map(); // token id -> expiry
    this.causes = new Map(); // session id -> cause name (not UNSPECIFIED)
    this.replacedBy = new Map(); // session id -> the device id that signed in
    /** The sequence to resume after: everything up to it has been applied. */
    this.lastSequence = 0n;
    /** The epoch lastSequence is a position in ('' before any stream): send both when resuming. */
    this.epoch = '';
    this.completeAt = null;
    /** Whether the current stream has sent its backlog. */
    this.caughtUp = false;
    this.lastEventAt = null;
    this.nextPurge = 0;
    this.revocationListeners = [];
    this.keysListeners = [];
  }

  /** Resumes from the start of the log (the authority did not know our position, or the log
   * changed epoch); what is held stays held while the new snapshot arrives, but the copy is
   * no longer known complete: it vouches again only after the new stream's CAUGHT_UP. */
  restart() {
    this.lastSequence = 0n;
    this.epoch = '';
    this.caughtUp = false;
    this.completeAt = null;
  }

  /** Takes the epoch a stream announces; false when it is not the one our position is of
   * (a restored or failed-over log): then the position is dropped (restart()) and the
   * stream must be opened again from 0, without applying `event`. An empty epoch (an
   * authority from before epochs) is not checked. */
  sameEpoch(event) {
    if (!event.epoch || event.epoch === this.epoch) return true;
    if (!this.epoch || this.lastSequence === 0n) {
      this.epoch = event.epoch;
      return true;
    }
    this.restart();
    return false;
  }

  /** Calls `listener(sessionId, tokenId)` for every revocation applied. */
  onRevocation(listener) {
    this.revocationListeners.push(listener);
  }

  /** Calls `listener(jwksJson, keySetVersion, epoch)` whenever the stream announces the signing keys. */
  onSigningKeys(listener) {
    this.keysListeners.push(listener);
  }

  /** A new stream is open: it vouches for nothing until it has caught up. */
  streamStarted() {
    this.caughtUp = false;
    this.lastEventAt = this.monotonic();
  }

  /** Milliseconds since the current stream last sent anything. */
  idleForMs() {
    return this.lastEventAt === null ? 0 : this.monotonic() - this.lastEventAt;
  }

  /** Applies one stream event. */
  apply(event) {
    const now = this.monotonic();
    this.lastEventAt = now;
    const raise = (sequence) => { if (sequence > this.lastSequence) this.lastSequence = sequence; };
    switch (event.kind) {
      case 'REVOCATION': {
        const expiresAt = event.expiresAt?.getTime() ?? 0;
        if (event.sessionId) {
          this.sessions.set(event.sessionId, Math.max(expiresAt, this.sessions.get(event.sessionId) ?? 0));
          if (event.cause && event.cause !== 'UNSPECIFIED') this.causes.set(event.sessionId, event.cause);
          if (event.replacedByDeviceId) this.replacedBy.set(event.sessionId, event.replacedByDeviceId);
        }
        if (event.tokenId) this.tokens.set(event.tokenId, expiresAt);
        // Not a confirmation of completeness: a consumer that fell behind reads old events.
        raise(event.sequence);
        for (const listener of this.revocationListeners) listener(event.sessionId, event.tokenId);
        break;
      }
      case 'CAUGHT_UP':
        this.caughtUp = true;
        raise(event.sequence);
        this.completeAt = now;
        break;
      case 'HEARTBEAT':
        if (this.caughtUp) {
          raise(event.sequence);
          this.completeAt = now;
        }
        break;
      case 'SIGNING_KEYS':
        if (event.jwksJson) {
          for (const listener of this.keysListeners) listener(event.jwksJson, event.keySetVersion ?? 0, event.epoch ?? '');
        }
        break;
      default:
        break; // a kind this version does not know: ignored, as the contract allows additions
    }
    if (now >= this.nextPurge) {
      this.purge();
      this.nextPurge = now + PURGE_EVERY_MS;
    }
  }

  /** Milliseconds since the copy was last known complete; null if it never was. */
  stalenessMs() {
    return this.completeAt === null ? null : this.monotonic() - this.completeAt;
  }

  /** Whether the copy can vouch for a token now. */
  isFresh() {
    return this.completeAt !== null && this.monotonic() - this.completeAt <= this.maxStalenessMs;
  }

  /** Whether a token of `sessionId` (or the token `tokenId` itself) is revoked. */
  isRevoked(sessionId, tokenId) {
    return this.sessions.has(sessionId) || this.tokens.has(tokenId);
  }

  /** The InvalidToken for a revoked token of `sessionId` (or the token `tokenId`), with
   * the cause the stream sent; null when it is not revoked. */
  refusal(sessionId, tokenId) {
    if (!this.isRevoked(sessionId, tokenId)) return null;
    return new InvalidToken(InvalidReason.REVOKED, {
      cause: this.causes.get(sessionId),
      replacedByDeviceId: this.replacedBy.get(sessionId) ?? '',
    });
  }

  get size() {
    return this.sessions.size + this.tokens.size;
  }

  purge() {
    const cutoff = this.clock() - this.leewayMs;
    for (const entries of [this.sessions, this.tokens]) {
      for (const [key, expiresAt] of entries) if (expiresAt < cutoff) entries.delete(key);
    }
    for (const side of [this.causes, this.replacedBy]) {
      for (const sessionId of side.keys()) if (!this.sessions.has(sessionId)) side.delete(sessionId);
    }
  }
}
