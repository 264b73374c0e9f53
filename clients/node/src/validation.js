// Validating tokens for a consumer service, in one of two modes.
//
// 'remote': every token is checked with ValidateToken.
// 'local': signatures and claims are checked in-process (verify.js) with the keys of
//   GetSigningKeys and the revocation stream, and revocations against the RevocationMirror
//   the stream keeps current. A bad token is refused on the spot. A good one is accepted
//   only while the mirror is fresh; otherwise ValidateToken decides, and when the
//   authority cannot be reached either, the call is refused with Unavailable. Nothing is
//   accepted on a view that cannot vouch for it. Local verification without the stream is
//   not offered: it could not see revocations.
//
// A token bound to a device key (cnf.jkt) is accepted only with a proof of that key
// ({proof, httpMethod, httpUri}: the DPoP proof and the request it came with), in both
// modes: remote mode passes it to ValidateToken, local mode checks it with the one
// ProofChecker of this process (proof.js) after the token's own checks, on every call
// (a proof is good once, so a remembered token still needs a fresh one), and before
// revocation; a revocation the mirror knows of is checked again before the proof's jti
// is recorded, so a revoked token spends no proof.
//
// LocalVerification holds every decision made without I/O (the hot path); Validator adds
// the calls to the authority.
import { AuthorityError, InvalidArgument, Unavailable } from './errors.js';
import { AuthorityClient } from './client.js';
import { MirrorFollower, followSettings } from './local/follow.js';
import { SigningKeys } from './local/keys.js';
import { RevocationMirror } from './local/mirror.js';
import { MAX_DURATION_SECONDS, MAX_ENTRIES, checkNumber } from './options.js';
import { InvalidReason } from './reasons.js';
import { DEFAULT_MAX_AGE, DEFAULT_REPLAY_CACHE_SIZE, ProofChecker } from './proof.js';
import { InvalidToken } from './verify.js';

const UNAVAILABLE_MESSAGE = 'the token authority cannot be reached to check the token';
const CLOSED_MESSAGE = 'the validator is closed';
/** What LocalVerification.decide answers when it cannot decide alone. */
export const REFETCH_KEYS = Symbol('refetch keys');
export const ASK_AUTHORITY = Symbol('ask the authority');

/** TypeError or RangeError, naming the option, for a numeric option of local mode that is
 * not a number in range (left out: its default, which is). */
function checkLocalOptions({ leewaySeconds = 30, maxStalenessMs = 5000, keyRefetchIntervalMs = 1000,
  localCacheSize = 10_000, proofMaxAge = DEFAULT_MAX_AGE, proofReplayCacheSize = DEFAULT_REPLAY_CACHE_SIZE }) {
  checkNumber('maxStalenessMs', maxStalenessMs, { above: true });
  checkNumber('leewaySeconds', leewaySeconds, { max: MAX_DURATION_SECONDS });
  checkNumber('keyRefetchIntervalMs', keyRefetchIntervalMs);
  checkNumber('localCacheSize', localCacheSize, { max: MAX_ENTRIES, integer: true });
  checkNumber('proofMaxAge', proofMaxAge, { above: true, max: MAX_DURATION_SECONDS });
  checkNumber('proofReplayCacheSize', proofReplayCacheSize, { min: 1, max: MAX_ENTRIES, integer: true });
}

/** The decisions of local mode that need no I/O: keys, mirror, and the tokens verified before. */
export class LocalVerification {
  constructor({ issuer = 'token-authority', leewaySeconds = 30, maxStalenessMs = 5000, keyRefetchIntervalMs = 1000,
    localCacheSize = 10_000, proofMaxAge = DEFAULT_MAX_AGE, proofReplayCacheSize = DEFAULT_REPLAY_CACHE_SIZE,
    clock, log = console } = {}) {
    checkLocalOptions({
      leewaySeconds, maxStalenessMs, keyRefetchIntervalMs, localCacheSize, proofMaxAge, proofReplayCacheSize,
    });
    this.mirror = new RevocationMirror({ maxStalenessMs, leewaySeconds });
    /** The proofs of this consumer, and their replay cache. */
    this.proofs = new ProofChecker({ maxAge: proofMaxAge, replayCacheSize: proofReplayCacheSize, ...(clock ? { clock } : {}) });
    this.keys = new SigningKeys({
      issuer, leewaySeconds, refetchIntervalMs: keyRefetchIntervalMs, clock, log, proofs: this.proofs,
    });
    this.mirror.onSigningKeys((jwks, version, epoch) => { this.keys.replaceAnnounced(jwks, version, epoch); });
    this.cacheSize = localCacheSize;
    this.leewaySeconds = leewaySeconds;
    // audience -> token -> {claims, keys}: a token verified in full skips the signature
    // check until it expires or the key set changes; its binding (the proof) and
    // revocation are checked every time.
    this.verified = new Map();
    this.cached = 0;
  }

