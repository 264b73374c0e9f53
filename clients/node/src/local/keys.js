// The signing keys a local verifier checks signatures with: from GetSigningKeys at start
// and from every SIGNING_KEYS event of the stream, which replaces the whole set. A kid
// the set lacks may be a key newer than the set: it triggers a refetch, at most one per
// refetchIntervalMs, so made-up kids cannot turn into a stream of calls. A set that fails
// to parse leaves the last good one in place.
//
// The stream's sets are the authority's word: a key one leaves out is withdrawn (retired
// after a compromise, or purged), and a fetched set cannot bring it back. GetSigningKeys
// may be answered by a replica that has not seen the withdrawal yet, and a token naming
// the withdrawn key is exactly what makes a consumer refetch: without this, such a token
// would reinstate its own key. Only a later stream set may name the key again (a database
// restored from before the withdrawal).
//
// Sets carry a version (key_set_version), which the database raises on every change to
// the stored keys: a set of a lower version than one already taken is older, whichever
// replica sends it, and is ignored, stream set or fetched alike. A stream resumed on a
// replica that has not yet reread its keys would otherwise bring a retired key back, or
// withdraw a new one, until that replica caught up. Versions are compared within one log
// epoch: a stream of another epoch (a restored database, a failover to another timeline)
// starts the count afresh. A set of version 0 (an authority older than versions) is taken
// as before. Versions are Numbers: the database counts changes to the keys, far below 2^53.
import { performance } from 'node:perf_hooks';

import { KeySet, TokenVerifier } from '../verify.js';

/** Withdrawn kids remembered at most: one a rotation, so years of them. */
const MAX_WITHDRAWN = 10_000;

/** The verifier and the key set in it, replaced as the authority announces new ones. */
export class SigningKeys {
  constructor({ issuer, leewaySeconds = 30, refetchIntervalMs = 1000, clock, log = console, proofs }) {
    /** null until the first key set arrives. */
    this.verifier = null;
    this.issuer = issuer;
    this.leewaySeconds = leewaySeconds;
    this.refetchIntervalMs = refetchIntervalMs;
    this.clock = clock;
    this.log = log;
    this.proofs = proofs;
    this.lastRefetch = null;
    this.jwksJson = '';
    /** The sets being taken, one after another. */
    this.queue = Promise.resolve();
    /** Kids the stream withdrew, oldest first. */
    this.withdrawn = new Set();
    /** The highest version taken, and the epoch of the stream set that set the count ('' until
     * a stream set of a known epoch arrives). */
    this.version = 0;
    this.epoch = '';
  }

  /** A stream's SIGNING_KEYS event (see replace). */
  replaceAnnounced(jwksJson, version = 0, epoch = '') {
    return this.replace(jwksJson, { version, epoch });
  }

  /** A GetSigningKeys answer, {jwksJson, version} (see replace). */
  replaceFetched({ jwksJson, version = 0 }) {
    return this.replace(jwksJson, { fetched: true, version });
  }

  /** Swaps in a new key set; a malformed one, or one older than the set taken, is logged and
   * ignored. Resolves to whether it took. `fetched`: a GetSigningKeys answer, not a stream
   * event; the keys the stream withdrew are left out of it. `version`: the set's; `epoch`:
   * the stream's, for a stream set (module comment). */
  replace(jwksJson, { fetched = false, version = 0, epoch = '' } = {}) {
    // Sets parse asynchronously but are taken one at a time, in the order they arrive: each
    // is compared against the count of every set before it, and the newest is taken last.
    const taken = this.queue.then(() => this.take(jwksJson, fetched, version, epoch));
    this.queue = taken.catch(() => {});
    return taken;
  }

  async take(jwksJson, fetched, version, epoch) {
    const older = this.isOlder(fetched, version, epoch);
    if (jwksJson === this.jwksJson) {
      if (!older) this.count(fetched, version, epoch);
      return true;
    }
    let keys;
    try {
      keys = await KeySet.fromJwks(jwksJson);
    } catch {
      this.log.warn?.('ignored a malformed signing key set; keeping the last good one');
      return false;
    }
    if (older) {
      this.log.warn?.(`ignored an older signing key set (version ${version}, holding ${this.version})`);
      return false;
    }
    this.count(fetched, version, epoch);
    let installed = jwksJson;
    if (fetched) {
      const reinstated = keys.kids.filter((kid) => this.withdrawn.has(kid));
      if (reinstated.length > 0) {
        this.log.warn?.(`left withdrawn signing keys out of a fetched set: ${reinstated.join(', ')}`);
        keys = keys.without(reinstated);
        installed = ''; // not the set installed: the same text again is filtered again
      }
    } else {
      const current = this.verifier?.keys.kids ?? [];
      for (const kid of current) if (keys.get(kid) === undefined) this.withdrawn.add(kid);
      for (const kid of keys.kids) this.withdrawn.delete(kid);
      for (const kid of this.withdrawn) {
        if (this.withdrawn.size <= MAX_WITHDRAWN) break;
        this.withdrawn.delete(kid);
      }
    }
    if (this.verifier === null) {
      const options = { issuer: this.issuer, leeway: this.leewaySeconds };
      if (this.clock !== undefined) options.clock = this.clock;
      if (this.proofs !== undefined) options.proofs = this.proofs;
      this.verifier = new TokenVerifier(keys, options);
    } else {
      this.verifier.keys = keys;
    }
    this.jwksJson = installed;
    return true;
  }

  /** Whether a stream set of `epoch` starts another epoch's count. */
  isNewEpoch(fetched, epoch) {
    return !fetched && Boolean(epoch) && Boolean(this.epoch) && epoch !== this.epoch;
  }

  /** Whether a set of `version` is older than the one taken (0: not known to be). */
  isOlder(fetched, version, epoch) {
    return version > 0 && version < this.version && !this.isNewEpoch(fetched, epoch);
  }

  /** Counts a set taken (or the set taken announced again). */
  count(fetched, version, epoch) {
    if (this.isNewEpoch(fetched, epoch)) this.version = version; // another epoch's count: it starts afresh
    else if (version) this.version = Math.max(this.version, version);
    if (!fetched && epoch) this.epoch = epoch;
  }

  /** Whether this caller may refetch now (at most one per refetchIntervalMs). */
  claimRefetch() {
    const now = performance.now();
    if (this.lastRefetch !== null && now - this.lastRefetch < this.refetchIntervalMs) return false;
    this.lastRefetch = now;
    return true;
  }
}
