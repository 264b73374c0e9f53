// Express middleware: requireToken({ target | client, mode, audience, publicPaths }).
//
// A request without a bearer token, or with a bad one, is answered 401 with a
// WWW-Authenticate header per RFC 6750 (error="invalid_token" and the reason's text in
// error_description for a bad token; only the realm when there was none, as RFC 6750
// section 3.1 asks) and a JSON body {error, error_description}. A request that presents
// its token wrongly is answered 400 error="invalid_request" (RFC 6750 section 3.1), in the
// challenge and the body, with the problem's text, before any token is checked: two
// Authorization headers, one over 8 KiB, a scheme with no token, anything but
// `<scheme> <token68>`, or access_token in the query string (section 2.3); as the Python
// package's HTTP middlewares answer (http/bearer.py; access.js has the table). A header
// in another scheme (Basic) counts as no token. A view too stale to vouch is answered 503
// with Retry-After. A valid token's claims are in req.auth.
// Every refusal carries Cache-Control: no-store, as the Python middlewares' do. An error
// the middleware did not expect (a bug, not the caller's doing) fails closed with that same
// 503, its detail in the log only: never Express's error handler, its 500 and its stack.
// Nothing of the token, of its proof or of an internal error reaches the response.
//
// Device-bound tokens (RFC 9449): `Authorization: DPoP <token>` with exactly one `DPoP`
// header, the proof, checked against the request's method (htm) and its URL as the client
// addressed it (htu: req.protocol, req.host and the path of req.originalUrl, or the
// `externalOrigin` option behind a proxy that rewrites them). A bound token sent as Bearer
// is PROOF_REQUIRED. Refusals of a DPoP token or of a proof carry the DPoP challenge
// (RFC 9449 section 7.1): `DPoP algs="EdDSA ES256 RS256", error="invalid_token"`, or
// error="invalid_dpop_proof" for a proof that fails (BAD_PROOF), or error="invalid_request"
// for `DPoP` with no token or with one that is no token68; bearer tokens keep theirs.
import { UNAVAILABLE_TEXT, check, isProofRefusal, readRequest, validatorFrom } from './access.js';
import { MAX_DURATION_SECONDS, checkNumber } from './options.js';
import { DPOP_HEADER, DPOP_SCHEME, PROOF_ALGORITHMS } from './proof.js';
import { problemText } from './reasons.js';

const quoted = (text) => `"${text.replace(/["\\]/g, '\\$&')}"`;
// What a quoted error_description may hold (RFC 6750 §3): printable ASCII but '"' and '\'.
// Anything else (a device name in another script) becomes '?' in the header, as in the
// Python package; the JSON body keeps the text whole. Node refuses other header bytes.
const headerText = (text) => text.replace(/[^\x20\x21\x23-\x5b\x5d-\x7e]/gu, '?');
const DPOP_ALGS = PROOF_ALGORITHMS.join(' ');
// What the middleware decided when it calls no next().
const REFUSED = Symbol('refused');
const PUBLIC = Symbol('public');

/** The challenge for a refusal: DPoP for a proof or a DPoP token, else Bearer (RFC 6750). */
function challengeOf(refusal, realm) {
  if (refusal.reason === 'MISSING') return `Bearer realm=${quoted(realm)}`;
  const description = `error_description="${headerText(refusal.text)}"`;
  if (!isProofRefusal(refusal)) return `Bearer realm=${quoted(realm)}, error="invalid_token", ${description}`;
  return `DPoP algs="${DPOP_ALGS}", error="${errorOf(refusal)}", ${description}`;
}

/** The challenge for a request refused before its token is checked (RFC 6750 invalid_request). */
function requestChallengeOf(scheme, text, realm) {
  const parameters = `error="invalid_request", error_description="${headerText(text)}"`;
  return scheme === DPOP_SCHEME ? `DPoP algs="${DPOP_ALGS}", ${parameters}` : `Bearer realm=${quoted(realm)}, ${parameters}`;
}

const errorOf = (refusal) => (refusal.reason === 'BAD_PROOF' ? 'invalid_dpop_proof' : 'invalid_token');

/** The raw query string of a request target, as sent ('' without one). */
function queryOf(url) {
  const start = url.indexOf('?');
  return start < 0 ? '' : url.slice(start + 1);
}

// A Host header as RFC 3986 writes an authority without userinfo: a bracketed IP literal or
// a name, and an optional port. Anything else ('/', '?', '#', '@', spaces) would change the
// URL a proof is checked against ('host/other?' makes it /other's), and names no server.
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]*)?$/;

/**
 * The request's URL without query, as the client addressed it: scheme://host/path;
 * undefined when its host is no host (the proof is then BAD_PROOF).
 */
