// What the Express middleware and the grpc-js interceptor decide before a handler runs,
// shared by both: where the token and its proof are, and how each way of refusing a call
// is answered.
// A refusal carries the reason's name (for x-token-invalid-reason) and the text from the
// one table (for error_description); never the token, never internal detail.
import { Unavailable } from './errors.js';
import { DPOP_SCHEME } from './proof.js';
import { InvalidReason, MISSING_TEXT, RequestProblem, refusalText } from './reasons.js';
import { InvalidToken } from './verify.js';
import { Validator } from './validation.js';

export const MISSING = 'MISSING';
/** What a call is told when its token cannot be checked right now (503 / UNAVAILABLE). */
export const UNAVAILABLE_TEXT = 'the token cannot be checked right now';
const CREDENTIALS = /^(Bearer|DPoP) +([^ ]+) *$/i;

/** The scheme ('Bearer' or 'DPoP') and token of an `Authorization` value, or undefined. */
export function presentedToken(value) {
  if (typeof value !== 'string') return undefined;
  const match = CREDENTIALS.exec(value.trim());
  if (match === null) return undefined;
  return { scheme: match[1].toLowerCase() === 'dpop' ? DPOP_SCHEME : 'Bearer', token: match[2] };
}

// How an HTTP request presents its token, read exactly as the Python package's
// http/bearer.py read_token reads it, so that a service gets the same answers from either:
//
//   no Authorization header, or one in another scheme   no token: 401, the plain challenge
//   access_token in the query string (RFC 6750 §2.3)    TOKEN_IN_QUERY     400 invalid_request,
//   two or more Authorization headers                   SEVERAL_HEADERS    Bearer challenge
//   a header over MAX_AUTHORIZATION_BYTES               OVERSIZED          Bearer challenge
//   anything but `<scheme> <token68>`                   MALFORMED_HEADER   Bearer challenge, or
//                                                                          the scheme's when the
//                                                                          scheme was read
//   the scheme with no token (`Bearer`)                 EMPTY_TOKEN        the scheme's challenge
//
// in that order: a token in the query is refused whatever the headers. The scheme is
// case-insensitive (RFC 7235 §2.1). One value holding commas is several headers a proxy
// joined (a token68 never holds one) when every part is a `<scheme> <something>`, and
// malformed otherwise.

/** The longest Authorization value read, in bytes: far above any token the authority signs
 * (MAX_TOKEN_BYTES), far below what lets a header cost real work. As in the Python package. */
export const MAX_AUTHORIZATION_BYTES = 8192;
const QUERY_PARAMETER = 'access_token';
const SCHEMES = new Map([['bearer', 'Bearer'], [DPOP_SCHEME.toLowerCase(), DPOP_SCHEME]]);
// RFC 7235 token68, the form a JWT takes; a scheme is an RFC 7230 token.
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*$/;
const SCHEME = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
// One `<scheme> <something>` of several joined by a comma. Its first character is one
// Python's \S matches: Node hands header values over as Latin-1, and among those Python
// counts \t-\r, \x1c-\x1f, space, \x85 and \xa0 as whitespace.
const JOINED_CREDENTIALS = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+ +[^\t-\r\x1c-\x20\x85\xa0][^\n]*$/;
const strip = (text) => text.replace(/^[ \t]+|[ \t]+$/g, '');
const problem = (name, scheme = 'Bearer') => ({ problem: name, scheme });

/**
 * What an HTTP request presents: `authorization` its Authorization values (one per header
 * line, as received: Node's Latin-1 strings), `query` its raw query string. Answers
 * {presented} (presentedToken's shape; undefined: no token) or {problem, scheme}: a
 * RequestProblem, to answer 400 invalid_request with that scheme's challenge.
 */
export function readRequest(authorization, query = '') {
  if (tokenInQuery(query)) return problem(RequestProblem.TOKEN_IN_QUERY);
  if (authorization.length === 0) return { presented: undefined };
  if (authorization.length > 1) return problem(RequestProblem.SEVERAL_HEADERS);
  const [raw] = authorization;
  // A Latin-1 string: one character per byte.
  if (raw.length > MAX_AUTHORIZATION_BYTES) return problem(RequestProblem.OVERSIZED);
  const value = strip(raw);
  if (value.includes(',')) {
    const joined = value.split(',').every((part) => JOINED_CREDENTIALS.test(strip(part)));
    return problem(joined ? RequestProblem.SEVERAL_HEADERS : RequestProblem.MALFORMED_HEADER);
  }
  const space = value.indexOf(' ');
  const name = space < 0 ? value : value.slice(0, space);
  if (!SCHEME.test(name)) return problem(RequestProblem.MALFORMED_HEADER);
  const scheme = SCHEMES.get(name.toLowerCase());
  // Another scheme (Basic, say) is no bearer token: the plain challenge says which to use.
  if (scheme === undefined) return { presented: undefined };
  const token = space < 0 ? '' : strip(value.slice(space + 1));
  if (token === '') return problem(RequestProblem.EMPTY_TOKEN, scheme);
  if (!TOKEN68.test(token)) return problem(RequestProblem.MALFORMED_HEADER, scheme);
  return { presented: { scheme, token } };
}

/** Whether a raw query string names access_token as a server would read it, as the Python
 * package does: any name queryNames reads, in any case; a query with no escape and no such
 * name is not parsed at all. */
function tokenInQuery(query) {
  if (!query.includes('%') && !query.toLowerCase().includes(QUERY_PARAMETER)) return false;
  return queryNames(query).some((name) => name.toLowerCase() === QUERY_PARAMETER);
}

