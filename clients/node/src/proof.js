// Proofs of possession (DPoP, RFC 9449): the Node twin of the Python package's
// authority_client/proof.py, check for check and in the same order, with the same `check`
// names, so that the authority, the Python consumers and the Node consumers refuse the same
// proofs (the shared corpus, tests/vectors/tokens.json, holds them to it). Every failure is
// an InvalidProof (reason BAD_PROOF); the first one wins:
//
//   size      at most 8 KiB
//   form      compact JWS in canonical unpadded base64url, strict JSON (jws.js, json.js)
//   typ       dpop+jwt
//   alg       EdDSA, ES256 or RS256 (asymmetric only: never none, never HS256)
//   jwk       a public JWK (no private members) of the type and curve the alg needs;
//             RSA keys of at least 2048 bits
//   signature by that key; ES256 accepts high S (WebCrypto does not normalise it, and a
//             re-spelt proof keeps its jti, so the replay cache still sees it)
//   jti       a string of 1 to 256 characters
//   htm       the request's method, exactly
//   htu       the request's URI, both normalised (normalizeUri): no query, no fragment
//   iat       a number within now +- maxAge
//   ath       (with an access token) base64url(SHA-256(token))
//   key       (with a thumbprint) the proof's key has that RFC 7638 thumbprint
//   replayed  the (thumbprint, jti) pair was seen within the window
//   replay-cache-full  the cache is full of entries still in their window: refused
//             rather than forgetting a jti early
//
// The pair is recorded only once every other check passed. Server nonces (RFC 9449
// section 8) are not supported. Each process has its own cache: a replay within the
// window that reaches another process is not seen (see the README).
import { constants, createHash, createPublicKey } from 'node:crypto';

import { InvalidProof } from './invalid.js';
import { JwsFormError, decodeCompact, isCanonicalBase64url, safeVerify } from './jws.js';

export const PROOF_TYPE = 'dpop+jwt';
export const MAX_PROOF_BYTES = 8 * 1024;
/** The allow-list of proof algorithms; RS256 keys need at least 2048 bits. */
export const PROOF_ALGORITHMS = Object.freeze(['EdDSA', 'ES256', 'RS256']);
/** Seconds a proof's iat may be from now, either way. */
export const DEFAULT_MAX_AGE = 60;
export const DEFAULT_REPLAY_CACHE_SIZE = 100_000;
/** The authorization scheme of a bound token, and the token_type of one. */
export const DPOP_SCHEME = 'DPoP';
/** The HTTP header (and gRPC metadata key) a proof travels in, lower case. */
export const DPOP_HEADER = 'dpop';
const MAX_JTI_LENGTH = 256;
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
const MIN_RSA_BITS = 2048;
const P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551n;

// For each algorithm: the key it needs, the members that make up that key (RFC 7638's
// required members, in its order), and how a signature by it is checked.
const KINDS = {
  EdDSA: {
    kty: 'OKP', crv: 'Ed25519', members: ['crv', 'kty', 'x'],
    verify: (key, data, signature) => signature.length === 64 && safeVerify(null, data, key, signature),
  },
  ES256: {
    kty: 'EC', crv: 'P-256', members: ['crv', 'kty', 'x', 'y'],
    verify: (key, data, signature) => {
      if (signature.length !== 64) return false;
      const r = BigInt('0x' + signature.toString('hex', 0, 32));
      const s = BigInt('0x' + signature.toString('hex', 32, 64));
      if (!(r > 0n && r < P256_ORDER && s > 0n && s < P256_ORDER)) return false;
      return safeVerify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature);
    },
  },
  RS256: {
    kty: 'RSA', crv: undefined, members: ['e', 'kty', 'n'],
    verify: (key, data, signature) => safeVerify('sha256', data, { key, padding: constants.RSA_PKCS1_PADDING }, signature),
  },
};
// Coordinates of a fixed size: 32 bytes, 43 characters of unpadded base64url.
const FIXED_MEMBERS = { x: 43, y: 43 };

/** The RFC 7638 thumbprint (SHA-256, base64url) of a public JWK of one of the kinds above. */
export function jwkThumbprint(jwk) {
  const kind = Object.values(KINDS).find((k) => k.kty === jwk.kty && (k.crv === undefined || k.crv === jwk.crv));
  if (kind === undefined) throw new TypeError('a thumbprint is taken of an OKP Ed25519, EC P-256 or RSA key');
  const members = {};
  for (const name of kind.members) {
    if (typeof jwk[name] !== 'string') throw new TypeError(`the key's ${name} is not a string`);
    members[name] = jwk[name];
  }
  // The members in lexicographic order, no whitespace: exactly RFC 7638 section 3.
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url');
}

/** base64url(SHA-256(token)): a proof's ath for `token` (RFC 9449 section 4.2). */
export function accessTokenHash(token) {
  return createHash('sha256').update(token, 'latin1').digest('base64url');
}

