// The strict reading of a compact JWS shared by the token verifier (verify.js) and the
// proof checker (proof.js), as the Python package's authority_client/jws.py: three
// segments of canonical unpadded base64url, header and payload strict UTF-8 JSON objects
// (json.js). One spelling per value: a token or proof that decodes to the same bytes as
// another, but is written differently, is refused rather than read.

import { verify as cryptoVerify } from 'node:crypto';

import { parseObject } from './json.js';

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const BASE64URL = /^[A-Za-z0-9_-]*$/;
// The last character of a segment whose length % 4 is 2 or 3 carries 4 or 2 unused bits,
// which must be zero: otherwise several strings decode to the same bytes.
const CANONICAL_LAST = [null, null, new Set('AQgw'), new Set('AEIMQUYcgkosw048')];
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** A JWS that is not in canonical compact form, or not strict JSON; carries no part of it. */
export class JwsFormError extends Error {}

/** Whether `text` is canonical unpadded base64url (the bits past the last byte zero). */
export function isCanonicalBase64url(text) {
  if (typeof text !== 'string' || !BASE64URL.test(text)) return false;
  const rest = text.length % 4;
  return rest === 0 || (rest !== 1 && CANONICAL_LAST[rest].has(text[text.length - 1]));
}

function segment(text, start, end) {
  const rest = (end - start) % 4;
  if (rest === 1 || (rest > 1 && !CANONICAL_LAST[rest].has(text[end - 1]))) throw new JwsFormError();
  return Buffer.from(text.slice(start, end), 'base64url');
}

function jsonObject(bytes) {
  try {
    return parseObject(UTF8.decode(bytes));
  } catch {
    throw new JwsFormError(); // bad UTF-8 (a TypeError) or bad JSON: no detail reaches the caller
  }
}

/**
 * The parts of a compact JWS: `header` (the object), `payload` (parseObject's answer:
 * value, integerNames, loneSurrogate, nulName), `payloadBytes`, `signature` and `signingInput`
 * (the bytes the signature covers). Throws JwsFormError; the caller checks the size first.
 */
export function decodeCompact(text) {
  if (typeof text !== 'string' || !COMPACT_JWS.test(text)) throw new JwsFormError();
  const first = text.indexOf('.');
  const second = text.indexOf('.', first + 1);
  const headerBytes = segment(text, 0, first);
  const payloadBytes = segment(text, first + 1, second);
  const signature = segment(text, second + 1, text.length);
  return {
    header: jsonObject(headerBytes).value,
    payload: jsonObject(payloadBytes),
    payloadBytes,
    signature,
    signingInput: Buffer.from(text.slice(0, second), 'latin1'),
  };
}

/** node:crypto's verify, false for a signature OpenSSL cannot even parse (it verifies nothing). */
export function safeVerify(digest, data, key, signature) {
  try {
    return cryptoVerify(digest, data, key, signature);
  } catch {
    return false;
  }
}