/** The names of a raw query string exactly as Python's parse_qsl reads them (the Python
 * package's http/bearer.py asks it): split at '&' (not ';'), empty parts skipped, the name
 * up to the first '=', then '+' a space and the %XX escapes decoded as urllib's unquote
 * does: each run of ASCII to bytes, read as UTF-8 with U+FFFD for what is not (a BOM kept),
 * an invalid escape ('%zz', a lone '%') left as it is. So `access_to%E2%84%AAen`, with a
 * KELVIN SIGN, is `access_token` in lower case, in both packages; `%C1%9F`, an overlong
 * '_', is no '_'. */
export function queryNames(query) {
  return query.split('&').filter((pair) => pair !== '')
    .map((pair) => unquote(pair.split('=', 1)[0].replace(/\+/g, ' ')));
}

// ignoreBOM: a leading U+FEFF is part of the name, as Python's utf-8 codec keeps it.
const UTF8 = new TextDecoder('utf-8', { ignoreBOM: true });
const ESCAPE = /^%[0-9A-Fa-f]{2}/;

function unquote(text) {
  if (!text.includes('%')) return text;
  // Characters above U+007F stand as they are, as in Python's unquote (Node's own HTTP
  // parser answers 400 to a request target holding such bytes before any middleware runs).
  return text.replace(/[\x00-\x7f]+/g, (run) => UTF8.decode(unquotedBytes(run)));
}

function unquotedBytes(run) {
  const bytes = [];
  for (let i = 0; i < run.length; i++) {
    if (run[i] === '%' && ESCAPE.test(run.slice(i, i + 3))) {
      bytes.push(Number.parseInt(run.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(run.charCodeAt(i));
    }
  }
  return Uint8Array.from(bytes);
}

/** The token of an `Authorization: Bearer <token>` value, or undefined. */
export function bearerToken(value) {
  const presented = presentedToken(value);
  return presented?.scheme === 'Bearer' ? presented.token : undefined;
}

/** Whether a refusal is one of a proof of possession (answered with a DPoP challenge). */
export function isProofRefusal(refusal) {
  return refusal.scheme === DPOP_SCHEME
    || refusal.reason === InvalidReason.PROOF_REQUIRED || refusal.reason === InvalidReason.BAD_PROOF;
}

/** What a person is told about a refused token: the reason's text, and for a revoked one
 * its cause when known (`revoked: signed in on the phone`), from the one table. */
export function describe(reason, cause, deviceName = '') {
  if (reason === MISSING) return MISSING_TEXT;
  return refusalText(reason, cause, deviceName);
}

/**
 * The outcome of checking `presented` (presentedToken's answer; a bare string is a bearer
 * token): {claims} or {refusal: {kind, reason, cause, text, scheme}} where kind is
 * 'invalid' (401 / UNAUTHENTICATED) or 'unavailable' (503 / UNAVAILABLE).
 *
 * `request` says what came with a DPoP token: `proofs` (every DPoP header or dpop metadata
 * value: exactly one is needed, none is PROOF_REQUIRED, more BAD_PROOF), and `httpMethod`
 * and `httpUri()` (called only when there is a proof; undefined: BAD_PROOF). A token sent as Bearer is checked
 * without a proof (its DPoP header ignored): a bound one is then PROOF_REQUIRED, as in the
 * Python package's http/bearer.py. Anything else the validator throws is a bug and propagates.
 */
export async function check(validator, presented, audience, request = {}) {
  const { scheme, token } = typeof presented === 'string' ? { scheme: 'Bearer', token: presented } : presented ?? {};
  if (token === undefined) return { refusal: { kind: 'invalid', reason: MISSING, text: MISSING_TEXT, scheme: 'Bearer' } };
  let proof;
  if (scheme === DPOP_SCHEME) {
    // A DPoP token promises a proof: none is PROOF_REQUIRED, two (or two a proxy joined
    // with a comma, which no compact JWS holds) BAD_PROOF, before any work on the token.
    const proofs = request.proofs ?? [];
    const refusedFor = proofs.length === 0 ? InvalidReason.PROOF_REQUIRED
      : proofs.length > 1 || proofs[0].includes(',') ? InvalidReason.BAD_PROOF : undefined;
    if (refusedFor !== undefined) {
      return { refusal: { kind: 'invalid', reason: refusedFor, text: describe(refusedFor), scheme } };
    }
    const httpUri = request.httpUri();
    // No URL (a Host header that names no server): no proof can be for this request.
    if (typeof httpUri !== 'string') {
      return { refusal: { kind: 'invalid', reason: InvalidReason.BAD_PROOF, text: describe(InvalidReason.BAD_PROOF), scheme } };
    }
    proof = { proof: proofs[0].replace(/^[ \t]+|[ \t]+$/g, ''), httpMethod: request.httpMethod, httpUri };
  }
  try {
    return { claims: await validator.validate(token, audience, proof) };
  } catch (error) {
    if (error instanceof InvalidToken) {
      // UNSPECIFIED is no cause to tell (no x-token-revocation-cause for it).
      const cause = error.revocationCause === 'UNSPECIFIED' ? undefined : error.revocationCause;
      const text = describe(error.reason, cause, error.replacedByDeviceName);
      return { refusal: { kind: 'invalid', reason: error.reason, cause, text, scheme } };
    }
    if (error instanceof Unavailable) {
      return { refusal: { kind: 'unavailable', reason: 'UNAVAILABLE', text: UNAVAILABLE_TEXT, scheme } };
    }
    throw error;
  }
}

/** The validator an option set names: given, or made (and started) from client/target and mode. */
export function validatorFrom({ validator, client, target, clientOptions, mode = 'remote', ...rest }) {
  if (validator !== undefined) return { validator, ready: Promise.resolve(validator), owned: false };
  const made = new Validator({ client, target, clientOptions, mode, ...rest });
  return { validator: made, ready: made.start(), owned: true };
}
