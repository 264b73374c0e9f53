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
    this.generation = 0;
    /** Kids the stream withdrew, oldest first. */
    this.withdrawn = new Set();
  }

  /** Swaps in a new key set; a malformed one is logged and ignored. Resolves to whether it
   * took. `fetched`: a GetSigningKeys answer, not a stream event; the keys the stream
   * withdrew are left out of it. */
  async replace(jwksJson, { fetched = false } = {}) {
    // Sets arrive in order but parse asynchronously: only the newest may take, even when it
    // is the set already installed (a set announced in between must not win after it).
    const generation = ++this.generation;
    if (jwksJson === this.jwksJson) return true;
    let keys;
    try {
      keys = await KeySet.fromJwks(jwksJson);
    } catch {
      this.log.warn?.('ignored a malformed signing key set; keeping the last good one');
      return false;
    }
    if (generation !== this.generation) return false;
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

  /** Whether this caller may refetch now (at most one per refetchIntervalMs). */
  claimRefetch() {
    const now = performance.now();
    if (this.lastRefetch !== null && now - this.lastRefetch < this.refetchIntervalMs) return false;
    this.lastRefetch = now;
    return true;
  }
}