  /** The claims, or what must happen first (REFETCH_KEYS, ASK_AUTHORITY); throws InvalidToken
   * (InvalidProof for a bad proof). `proof`: the DPoP proof that came with the token. */
  decide(token, audience, proof) {
    const verifier = this.keys.verifier;
    if (verifier === null) return this.keys.claimRefetch() ? REFETCH_KEYS : ASK_AUTHORITY;
    let claims;
    try {
      claims = this.verifiedClaims(verifier, token, audience, proof);
    } catch (error) {
      // A kid newer than our set: its key may be on its way.
      if (error instanceof InvalidToken && error.reason === InvalidReason.UNKNOWN_KEY && this.keys.claimRefetch()) {
        return REFETCH_KEYS;
      }
      throw error;
    }
    return this.vouch(claims);
  }

  /** The verdict once the keys were fetched again. */
  afterRefetch(token, audience, proof) {
    const verifier = this.keys.verifier;
    if (verifier === null) return ASK_AUTHORITY;
    return this.vouch(this.verifiedClaims(verifier, token, audience, proof));
  }

  verifiedClaims(verifier, token, audience, proof) {
    const claims = this.tokenClaims(verifier, token, audience);
    // A token the mirror knows to be revoked (fresh or not: a revocation is final) is
    // refused before its proof's jti is spent.
    verifier.checkBinding(claims, token, proof, this.refuseKnownRevoked);
    return claims;
  }

  refuseKnownRevoked = (claims) => {
    const refusal = this.mirror.refusal(claims.sessionId, claims.tokenId);
    if (refusal !== null) throw refusal;
  };

  tokenClaims(verifier, token, audience) {
    if (this.cacheSize === 0) return verifier.verifyToken(token, audience);
    const byToken = this.verified.get(audience);
    const entry = byToken?.get(token);
    // Read the set before verifying: if it is replaced meanwhile, the entry is filed
    // under the older set and never served again.
    const keys = verifier.keys;
    if (entry !== undefined && entry.keys === keys && verifier.clock() < entry.expiresAt) return entry.claims;
    const claims = verifier.verifyToken(token, audience);
    if (this.cached >= this.cacheSize) {
      this.verified.clear(); // refills with the tokens in use; memory stays bounded
      this.cached = 0;
    }
    let map = this.verified.get(audience);
    if (map === undefined) this.verified.set(audience, (map = new Map()));
    if (!map.has(token)) this.cached++;
    map.set(token, { claims, keys, expiresAt: claims.expiresAt.getTime() / 1000 - this.leewaySeconds });
    return claims;
  }

  vouch(claims) {
    if (!this.mirror.isFresh()) return ASK_AUTHORITY;
    const refusal = this.mirror.refusal(claims.sessionId, claims.tokenId);
    if (refusal !== null) throw refusal;
    return claims;
  }

  /** The authority's answer, checked against what the mirror already knows. */
  answer(validation) {
    if (!validation.valid) throw refused(validation);
    // A revocation is final: one the mirror knows of wins over a replica that has not seen it.
    const refusal = this.mirror.refusal(validation.claims.sessionId, validation.claims.tokenId);
    if (refusal !== null) throw refusal;
    return validation.claims;
  }
}

/** The InvalidToken for a ValidateToken refusal, with its cause and replacing device. */
function refused(validation) {
  return new InvalidToken(validation.reason, {
    cause: validation.revocationCause,
    replacedByDeviceId: validation.replacedByDeviceId,
    replacedByDeviceName: validation.replacedByDeviceName,
  });
}

function unavailable(error, log) {
  log.warn?.(`could not check a token with the authority: ${error.name}`);
  return new Unavailable(UNAVAILABLE_MESSAGE);
}

