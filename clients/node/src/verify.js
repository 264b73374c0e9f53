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
// 5. Claims (MALFORMED): exact types; no NUL in identifiers; no lone surrogate; no `cnf`.
// 6. Signature (BAD_SIGNATURE); ES256 low-S only.
// 7. Time (EXPIRED, NOT_YET_VALID) with the leeway; 8. issuer; 9. audience, exactly.
// Revocation is the caller's to check, against its mirror.

import { KeyObject, constants, verify as cryptoVerify } from 'node:crypto';
import { importJWK } from 'jose';

import { JsonError, parseObject } from './json.js';
import { InvalidReason } from './reasons.js';

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
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
// The last character of a segment whose length % 4 is 2 or 3 carries 4 or 2 unused bits,
// which must be zero: otherwise several strings decode to the same bytes.
const CANONICAL_LAST = [null, null, new Set('AQgw'), new Set('AEIMQUYcgkosw048')];
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551n;
const P256_HALF_ORDER = P256_ORDER >> 1n;
const STRING_CLAIMS = ['sub', 'sid', 'device_id', 'jti', 'iss'];
const TIME_CLAIMS = ['exp', 'iat', 'nbf'];

/** A token failed verification; `reason` names the step. The message never quotes the token. */
export class InvalidToken extends Error {
  /** For REVOKED, when known: the cause's name, and for a replacement the device that
   * signed in (its name only from ValidateToken: the stream carries the id alone). */
  constructor(reason, { cause, replacedByDeviceId = '', replacedByDeviceName = '' } = {}) {
    super(reason);
    this.name = 'InvalidToken';
    this.reason = reason;
    if (cause !== undefined) this.revocationCause = cause;
    this.replacedByDeviceId = replacedByDeviceId;
    this.replacedByDeviceName = replacedByDeviceName;
  }
}

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

function safeVerify(digest, data, key, signature) {
  try {
    return cryptoVerify(digest, data, key, signature);
  } catch {
    return false; // a signature OpenSSL cannot even parse verifies nothing
  }
}

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

function segment(token, start, end) {
  const size = end - start;
  const rest = size % 4;
  if (rest === 1 || (rest > 1 && !CANONICAL_LAST[rest].has(token[end - 1]))) throw malformed();
  return Buffer.from(token.slice(start, end), 'base64url');
}

function jsonObject(bytes) {
  try {
    return parseObject(UTF8.decode(bytes));
  } catch {
    throw malformed(); // bad UTF-8 (a TypeError) or bad JSON: no detail reaches the caller
  }
}

/** Verifies access tokens against a key set; see the steps at the top of this file. */
export class TokenVerifier {
  /**
   * @param {KeySet} keys assign `verifier.keys` to rotate, even while others verify
   * @param {{issuer: string, leeway?: number, clock?: () => number}} options
   *   leeway in seconds; clock in seconds since the epoch
   */
  constructor(keys, { issuer, leeway = 30, clock = () => Date.now() / 1000 }) {
    this.keys = keys;
    this.issuer = issuer;
    this.leeway = leeway;
    this.clock = clock;
  }

  /** The claims of a valid token for `audience`, or throws InvalidToken. Revocation is the caller's. */
  verify(token, audience) {
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

  /** Steps 1 to 6: the payload of a well-formed token with a good signature. */
  signedPayload(token) {
    if (typeof token !== 'string' || token.length > MAX_TOKEN_BYTES || !COMPACT_JWS.test(token)) throw malformed();
    const first = token.indexOf('.');
    const second = token.indexOf('.', first + 1);
    const headerBytes = segment(token, 0, first);
    const payloadBytes = segment(token, first + 1, second);
    const signature = segment(token, second + 1, token.length);
    const header = jsonObject(headerBytes).value;
    const parsed = jsonObject(payloadBytes);
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
    if (!key.verify(Buffer.from(token.slice(0, second), 'latin1'), signature)) {
      throw new InvalidToken(InvalidReason.BAD_SIGNATURE);
    }
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
  // A device-bound token is only good with a proof of its key, and nothing here checks
  // proofs yet: refused outright rather than accepted without one (no downgrade).
  if (Object.hasOwn(payload, 'cnf')) throw malformed();
  // NUL and surrogates can only be written as \u escapes, so most tokens skip this.
  if (payloadBytes.includes(BACKSLASH_U)) {
    if (STRING_CLAIMS.some((name) => payload[name].includes('\0'))
        || (typeof aud === 'string' && aud.includes('\0'))
        || Object.keys(payload).some((name) => name.includes('\0'))
        || parsed.loneSurrogate) {
      throw malformed();
    }
  }
}

/** What an access token says, once verified; the same shape as a remote answer's claims. */
function claimsOf(payload) {
  const extra = {};
  for (const name of Object.keys(payload)) {
    if (!RESERVED_CLAIMS.has(name)) {
      Object.defineProperty(extra, name, { value: payload[name], enumerable: true, writable: true, configurable: true });
    }
  }
  return {
    subject: payload.sub,
    deviceId: payload.device_id,
    sessionId: payload.sid,
    tokenId: payload.jti,
    issuer: payload.iss,
    audience: payload.aud,
    issuedAt: new Date(payload.iat * 1000),
    expiresAt: new Date(payload.exp * 1000),
    extra,
  };
}