// RFC 3986 appendix B, with the authority required.
const URI = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)(?:\?[^#]*)?(?:#.*)?$/s;
const AUTHORITY = /^(?:[^@]*@)?(\[[0-9A-Fa-f:.]+\]|[^:@[\]]*)(?::([0-9]*))?$/;
const DEFAULT_PORTS = { http: '80', https: '443' };
const UNRESERVED = /[A-Za-z0-9\-._~]/;
// What a path may hold (RFC 3986 pchar and "/"), or a percent-encoding.
const PATH = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*$/;
const HOST = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*$/;

/**
 * The URI as a proof's htu is compared (RFC 9449 section 4.3, RFC 3986 section 6):
 * scheme and host in lower case, the scheme's default port dropped, percent-encodings in
 * upper case and of unreserved characters decoded, dot segments removed, an empty path
 * "/", query and fragment dropped. TypeError unless it is an absolute http(s) URI.
 */
export function normalizeUri(uri) {
  const match = typeof uri === 'string' ? URI.exec(uri) : null;
  if (match === null) throw new TypeError('not an absolute URI');
  const scheme = match[1].toLowerCase();
  if (scheme !== 'http' && scheme !== 'https') throw new TypeError('not an http(s) URI');
  const authority = AUTHORITY.exec(match[2]);
  if (authority === null || authority[1] === '' || !(authority[1].startsWith('[') || HOST.test(authority[1]))) {
    throw new TypeError('not a host');
  }
  const host = percentEncodings(authority[1]).toLowerCase();
  const port = authority[2] === undefined || authority[2] === '' || authority[2] === DEFAULT_PORTS[scheme]
    ? '' : `:${authority[2]}`;
  if (!PATH.test(match[3])) throw new TypeError('not a path');
  const path = removeDotSegments(percentEncodings(match[3])) || '/';
  return `${scheme}://${host}${port}${path}`;
}

// RFC 3986 section 6.2.2.1 and 6.2.2.2: %7e is ~, %2f stays %2F.
function percentEncodings(text) {
  return text.replace(/%([0-9A-Fa-f]{2})/g, (_, hex) => {
    const char = String.fromCharCode(parseInt(hex, 16));
    return UNRESERVED.test(char) ? char : `%${hex.toUpperCase()}`;
  });
}

// RFC 3986 section 5.2.4.
function removeDotSegments(path) {
  let input = path;
  const output = [];
  while (input !== '') {
    if (input.startsWith('../')) input = input.slice(3);
    else if (input.startsWith('./')) input = input.slice(2);
    else if (input.startsWith('/./')) input = input.slice(2);
    else if (input === '/.') input = '/';
    else if (input.startsWith('/../')) { input = input.slice(3); output.pop(); }
    else if (input === '/..') { input = '/'; output.pop(); }
    else if (input === '.' || input === '..') input = '';
    else {
      const next = input.indexOf('/', input.startsWith('/') ? 1 : 0);
      const end = next === -1 ? input.length : next;
      output.push(input.slice(0, end));
      input = input.slice(end);
    }
  }
  return output.join('');
}

/** A gRPC call's htu: `https://<authority>/<pkg.Service>/<Method>` for grpc's method path
 * "/pkg.Service/Method". The htm of a gRPC call is always POST. */
export function grpcProofUri(authority, method) {
  return `https://${authority}${method.startsWith('/') ? '' : '/'}${method}`;
}

/** Checks proofs against the requests they came with, and keeps the replay cache. */
export class ProofChecker {
  /**
   * @param {{maxAge?: number, replayCacheSize?: number, clock?: () => number}} [options]
   *   maxAge in seconds (either way); replayCacheSize the (thumbprint, jti) pairs kept at
   *   most; clock in seconds since the epoch
   */
  constructor({ maxAge = DEFAULT_MAX_AGE, replayCacheSize = DEFAULT_REPLAY_CACHE_SIZE, clock = () => Date.now() / 1000 } = {}) {
    this.maxAge = maxAge;
    this.replayCacheSize = replayCacheSize;
    this.clock = clock;
    this.seen = new Map(); // thumbprint + ' ' + jti -> the end of its window (seconds)
    this.expiries = new MinHeap(); // [end of window, key], to drop the oldest first
  }

  /** The number of (thumbprint, jti) pairs in the replay cache. */
  get replayCacheEntries() {
    return this.seen.size;
  }

  /**
   * The RFC 7638 thumbprint of the proof's key, or throws InvalidProof. `proof` is
   * {proof, httpMethod, httpUri} (the proto's ProofOfPossession). With `accessToken` the
   * proof's ath must be its hash (validation); without (sign-in, refresh) ath is not
   * checked. With `keyThumbprint` the proof must be by that key.
   */
  check(proof, { accessToken, keyThumbprint } = {}) {
    const text = proof?.proof;
    if (typeof text === 'string' && (text.length > MAX_PROOF_BYTES || Buffer.byteLength(text) > MAX_PROOF_BYTES)) {
      throw new InvalidProof('size');
    }
    let jws;
    try {
      jws = decodeCompact(text);
    } catch (error) {
      if (error instanceof JwsFormError) throw new InvalidProof('form');
      throw error;
    }
    const { header, payload: { value: claims }, signature, signingInput } = jws;
    if (header.typ !== PROOF_TYPE) throw new InvalidProof('typ');
    const kind = typeof header.alg === 'string' && PROOF_ALGORITHMS.includes(header.alg) ? KINDS[header.alg] : undefined;
    if (kind === undefined) throw new InvalidProof('alg');
    const key = publicKey(header.jwk, kind);
    if (!kind.verify(key, signingInput, signature)) throw new InvalidProof('signature');
    const { jti } = claims;
    if (typeof jti !== 'string' || jti === '' || (jti.length > MAX_JTI_LENGTH && [...jti].length > MAX_JTI_LENGTH)) {
      throw new InvalidProof('jti');
    }
    if (typeof claims.htm !== 'string' || claims.htm !== proof.httpMethod) throw new InvalidProof('htm');
    if (!sameUri(claims.htu, proof.httpUri)) throw new InvalidProof('htu');
    const now = this.clock();
    const { iat } = claims;
    if (typeof iat !== 'number' || !(Math.abs(now - iat) <= this.maxAge)) throw new InvalidProof('iat');
    if (accessToken !== undefined && accessToken !== null && claims.ath !== accessTokenHash(accessToken)) {
      throw new InvalidProof('ath');
    }
    const thumbprint = jwkThumbprint(header.jwk);
    if (keyThumbprint !== undefined && keyThumbprint !== null && thumbprint !== keyThumbprint) {
      throw new InvalidProof('key');
    }
    this.record(`${thumbprint} ${jti}`, iat + this.maxAge, now);
    return thumbprint;
  }

  record(pair, endOfWindow, now) {
    const seenUntil = this.seen.get(pair);
    if (seenUntil !== undefined && seenUntil >= now) throw new InvalidProof('replayed');
    this.forgetExpired(now);
    if (this.seen.size >= this.replayCacheSize) throw new InvalidProof('replay-cache-full');
    this.seen.set(pair, endOfWindow);
    this.expiries.push([endOfWindow, pair]);
  }

  forgetExpired(now) {
    for (let oldest = this.expiries.peek(); oldest !== undefined && oldest[0] < now; oldest = this.expiries.peek()) {
      this.expiries.pop();
      // Only the entry of that window: a pair recorded again later keeps its new one.
      if (this.seen.get(oldest[1]) === oldest[0]) this.seen.delete(oldest[1]);
    }
  }
}

function publicKey(jwk, kind) {
  if (jwk === null || typeof jwk !== 'object' || Array.isArray(jwk)
      || PRIVATE_MEMBERS.some((name) => Object.hasOwn(jwk, name))
      || jwk.kty !== kind.kty || (kind.crv !== undefined && jwk.crv !== kind.crv)) {
    throw new InvalidProof('jwk');
  }
  const members = {};
  for (const name of kind.members) {
    const value = jwk[name];
    if (!isCanonicalBase64url(value) && name !== 'kty' && name !== 'crv') throw new InvalidProof('jwk');
    if (FIXED_MEMBERS[name] !== undefined && value.length !== FIXED_MEMBERS[name]) throw new InvalidProof('jwk');
    members[name] = value;
  }
  let key;
  try {
    key = createPublicKey({ key: members, format: 'jwk' });
  } catch {
    throw new InvalidProof('jwk'); // not a point of the curve, not an RSA key
  }
  if (kind.kty === 'RSA' && !(key.asymmetricKeyDetails.modulusLength >= MIN_RSA_BITS)) throw new InvalidProof('jwk');
  return key;
}

function sameUri(htu, requestUri) {
  if (typeof htu !== 'string') return false;
  try {
    return normalizeUri(htu) === normalizeUri(requestUri);
  } catch {
    return false;
  }
}

/** A binary min-heap of [number, value] pairs, by the number. */
class MinHeap {
  constructor() {
    this.items = [];
  }

  peek() {
    return this.items[0];
  }

  push(item) {
    const items = this.items;
    let i = items.push(item) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent][0] <= item[0]) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = item;
  }

  pop() {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= items.length) break;
        const child = left + 1 < items.length && items[left + 1][0] < items[left][0] ? left + 1 : left;
        if (items[child][0] >= last[0]) break;
        items[i] = items[child];
        i = child;
      }
      items[i] = last;
    }
    return top;
  }
}
