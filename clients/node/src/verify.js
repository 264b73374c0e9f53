// Verify access tokens of the token authority, in process and without I/O: the Node twin
// of the Python `authority_client.verify.TokenVerifier`, step for step, so the authority,
// the Python consumer and the Node consumer refuse the same tokens for the same reason
// (the shared corpus, tests/vectors/tokens.json in the repository, holds them to it).
//
// 1. Shape (MALFORMED): at most 8 KiB; three segments of canonical unpadded base64url;
//    header and payload strict UTF-8 JSON objects (see json.js).
// 2. Header (MALFORMED): typ at+jwt, kid and alg strings, none of the headers that let a
//    token pick its own key or add rules.
// 3. Key (UNKNOWN_KEY): kid names a key of the set.
// 4. Algorithm (BAD_SIGNATURE): alg is the key's; the key decides, never the header.
// 5. Claims (MALFORMED): exact types; no NUL in identifiers or in a name at any depth; no
//    lone surrogate; `cnf` only as {"jkt": <43 characters of base64url>}.
// 6. Signature (BAD_SIGNATURE); ES256 low-S only.
// 7. Time (EXPIRED, NOT_YET_VALID) with the leeway; 8. issuer; 9. audience, exactly.
// 10. Binding (checkBinding): a token bound to a device key (cnf.jkt) needs a proof by that
//    key (PROOF_REQUIRED without one, BAD_PROOF for a bad one, proof.js); a proof with an
//    unbound token is BAD_PROOF too. No downgrade: a bound token is never a bearer token.
// Revocation is the caller's to check, against its mirror, after all of these.

import { KeyObject, constants } from 'node:crypto';
import { importJWK } from 'jose';

import { JsonError, frozen, parseObject, readOnlyDate } from './json.js';
import { JwsFormError, decodeCompact, isCanonicalBase64url, safeVerify } from './jws.js';
import { InvalidProof, InvalidToken } from './invalid.js';
import { MAX_DURATION_SECONDS, checkNumber } from './options.js';
import { ProofChecker } from './proof.js';
import { InvalidReason } from './reasons.js';

export { InvalidProof, InvalidToken };

export const MAX_TOKEN_BYTES = 8 * 1024;
export const ACCESS_TOKEN_TYPE = 'at+jwt';
/** Claims with a meaning of their own: never application claims. */
export const RESERVED_CLAIMS = new Set([
  'iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti', 'sid', 'device_id', 'typ', 'cnf', 'act', 'azp', 'client_id',
]);
/** Headers that would let a token choose its own verification key, or add rules. */
export const FORBIDDEN_HEADERS = Object.freeze(['jku', 'x5u', 'jwk', 'x5c', 'x5t', 'x5t#S256', 'crit']);
// The latest second a protobuf Timestamp holds (9999-12-31T23:59:59Z).
const MAX_TIME = 253_402_300_799;
const P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551n;
const P256_HALF_ORDER = P256_ORDER >> 1n;
const STRING_CLAIMS = ['sub', 'sid', 'device_id', 'jti', 'iss'];
const TIME_CLAIMS = ['exp', 'iat', 'nbf'];

const malformed = () => new InvalidToken(InvalidReason.MALFORMED);

/** A public key and the one algorithm it verifies. */
export class VerificationKey {
  constructor(kid, algorithm, keyObject) {
    this.kid = kid;
    this.algorithm = algorithm;
    this.keyObject = keyObject;
    this.verify = VERIFIERS[algorithm](keyObject);
  }
}

const VERIFIERS = {
  EdDSA: (key) => (data, signature) => signature.length === 64 && safeVerify(null, data, key, signature),
  ES256: (key) => {
    const options = { key, dsaEncoding: 'ieee-p1363' };
    return (data, signature) => {
      if (signature.length !== 64) return false;
      const r = BigInt('0x' + signature.toString('hex', 0, 32));
      const s = BigInt('0x' + signature.toString('hex', 32, 64));
      // Low S only: (r, n - s) verifies as well as (r, s), and a token has one spelling.
      if (!(r > 0n && r < P256_ORDER && s > 0n && s <= P256_HALF_ORDER)) return false;
      return safeVerify('sha256', data, options, signature);
    };
  },
  RS256: (key) => {
    const options = { key, padding: constants.RSA_PKCS1_PADDING };
    return (data, signature) => safeVerify('sha256', data, options, signature);
  },
};


// Key types, curves and algorithms a JWK Set may hold; others are skipped, not refused.
const JWK_KINDS = new Set(['OKP/Ed25519/EdDSA', 'EC/P-256/ES256', 'RSA//RS256']);
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

