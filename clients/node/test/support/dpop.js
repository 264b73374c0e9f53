// Device keys and DPoP proofs for the tests, made with jose as a device would make them
// (generateKeyPair, SignJWT), and tokens signed with the shared corpus's test keys
// (tests/vectors/keys.json: they sign nothing real) for the verifier's own tests.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { SignJWT, base64url, calculateJwkThumbprint, exportJWK, generateKeyPair, importPKCS8 } from 'jose';

const VECTORS = new URL('../../../../tests/vectors/', import.meta.url);
export const corpus = JSON.parse(readFileSync(new URL('tokens.json', VECTORS), 'utf8'));
const corpusKeys = JSON.parse(readFileSync(new URL('keys.json', VECTORS), 'utf8')).keys;

/** base64url(SHA-256(token)), computed here independently of the package. */
export const ath = (token) => createHash('sha256').update(token, 'ascii').digest('base64url');

/** A device's key pair and the proofs it signs. */
export class Device {
  static async generate(algorithm = 'EdDSA') {
    const { publicKey, privateKey } = await generateKeyPair(algorithm, algorithm === 'RS256' ? { modulusLength: 2048 } : {});
    const jwk = await exportJWK(publicKey);
    return new Device(algorithm, privateKey, jwk, await calculateJwkThumbprint(jwk));
  }

  constructor(algorithm, privateKey, jwk, thumbprint) {
    this.algorithm = algorithm;
    this.privateKey = privateKey;
    this.jwk = jwk;
    this.thumbprint = thumbprint;
  }

  /** A proof for `method` and `uri`; `accessToken` adds ath; `header` and `claims` override
   * (a member set to undefined is left out). */
  async proof(method, uri, { accessToken, iat = Math.floor(Date.now() / 1000), jti = randomBytes(12).toString('base64url'), header = {}, claims = {} } = {}) {
    const payload = prune({ jti, htm: method, htu: uri, iat, ...(accessToken === undefined ? {} : { ath: ath(accessToken) }), ...claims });
    const protectedHeader = prune({ typ: 'dpop+jwt', alg: this.algorithm, jwk: this.jwk, ...header });
    return new SignJWT(payload).setProtectedHeader(protectedHeader).sign(this.privateKey);
  }

  /** {proof, httpMethod, httpUri}: a fresh proof with the request it came with. */
  async proofFor(method, uri, options = {}) {
    return { proof: await this.proof(method, options.htu ?? uri, options), httpMethod: method, httpUri: uri };
  }
}

function prune(object) {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined));
}

/** A compact JWS of `header` and `payload` signed by nothing: for proofs that must fail
 * before their signature is looked at. */
export function unsigned(header, payload, signature = 'c2ln') {
  const part = (value) => base64url.encode(JSON.stringify(value));
  return `${part(header)}.${part(payload)}.${signature}`;
}

/** An access token signed with the corpus's EdDSA key, verifiable with corpus.jwks.EdDSA;
 * `cnf` makes it bound. */
export async function corpusToken({ cnf, audience = 'api', now = Math.floor(Date.now() / 1000), ...claims } = {}) {
  const jwks = JSON.parse(corpus.jwks.EdDSA);
  const key = await importPKCS8(corpusKeys.EdDSA.own, 'EdDSA');
  const kid = jwks.keys[0].kid;
  const payload = {
    iss: corpus.issuer, sub: 'alice', aud: audience, iat: now, nbf: now, exp: now + 300,
    jti: randomBytes(12).toString('base64url'), sid: randomBytes(12).toString('base64url'), device_id: 'laptop',
    ...(cnf === undefined ? {} : { cnf }), ...claims,
  };
  return new SignJWT(payload).setProtectedHeader({ alg: 'EdDSA', kid, typ: 'at+jwt' }).sign(key);
}

/** Where the login service takes sign-ins and refreshes: the request a device's proof
 * for IssueToken and RefreshToken names. */
export const SIGN_IN_URI = 'https://login.example.com/sign-in';
export const REFRESH_URI = 'https://login.example.com/refresh';

/** Signs `subject` in on `deviceId` bound to `device`'s key (IssueToken with a proof). */
export async function signInBound(client, subject, deviceId, device, options = {}) {
  const issued = await client.issueToken(subject, deviceId, { ...options, proof: await device.proofFor('POST', SIGN_IN_URI) });
  if (issued.tokenType !== 'DPoP') {
    throw new Error(`the authority issued ${issued.tokenType} tokens for a sign-in with a proof: it does not bind sessions`);
  }
  return issued;
}
