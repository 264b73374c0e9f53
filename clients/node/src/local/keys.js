// The signing keys a local verifier checks signatures with: from GetSigningKeys at start
// and from every SIGNING_KEYS event of the stream, which replaces the whole set. A kid
// the set lacks may be a key newer than the set: it triggers a refetch, at most one per
// refetchIntervalMs, so made-up kids cannot turn into a stream of calls. A set that fails
// to parse leaves the last good one in place.
import { performance } from 'node:perf_hooks';

import { KeySet, TokenVerifier } from '../verify.js';

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
  }

  /** Swaps in a new key set; a malformed one is logged and ignored. Resolves to whether it took. */
  async replace(jwksJson) {
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
    if (this.verifier === null) {
      const options = { issuer: this.issuer, leeway: this.leewaySeconds };
      if (this.clock !== undefined) options.clock = this.clock;
      if (this.proofs !== undefined) options.proofs = this.proofs;
      this.verifier = new TokenVerifier(keys, options);
    } else {
      this.verifier.keys = keys;
    }
    this.jwksJson = jwksJson;
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