/** An immutable set of public verification keys, by kid. */
export class KeySet {
  constructor(keys = []) {
    this.byKid = new Map();
    for (const key of keys) {
      if (this.byKid.has(key.kid)) throw new Error(`two keys named ${key.kid}`);
      this.byKid.set(key.kid, key);
    }
    this.kids = [...this.byKid.keys()].sort();
    Object.freeze(this);
  }

  /** The keys of a JWK Set (GetSigningKeys); keys of other kinds are skipped; a set that
   * is not well-formed rejects with an Error. */
  static async fromJwks(jwksJson) {
    let document;
    try {
      document = parseObject(jwksJson).value;
    } catch (error) {
      if (error instanceof JsonError) throw new Error('the JWK set is not well-formed JSON');
      throw error;
    }
    const keys = document.keys;
    if (!Array.isArray(keys) || !keys.every((jwk) => jwk !== null && typeof jwk === 'object' && !Array.isArray(jwk))) {
      throw new Error('a JWK set is an object with a list of keys');
    }
    const parsed = await Promise.all(keys.map(fromJwk));
    return new KeySet(parsed.filter((key) => key !== null));
  }

  /** The key named `kid`, or undefined. */
  get(kid) {
    return this.byKid.get(kid);
  }

  /** This set but the keys named in `kids`. */
  without(kids) {
    const leftOut = new Set(kids);
    return new KeySet([...this.byKid.values()].filter((key) => !leftOut.has(key.kid)));
  }

  get size() {
    return this.byKid.size;
  }
}

async function fromJwk(jwk) {
  const members = [jwk.kty, jwk.crv, jwk.alg];
  if (!members.every((member) => member === undefined || typeof member === 'string')) return null;
  if (!JWK_KINDS.has(members.map((member) => member ?? '').join('/')) || (jwk.use ?? 'sig') !== 'sig') return null;
  if (PRIVATE_MEMBERS.some((name) => Object.hasOwn(jwk, name))) {
    throw new Error('a JWK set of verification keys must not hold private keys');
  }
  if (typeof jwk.kid !== 'string' || jwk.kid === '') throw new Error('a key needs a kid');
  let keyObject;
  try {
    keyObject = KeyObject.from(await importJWK(jwk, jwk.alg));
  } catch {
    throw new Error(`key ${jwk.kid} is not a valid ${jwk.kty} JWK`);
  }
  if (jwk.alg === 'RS256' && keyObject.asymmetricKeyDetails.modulusLength < 2048) {
    throw new Error(`key ${jwk.kid}: an RS256 key needs at least 2048 bits`);
  }
  return new VerificationKey(jwk.kid, jwk.alg, keyObject);
}

/** Verifies access tokens against a key set; see the steps at the top of this file. */
export class TokenVerifier {
  /**
   * @param {KeySet} keys assign `verifier.keys` to rotate, even while others verify
   * @param {{issuer: string, leeway?: number, clock?: () => number, proofs?: ProofChecker}} options
   *   leeway in seconds; clock in seconds since the epoch; proofs the checker of proofs
   *   (and its replay cache), by default one of its own on the same clock
   */
  constructor(keys, { issuer, leeway = 30, clock = () => Date.now() / 1000, proofs }) {
    this.keys = keys;
    this.issuer = issuer;
    this.leeway = checkNumber('leeway', leeway, { max: MAX_DURATION_SECONDS });
    this.clock = clock;
    this.proofs = proofs ?? new ProofChecker({ clock });
  }

  /** The claims of a valid token for `audience`, with `proof` ({proof, httpMethod,
   * httpUri}: the DPoP proof and the request it came with) for a bound token; throws
   * InvalidToken (InvalidProof for a bad proof). Revocation is the caller's. */
  verify(token, audience, proof) {
    const claims = this.verifyToken(token, audience);
    this.checkBinding(claims, token, proof);
    return claims;
  }

  /** Steps 1 to 9, without the binding: the claims of a token that says what it is for.
   * Only for callers that then call checkBinding (a cache of verified tokens does, on every
   * hit: a proof is good once). */
  verifyToken(token, audience) {
    const payload = this.signedPayload(token);
    const now = this.clock();
    if (payload.exp <= now - this.leeway) throw new InvalidToken(InvalidReason.EXPIRED);
    if (payload.nbf > now + this.leeway || payload.iat > now + this.leeway) {
      throw new InvalidToken(InvalidReason.NOT_YET_VALID);
    }
    if (payload.iss !== this.issuer) throw new InvalidToken(InvalidReason.WRONG_ISSUER);
    if (payload.aud !== audience) throw new InvalidToken(InvalidReason.WRONG_AUDIENCE);
    return claimsOf(payload);
  }

