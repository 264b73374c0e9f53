// The one table of texts a person is shown for a refused token or request: the same table
// as the Python package's authority_client/reasons.py. The shared corpus (tests/vectors in
// the repository) carries each reason's, each revocation cause's and each request
// problem's text, and what a refused call and a signed-out device are told for each; the
// Node suite checks this table and these functions against it, so the surfaces cannot
// drift apart. A text never quotes the token.

/** Why a token is not valid; the numbers are those of `authority.v1.InvalidReason`. */
export const InvalidReason = Object.freeze({
  MALFORMED: 'MALFORMED',
  BAD_SIGNATURE: 'BAD_SIGNATURE',
  UNKNOWN_KEY: 'UNKNOWN_KEY',
  EXPIRED: 'EXPIRED',
  NOT_YET_VALID: 'NOT_YET_VALID',
  WRONG_AUDIENCE: 'WRONG_AUDIENCE',
  WRONG_ISSUER: 'WRONG_ISSUER',
  REVOKED: 'REVOKED',
  PROOF_REQUIRED: 'PROOF_REQUIRED',
  BAD_PROOF: 'BAD_PROOF',
});

/** Reason names by their number in the proto. */
export const REASON_BY_NUMBER = Object.freeze([
  undefined, 'MALFORMED', 'BAD_SIGNATURE', 'UNKNOWN_KEY', 'EXPIRED',
  'NOT_YET_VALID', 'WRONG_AUDIENCE', 'WRONG_ISSUER', 'REVOKED',
  'PROOF_REQUIRED', 'BAD_PROOF',
]);

/** What a person is told about a token refused for each reason. */
export const REASON_TEXTS = Object.freeze({
  MALFORMED: 'the token is malformed',
  BAD_SIGNATURE: "the token's signature does not verify",
  UNKNOWN_KEY: 'the token is signed with an unknown key',
  EXPIRED: 'the token has expired',
  NOT_YET_VALID: 'the token is not valid yet',
  WRONG_AUDIENCE: 'the token is not for this audience',
  WRONG_ISSUER: 'the token is from another issuer',
  REVOKED: 'the token has been revoked',
  PROOF_REQUIRED: 'the token is bound to a device key and needs a proof of possession',
  BAD_PROOF: 'the proof of possession is not valid',
});

/** For a call that carries no token at all. */
export const MISSING_TEXT = 'no token was presented';

/** Why an HTTP request's way of presenting a token is refused before any token is checked
 * (RFC 6750 invalid_request, answered 400); the names are those of the Python package's
 * RequestProblem. */
export const RequestProblem = Object.freeze({
  OVERSIZED: 'OVERSIZED',
  MALFORMED_HEADER: 'MALFORMED_HEADER',
  SEVERAL_HEADERS: 'SEVERAL_HEADERS',
  EMPTY_TOKEN: 'EMPTY_TOKEN',
  TOKEN_IN_QUERY: 'TOKEN_IN_QUERY',
});

/** What a person is told about a request refused for each problem. */
export const REQUEST_TEXTS = Object.freeze({
  OVERSIZED: 'the Authorization header is too long',
  MALFORMED_HEADER: 'the Authorization header is malformed',
  SEVERAL_HEADERS: 'send one Authorization header, not several',
  EMPTY_TOKEN: 'the Authorization header names the scheme but carries no token',
  TOKEN_IN_QUERY: 'tokens in the query string are refused; send an Authorization header',
});

/** Why a revoked token's session was revoked; the numbers are those of `authority.v1.RevocationCause`. */
export const RevocationCause = Object.freeze({
  UNSPECIFIED: 'UNSPECIFIED',
  REPLACED_BY_SIGN_IN: 'REPLACED_BY_SIGN_IN',
  LOGGED_OUT: 'LOGGED_OUT',
  SIGNED_OUT_EVERYWHERE: 'SIGNED_OUT_EVERYWHERE',
  SESSION_REVOKED: 'SESSION_REVOKED',
  REFRESH_TOKEN_REUSED: 'REFRESH_TOKEN_REUSED',
  OTHER_DEVICES_SIGNED_OUT: 'OTHER_DEVICES_SIGNED_OUT',
});

/** Cause names by their number in the proto. */
export const CAUSE_BY_NUMBER = Object.freeze([
  'UNSPECIFIED', 'REPLACED_BY_SIGN_IN', 'LOGGED_OUT', 'SIGNED_OUT_EVERYWHERE',
  'SESSION_REVOKED', 'REFRESH_TOKEN_REUSED', 'OTHER_DEVICES_SIGNED_OUT',
]);

/** Why a revoked token's session was revoked. UNSPECIFIED has no text: the reason's stands. */
export const CAUSE_TEXTS = Object.freeze({
  REPLACED_BY_SIGN_IN: 'signed in on another device',
  LOGGED_OUT: 'logged out',
  SIGNED_OUT_EVERYWHERE: 'signed out everywhere',
  SESSION_REVOKED: 'the session was ended',
  REFRESH_TOKEN_REUSED: "the session's refresh token was used twice",
  OTHER_DEVICES_SIGNED_OUT: 'signed out from another device',
});

/** REPLACED_BY_SIGN_IN when the replacing device's name is known. */
export const REPLACED_BY_DEVICE_TEXT = 'signed in on {device_name}';
const REVOKED_PREFIX = 'revoked: ';
const SIGNED_OUT_PREFIX = 'signed out: ';

/** What a person is told about a token refused for `reason`. */
export function reasonText(reason) {
  return REASON_TEXTS[reason] ?? REASON_TEXTS.MALFORMED;
}

/** What a person is told about a request refused for `problem` (a RequestProblem). */
export function problemText(problem) {
  if (!Object.hasOwn(REQUEST_TEXTS, problem)) throw new TypeError(`not a request problem: ${problem}`);
  return REQUEST_TEXTS[problem];
}

/** Why a session was revoked, naming the replacing device when its name is known; '' for
 * UNSPECIFIED (or a cause this version does not know). */
export function causeText(cause, deviceName = '') {
  if (cause === RevocationCause.REPLACED_BY_SIGN_IN && deviceName) {
    return REPLACED_BY_DEVICE_TEXT.replace('{device_name}', () => deviceName);
  }
  return Object.hasOwn(CAUSE_TEXTS, cause ?? '') ? CAUSE_TEXTS[cause] : '';
}

/** What a refused call is told: the reason's text, or for REVOKED with a known cause
 * `revoked: <cause>` (`revoked: signed in on another device`). */
export function refusalText(reason, cause, deviceName = '') {
  if (reason === InvalidReason.REVOKED && cause !== undefined && cause !== null) {
    const text = causeText(cause, deviceName);
    if (text) return REVOKED_PREFIX + text;
  }
  return reasonText(reason);
}

/** What a signed-out device shows its user (`signed out: signed in on the phone`). */
export function signedOutText(cause, deviceName = '') {
  const text = cause === undefined || cause === null ? '' : causeText(cause, deviceName);
  return SIGNED_OUT_PREFIX + (text || 'the session has ended');
}
