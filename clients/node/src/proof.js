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
//   jwk       a public JWK (no private members) of the type and curve the alg needs, in
//             its one canonical spelling; RSA of 2048 to 8192 bits, exponent <= 32 bits
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
//   replay-quota  the proof's key already holds perKeyLimit entries still in their window
//             (so one key cannot fill the cache and lock every other key out)
//
// The pair is recorded only once every other check passed. Server nonces (RFC 9449
// section 8) are not supported. Each process has its own cache: a replay within the
// window that reaches another process is not seen (see the README).
import { constants, createHash, createPublicKey } from 'node:crypto';

import { InvalidProof } from './invalid.js';
import { JwsFormError, decodeCompact, isCanonicalBase64url, safeVerify } from './jws.js';
import { MAX_DURATION_SECONDS, MAX_ENTRIES, checkNumber } from './options.js';

export const PROOF_TYPE = 'dpop+jwt';
export const MAX_PROOF_BYTES = 8 * 1024;
/** The allow-list of proof algorithms; RS256 keys have 2048 to 8192 bits. */
export const PROOF_ALGORITHMS = Object.freeze(['EdDSA', 'ES256', 'RS256']);
/** Seconds a proof's iat may be from now, either way. */
export const DEFAULT_MAX_AGE = 60;
export const DEFAULT_REPLAY_CACHE_SIZE = 100_000;
// The default per-key quota is the replay cache's size divided by this (at least 1).
const PER_KEY_SHARE = 10;
/** The authorization scheme of a bound token, and the token_type of one. */
export const DPOP_SCHEME = 'DPoP';
/** The HTTP header (and gRPC metadata key) a proof travels in, lower case. */
export const DPOP_HEADER = 'dpop';
const MAX_JTI_LENGTH = 256;
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
const MIN_RSA_BITS = 2048;
const MAX_RSA_BITS = 8192;
const MAX_RSA_EXPONENT_BITS = 32;
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
// Coordinates of 32 bytes: 43 characters of unpadded base64url.
const COORDINATE_LENGTH = 43;

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

const DEFAULT_PORTS = { http: '80', https: '443' };
// scheme://authority path ?query #fragment (RFC 3986 appendix B, the authority required).
const ABSOLUTE = /^([^:/?#]+):\/\/([^/?#]*)([^?#]*)(?:\?[^#]*)?(?:#.*)?$/s;
const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*$/;
const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]]+)(?::([0-9]*))?$/;
const REG_NAME = /^(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})+$/;
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;
// What a path may hold as it is (RFC 3986 pchar and "/"), besides percent-encodings.
const PATH_CHARACTER = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/]$/;
const PERCENT = /%([0-9A-Fa-f]{2})/g;
const HEX2 = /^[0-9A-Fa-f]{2}$/;
// Whitespace and control characters (and DEL): refused, never dropped.
const CONTROL = /[\u0000-\u0020\u007f]/;

/**
 * The URI as a proof's htu is compared (RFC 9449 section 4.3; RFC 3986 sections 6.2.2
 * and 6.2.3), exactly as the Python package's normalize_uri: scheme and host in lower
 * case; the scheme's default port (and an empty port) dropped; percent-encodings in upper
 * case, those of unreserved characters decoded, characters a URI may not hold encoded as
 * their UTF-8; dot segments removed; an empty path "/"; query and fragment dropped.
 * TypeError unless it is an absolute http(s) URI with a host and no user information.
 */
export function normalizeUri(uri) {
  if (typeof uri !== 'string' || CONTROL.test(uri)) throw new TypeError('a URI has no whitespace or control characters');
  const match = ABSOLUTE.exec(uri);
  if (match === null || !SCHEME.test(match[1])) throw new TypeError('not an absolute URI');
  const scheme = match[1].toLowerCase();
  if (!Object.hasOwn(DEFAULT_PORTS, scheme)) throw new TypeError('not an http or https URI');
  const authority = match[2];
  if (authority.includes('@')) throw new TypeError('a request URI has no user information');
  const hostPort = HOST_PORT.exec(authority);
  if (hostPort === null) throw new TypeError('not a valid host and port');
  let host = hostPort[1];
  if (!host.startsWith('[') && !REG_NAME.test(host)) throw new TypeError('not a valid host');
  host = normalizePercent(host).toLowerCase();
  const given = hostPort[2] ?? '';
  const port = given.replace(/^0+/, '') || (given ? '0' : '');
  if (port && Number(port) > 65535) throw new TypeError('not a valid port');
  const portPart = port === '' || port === DEFAULT_PORTS[scheme] ? '' : `:${port}`;
  const path = removeDotSegments(normalizePercent(encodePath(match[3]))) || '/';
  return `${scheme}://${host}${portPart}${path}`;
}