/** Validates tokens in 'remote' or 'local' mode; start() before use, close() after. */
export class Validator {
  /**
   * @param {object} options client | target (+ clientOptions), mode ('remote' | 'local'),
   *   issuer, maxStalenessMs, leewaySeconds, keyRefetchIntervalMs, localCacheSize,
   *   proofMaxAge (seconds, default 60), proofReplayCacheSize (default 100,000), follow
   *   ({heartbeatIntervalMs, idleTimeoutMs, minBackoffMs, maxBackoffMs}), log. The numeric
   *   ones are checked in either mode: TypeError for one that is not a number, RangeError
   *   for one out of range (NaN and Infinity included), naming the option.
   */
  constructor({ client, target, clientOptions, mode = 'local', log = console, follow = {}, ...local } = {}) {
    if ((client === undefined) === (target === undefined)) throw new TypeError('give a client or a target, not both');
    if (mode !== 'remote' && mode !== 'local') throw new TypeError("mode must be 'remote' or 'local'");
    // Checked in remote mode too, where they are not used: a wrong one is wrong in either.
    checkLocalOptions(local);
    followSettings(follow);
    this.ownsClient = client === undefined;
    /** Whether close() was called: validate() and the rest then reject with Unavailable. */
    this.closed = false;
    this.client = client ?? new AuthorityClient(target, clientOptions);
    this.mode = mode;
    this.log = log;
    this.local = mode === 'local' ? new LocalVerification({ ...local, log }) : null;
    this.mirror = this.local?.mirror ?? null;
    this.follower = this.local ? new MirrorFollower(this.client, this.local.mirror, { ...follow, log }) : null;
  }

  /** Fetches the signing keys (local mode; a failure is retried later) and starts following.
   * Closed while it runs, it resolves and follows nothing; called after close(), it rejects
   * with Unavailable. */
  async start() {
    this.refuseIfClosed();
    if (this.local !== null) {
      try {
        await this.local.keys.replaceFetched(await this.client.getSigningKeySet());
      } catch (error) {
        if (!(error instanceof AuthorityError)) throw error;
        if (!this.closed) this.log.warn?.(`could not fetch the signing keys at start: ${error.name}`);
      }
      // close() came first: a follower started now would outlive it, on a closed channel.
      if (this.closed) return this;
      this.follower.start();
    }
    return this;
  }

  /** Resolves to whether the mirror can vouch within timeoutMs (at once in remote mode);
   * rejects with Unavailable once the validator is closed. */
  async waitUntilFresh(timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    this.refuseIfClosed();
    while (this.mirror !== null && !this.mirror.isFresh()) {
      this.refuseIfClosed();
      if (Date.now() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return true;
  }

  /** The token's claims; rejects with InvalidToken (InvalidProof for a proof refused
   * here) or Unavailable. `proof` ({proof, httpMethod, httpUri}): the DPoP proof that came
   * with the token and the request it came with; a bound token needs one. */
  async validate(token, audience, proof) {
    // '' would be the authority's default audience in remote mode and no token's in local mode.
    if (typeof audience !== 'string' || audience === '') throw new TypeError('validate needs an audience');
    this.refuseIfClosed();
    if (this.local === null) return this.remote(token, audience, proof);
    let step = this.local.decide(token, audience, proof);
    if (step === REFETCH_KEYS) {
      try {
        await this.local.keys.replaceFetched(await this.client.getSigningKeySet());
      } catch (error) {
        if (error instanceof AuthorityError) throw unavailable(error, this.log);
        throw error;
      }
      step = this.local.afterRefetch(token, audience, proof);
    }
    if (step === ASK_AUTHORITY) return this.local.answer(await this.ask(token, audience, proof));
    return step;
  }

  async remote(token, audience, proof) {
    const validation = await this.ask(token, audience, proof);
    if (!validation.valid) throw refused(validation);
    return validation.claims;
  }

  async ask(token, audience, proof) {
    try {
      return await this.client.validateToken(token, audience, proof === undefined ? {} : { proof });
    } catch (error) {
      // Only an empty token is INVALID_ARGUMENT to ValidateToken.
      if (error instanceof InvalidArgument) throw new InvalidToken(InvalidReason.MALFORMED);
      if (error instanceof AuthorityError) throw unavailable(error, this.log);
      throw error;
    }
  }

  refuseIfClosed() {
    if (this.closed) throw new Unavailable(CLOSED_MESSAGE);
  }

  /** Stops following the stream; closes the client if this validator made it. Every call
   * after it rejects with Unavailable. */
  async close() {
    this.closed = true;
    await this.follower?.stop();
    if (this.ownsClient) this.client.close();
  }
}