  /** Step 10: a bound token (claims.keyThumbprint) needs a good proof by its key, whose
   * ath is the hash of `token` (PROOF_REQUIRED without one); a proof with an unbound
   * token is BAD_PROOF ("unbound"). Throws InvalidToken or InvalidProof. `admit`, if
   * given, is called with `claims` once the proof passed and before its jti is spent, and
   * may throw to refuse the token (a validator's revocation check). */
  checkBinding(claims, token, proof, admit) {
    if (claims.keyThumbprint !== '') {
      if (proof === undefined || proof === null) throw new InvalidToken(InvalidReason.PROOF_REQUIRED);
      const beforeSpending = admit === undefined ? undefined : () => admit(claims);
      this.proofs.check(proof, { accessToken: token, keyThumbprint: claims.keyThumbprint, beforeSpending });
    } else if (proof !== undefined && proof !== null) {
      throw new InvalidProof('unbound');
    }
  }

  /** Steps 1 to 6: the payload of a well-formed token with a good signature. */
  signedPayload(token) {
    if (typeof token !== 'string' || token.length > MAX_TOKEN_BYTES) throw malformed();
    let jws;
    try {
      jws = decodeCompact(token);
    } catch (error) {
      if (error instanceof JwsFormError) throw malformed();
      throw error;
    }
    const { header, payload: parsed, payloadBytes, signature, signingInput } = jws;
    const payload = parsed.value;

    const { kid, alg } = header;
    if (header.typ !== ACCESS_TOKEN_TYPE || typeof kid !== 'string' || typeof alg !== 'string'
        || FORBIDDEN_HEADERS.some((name) => Object.hasOwn(header, name))) {
      throw malformed();
    }
    const key = this.keys.get(kid);
    if (key === undefined) throw new InvalidToken(InvalidReason.UNKNOWN_KEY);
    if (alg !== key.algorithm) throw new InvalidToken(InvalidReason.BAD_SIGNATURE);
    checkClaims(payload, parsed, payloadBytes);
    if (!key.verify(signingInput, signature)) throw new InvalidToken(InvalidReason.BAD_SIGNATURE);
    return payload;
  }
}

const BACKSLASH_U = Buffer.from('\\u');

function checkClaims(payload, parsed, payloadBytes) {
  for (const name of STRING_CLAIMS) {
    if (typeof payload[name] !== 'string' || !Object.hasOwn(payload, name)) throw malformed();
  }
  for (const name of TIME_CLAIMS) {
    const value = payload[name];
    // Written as an integer: 1e10 and 300.0 are floats to every other verifier.
    if (!parsed.integerNames.has(name) || !(value >= 0 && value <= MAX_TIME)) throw malformed();
  }
  // RFC 7519 lets aud be a string or a list; anything else is no audience at all.
  const aud = payload.aud;
  if (typeof aud !== 'string' && !Array.isArray(aud)) throw malformed();
  // A device-bound token names its key by thumbprint, and only so: a cnf this verifier
  // cannot hold a proof against (x5t#S256, jwk, extra members) is no token of ours.
  if (Object.hasOwn(payload, 'cnf') && !isKeyConfirmation(payload.cnf)) throw malformed();
  // NUL and surrogates can only be written as \u escapes, so most tokens skip this.
  if (payloadBytes.includes(BACKSLASH_U)) {
    if (STRING_CLAIMS.some((name) => payload[name].includes('\0'))
        || (typeof aud === 'string' && aud.includes('\0'))
        || parsed.nulName
        || parsed.loneSurrogate) {
      throw malformed();
    }
  }
}

/** {"jkt": <a SHA-256 thumbprint in canonical base64url>}, and nothing else. */
function isKeyConfirmation(cnf) {
  if (cnf === null || typeof cnf !== 'object' || Array.isArray(cnf)) return false;
  const names = Object.keys(cnf);
  return names.length === 1 && names[0] === 'jkt' && typeof cnf.jkt === 'string' && cnf.jkt.length === 43
    && isCanonicalBase64url(cnf.jkt);
}

/** What an access token says, once verified; the same shape as a remote answer's claims. */
function claimsOf(payload) {
  const extra = {};
  for (const name of Object.keys(payload)) {
    if (!RESERVED_CLAIMS.has(name)) {
      Object.defineProperty(extra, name, { value: payload[name], enumerable: true, writable: true, configurable: true });
    }
  }
  return frozen({
    subject: payload.sub,
    deviceId: payload.device_id,
    sessionId: payload.sid,
    tokenId: payload.jti,
    issuer: payload.iss,
    audience: payload.aud,
    issuedAt: readOnlyDate(payload.iat * 1000),
    expiresAt: readOnlyDate(payload.exp * 1000),
    /** The RFC 7638 thumbprint of the device key the token is bound to; '' for a bearer token. */
    keyThumbprint: payload.cnf?.jkt ?? '',
    extra,
  });
}