function encodePath(path) {
  let out = '';
  let index = 0;
  for (const char of path) {
    if (PATH_CHARACTER.test(char) || (char === '%' && HEX2.test(path.slice(index + 1, index + 3)))) {
      out += char;
    } else {
      // Not valid in a URI as it stands (a stray %, non-ASCII, "\"): its UTF-8, encoded.
      if (!char.isWellFormed()) throw new TypeError('a URI is text with a UTF-8 form');
      out += [...Buffer.from(char, 'utf8')].map((byte) => `%${byte.toString(16).toUpperCase().padStart(2, '0')}`).join('');
    }
    index += char.length;
  }
  return out;
}

// RFC 3986 sections 6.2.2.1 and 6.2.2.2: %7e is ~, %2f stays %2F.
function normalizePercent(text) {
  return text.replace(PERCENT, (_, hex) => {
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
 * "/pkg.Service/Method"; TypeError for a method that does not start with "/". The htm of a
 * gRPC call is always POST. */
export function grpcProofUri(authority, method) {
  if (typeof method !== 'string' || !method.startsWith('/')) throw new TypeError('a gRPC method name starts with /');
  return `https://${authority}${method}`;
}

/** Checks proofs against the requests they came with, and keeps the replay cache. */
export class ProofChecker {
  /**
   * @param {{maxAge?: number, replayCacheSize?: number, perKeyLimit?: number, clock?: () => number}} [options]
   *   maxAge in seconds (either way); replayCacheSize the (thumbprint, jti) pairs kept at
   *   most; perKeyLimit those of one key thumbprint at most (default
   *   max(1, floor(replayCacheSize / PER_KEY_SHARE))); clock in seconds since the epoch
   */
  constructor({
    maxAge = DEFAULT_MAX_AGE, replayCacheSize = DEFAULT_REPLAY_CACHE_SIZE, perKeyLimit, clock = () => Date.now() / 1000,
  } = {}) {
    checkNumber('maxAge', maxAge, { above: true, max: MAX_DURATION_SECONDS });
    checkNumber('replayCacheSize', replayCacheSize, { min: 1, max: MAX_ENTRIES, integer: true });
    const limit = perKeyLimit === undefined ? Math.max(1, Math.floor(replayCacheSize / PER_KEY_SHARE)) : perKeyLimit;
    checkNumber('perKeyLimit', limit, { min: 1, max: MAX_ENTRIES, integer: true });
    this.maxAge = maxAge;
    this.replayCacheSize = replayCacheSize;
    this.perKeyLimit = limit;
    this.clock = clock;
    this.seen = new Map(); // thumbprint + ' ' + jti -> the end of its window (seconds)
    this.expiries = new MinHeap(); // [end of window, key, thumbprint], to drop the oldest first
    // thumbprint -> how many of its pairs are in `seen` (absent for none), kept in step
    // with `seen` so the quota costs O(1) per check.
    this.perKey = new Map();
  }

  /** The number of (thumbprint, jti) pairs in the replay cache. */
  get replayCacheEntries() {
    return this.seen.size;
  }

  /**
   * The RFC 7638 thumbprint of the proof's key, or throws InvalidProof. `proof` is
   * {proof, httpMethod, httpUri} (the proto's ProofOfPossession). With `accessToken` the
   * proof's ath must be its hash (validation); without (sign-in, refresh) ath is not
   * checked. With `keyThumbprint` the proof must be by that key. `beforeSpending`, if
   * given, is called once every other check passed and before the jti is recorded: what
   * it throws reaches the caller and the proof stays unspent (validators refuse a revoked
   * token there, so a signed-out device's calls use none of its key's quota).
   */
  check(proof, { accessToken, keyThumbprint, beforeSpending } = {}) {
    const text = proof?.proof;
    // Characters, as Python counts them (code points, not UTF-16 units).
    if (typeof text !== 'string' || (text.length > MAX_PROOF_BYTES && [...text].length > MAX_PROOF_BYTES)) {
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
    // No extension is understood here (RFC 7515 section 4.1.11).
    if (Object.hasOwn(header, 'crit')) throw new InvalidProof('form');
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
    if (typeof iat !== 'number' || !(now - this.maxAge <= iat && iat <= now + this.maxAge)) throw new InvalidProof('iat');
    if (accessToken !== undefined && accessToken !== null
        && (typeof claims.ath !== 'string' || claims.ath !== accessTokenHash(accessToken))) {
      throw new InvalidProof('ath');
    }
    const thumbprint = jwkThumbprint(header.jwk);
    if (keyThumbprint !== undefined && keyThumbprint !== null && thumbprint !== keyThumbprint) {
      throw new InvalidProof('key');
    }
    if (beforeSpending !== undefined) beforeSpending();
    this.record(thumbprint, jti, iat + this.maxAge, now);
    return thumbprint;
  }

  record(thumbprint, jti, endOfWindow, now) {
    const { seen, expiries, perKey } = this;
    for (let oldest = expiries.peek(); oldest !== undefined && oldest[0] < now; oldest = expiries.peek()) {
      expiries.pop();
      if ((seen.get(oldest[1]) ?? now) < now) {
        seen.delete(oldest[1]);
        const left = perKey.get(oldest[2]) - 1;
        if (left > 0) perKey.set(oldest[2], left);
        else perKey.delete(oldest[2]);
      }
    }
    const pair = `${thumbprint} ${jti}`;
    if (seen.has(pair)) throw new InvalidProof('replayed');
    // Full of pairs still in the window: forgetting one early would let its proof be
    // replayed, so new proofs are refused until some expire.
    if (seen.size >= this.replayCacheSize) throw new InvalidProof('replay-cache-full');
    // A key at its quota is refused on its own account, before it can take the whole
    // cache from the other keys.
    const held = perKey.get(thumbprint) ?? 0;
    if (held >= this.perKeyLimit) throw new InvalidProof('replay-quota');
    seen.set(pair, endOfWindow);
    perKey.set(thumbprint, held + 1);
    expiries.push([endOfWindow, pair, thumbprint]);
  }
}

// The proof's key, in its one canonical spelling (as the Python package's jwk.py), so one
// key has one thumbprint: coordinates of exactly 32 bytes, RSA numbers without leading
// zero octets, everything canonical base64url.
function publicKey(jwk, kind) {
  if (jwk === null || typeof jwk !== 'object' || Array.isArray(jwk)
      || PRIVATE_MEMBERS.some((name) => Object.hasOwn(jwk, name))
      || jwk.kty !== kind.kty || (kind.crv !== undefined && jwk.crv !== kind.crv)) {
    throw new InvalidProof('jwk');
  }
  const members = { kty: jwk.kty };
  if (kind.kty === 'RSA') {
    const n = unsigned(jwk.n);
    const e = unsigned(jwk.e);
    // What an RSA public key can be at all (as cryptography's RSAPublicNumbers checks).
    // Bounds on the work one proof can ask for: a modulus past 8192 bits or an exponent past
    // 32 bits makes a single signature check slow.
    const bits = n.toString(2).length;
    if (bits < MIN_RSA_BITS || bits > MAX_RSA_BITS || e.toString(2).length > MAX_RSA_EXPONENT_BITS) throw new InvalidProof('jwk');
    if (e < 3n || e >= n || e % 2n === 0n) throw new InvalidProof('jwk');
    Object.assign(members, { n: jwk.n, e: jwk.e });
  } else {
    for (const name of kind.members.filter((member) => member === 'x' || member === 'y')) {
      if (!isCanonicalBase64url(jwk[name]) || jwk[name].length !== COORDINATE_LENGTH) throw new InvalidProof('jwk');
      members[name] = jwk[name];
    }
    members.crv = jwk.crv;
  }
  try {
    return createPublicKey({ key: members, format: 'jwk' });
  } catch {
    throw new InvalidProof('jwk'); // not a point of the curve
  }
}

// An RSA number: canonical base64url, big-endian, no leading zero octet (RFC 7518 6.3.1).
function unsigned(member) {
  if (!isCanonicalBase64url(member)) throw new InvalidProof('jwk');
  const bytes = Buffer.from(member, 'base64url');
  if (bytes.length === 0 || bytes[0] === 0) throw new InvalidProof('jwk');
  return BigInt('0x' + bytes.toString('hex'));
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