function requestUri(req, externalOrigin) {
  const path = req.originalUrl.split(/[?#]/, 1)[0];
  if (externalOrigin !== undefined) return `${externalOrigin}${path}`;
  const { host } = req;
  return typeof host === 'string' && HOST.test(host) ? `${req.protocol}://${host}${path}` : undefined;
}

/**
 * `externalOrigin` without its trailing slashes, or a TypeError unless it is
 * scheme://host[:port] with an optional path prefix (the one a proxy strips), as clients
 * address the app: no user information, query or fragment (as the Python package checks).
 */
function checkedOrigin(externalOrigin) {
  let url;
  try {
    url = typeof externalOrigin === 'string' ? new URL(externalOrigin) : undefined;
  } catch {
    url = undefined;
  }
  if (url === undefined || !['http:', 'https:'].includes(url.protocol) || url.hostname === ''
      || url.username !== '' || url.password !== '' || /[?#]/.test(externalOrigin)
      || !/^https?:\/\/[^/@]+(?:\/|$)/i.test(externalOrigin)) {
    throw new TypeError('externalOrigin must be scheme://host[:port], with an optional /path prefix, as clients address the app');
  }
  return externalOrigin.replace(/\/+$/, '');
}

/**
 * The middleware. Options: validator | client | target (+ clientOptions), mode
 * ('remote' default, or 'local'), audience (required), publicPaths (exact paths or
 * RegExps that need no token), realm, retryAfterSeconds, externalOrigin (the scheme and
 * host clients address, 'https://api.example.com', for the htu of proofs behind a proxy;
 * with the path prefix a proxy strips, if any: 'https://example.com/shop'),
 * and the Validator's options. The returned function has `ready` (a promise: started) and
 * `close()`.
 */
export function requireToken({
  audience, publicPaths = [], realm = 'token-authority', retryAfterSeconds = 1, externalOrigin, log = console, ...options
} = {}) {
  if (typeof audience !== 'string' || audience === '') throw new TypeError('requireToken needs an audience');
  // It goes into every challenge as a quoted-string: printable ASCII (RFC 7230 §3.2.6).
  if (typeof realm !== 'string' || !/^[\x20-\x7e]*$/.test(realm)) {
    throw new TypeError('realm must be a string of printable ASCII');
  }
  // Retry-After is a whole number of seconds (RFC 9110 §10.2.3).
  checkNumber('retryAfterSeconds', retryAfterSeconds, { max: MAX_DURATION_SECONDS, integer: true });
  const origin = externalOrigin === undefined ? undefined : checkedOrigin(externalOrigin);
  const { validator, ready, owned } = validatorFrom({ log, ...options });
  const isPublic = (path) => publicPaths.some((rule) => (rule instanceof RegExp ? rule.test(path) : rule === path));
  ready.catch(() => {}); // a failure shows on the first request instead

  /** Answers a refusal: `status`, the JSON body and `headers`, never to be stored. */
  function refuse(res, status, body, headers = {}) {
    res.set({ ...headers, 'Cache-Control': 'no-store' });
    res.status(status).json(body);
    return REFUSED;
  }

  const UNAVAILABLE = { error: 'temporarily_unavailable', error_description: UNAVAILABLE_TEXT };
  const unavailable = (res) => refuse(res, 503, UNAVAILABLE, { 'Retry-After': String(retryAfterSeconds) });

  /** The claims of the request's token, PUBLIC for a public path, or REFUSED once answered. */
  async function admission(req, res) {
    if (isPublic(req.path)) return PUBLIC;
    // req.headers keeps only the first of several Authorization headers: which one to
    // believe? None; several are SEVERAL_HEADERS.
    const read = readRequest(req.headersDistinct.authorization ?? [], queryOf(req.originalUrl));
    // A request refused for how it presents its token is answered at once, the validator
    // ready or not.
    if (read.problem !== undefined) {
      const text = problemText(read.problem);
      return refuse(res, 400, { error: 'invalid_request', error_description: text },
        { 'WWW-Authenticate': requestChallengeOf(read.scheme, text, realm) });
    }
    await ready;
    const outcome = await check(validator, read.presented, audience, {
      proofs: req.headersDistinct[DPOP_HEADER] ?? [],
      httpMethod: req.method,
      httpUri: () => requestUri(req, origin),
    });
    if (outcome.claims !== undefined) return outcome.claims;
    const { refusal } = outcome;
    if (refusal.kind === 'unavailable') return unavailable(res);
    const error = refusal.reason === 'MISSING' ? 'unauthorized' : errorOf(refusal);
    return refuse(res, 401, { error, error_description: refusal.text }, { 'WWW-Authenticate': challengeOf(refusal, realm) });
  }

  async function middleware(req, res, next) {
    let admitted;
    try {
      admitted = await admission(req, res);
    } catch (error) {
      // A bug, not the caller's doing: fail closed as a token that cannot be checked, as the
      // Python middlewares do; the detail stays in the log.
      try {
        log.error?.('token check failed', error);
      } catch {
        // A logger that fails changes nothing of the answer.
      }
      if (res.headersSent) {
        res.destroy();
        return;
      }
      res.removeHeader('WWW-Authenticate');
      unavailable(res);
      return;
    }
    if (admitted === REFUSED) return;
    if (admitted !== PUBLIC) req.auth = admitted;
    // Outside the try: what the handlers after this one throw is theirs, for Express to handle.
    next();
  }

  middleware.ready = ready;
  middleware.validator = validator;
  middleware.close = async () => { if (owned) await validator.close(); };
  return middleware;
}

