// Express middleware: requireToken({ target | client, mode, audience, publicPaths }).
//
// A request without a bearer token, or with a bad one, is answered 401 with a
// WWW-Authenticate header per RFC 6750 (error="invalid_token" and the reason's text in
// error_description for a bad token; only the realm when there was none, as RFC 6750
// section 3.1 asks) and a JSON body {error, error_description}. A view too stale to vouch
// is answered 503 with Retry-After. A valid token's claims are in req.auth.
// Nothing of the token or of an internal error reaches the response.
import { bearerToken, check, validatorFrom } from './access.js';

const quoted = (text) => `"${text.replace(/["\\]/g, '\\$&')}"`;
// What a quoted error_description may hold (RFC 6750 §3): printable ASCII but '"' and '\'.
// Anything else (a device name in another script) becomes '?' in the header, as in the
// Python package; the JSON body keeps the text whole. Node refuses other header bytes.
const headerText = (text) => text.replace(/[^\x20\x21\x23-\x5b\x5d-\x7e]/gu, '?');

/**
 * The middleware. Options: validator | client | target (+ clientOptions), mode
 * ('remote' default, or 'local'), audience (required), publicPaths (exact paths or
 * RegExps that need no token), realm, retryAfterSeconds, and the Validator's options.
 * The returned function has `ready` (a promise: started) and `close()`.
 */
export function requireToken({ audience, publicPaths = [], realm = 'token-authority', retryAfterSeconds = 1, log = console, ...options } = {}) {
  if (typeof audience !== 'string' || audience === '') throw new TypeError('requireToken needs an audience');
  const { validator, ready, owned } = validatorFrom({ log, ...options });
  const isPublic = (path) => publicPaths.some((rule) => (rule instanceof RegExp ? rule.test(path) : rule === path));
  ready.catch(() => {}); // a failure shows on the first request instead

  async function middleware(req, res, next) {
    if (isPublic(req.path)) return next();
    let outcome;
    try {
      await ready;
      outcome = await check(validator, bearerToken(req.headers.authorization), audience);
    } catch (error) {
      // A bug, not the caller's doing: fail closed; the detail stays in the log.
      log.error?.('token check failed', error);
      res.status(500).json({ error: 'server_error', error_description: 'internal error' });
      return undefined;
    }
    if (outcome.claims !== undefined) {
      req.auth = outcome.claims;
      return next();
    }
    const { refusal } = outcome;
    if (refusal.kind === 'unavailable') {
      res.set('Retry-After', String(retryAfterSeconds));
      res.status(503).json({ error: 'temporarily_unavailable', error_description: refusal.text });
      return undefined;
    }
    const challenge = refusal.reason === 'MISSING'
      ? `Bearer realm=${quoted(realm)}`
      : `Bearer realm=${quoted(realm)}, error="invalid_token", error_description="${headerText(refusal.text)}"`;
    res.set('WWW-Authenticate', challenge);
    res.status(401).json({ error: refusal.reason === 'MISSING' ? 'unauthorized' : 'invalid_token', error_description: refusal.text });
    return undefined;
  }

  middleware.ready = ready;
  middleware.validator = validator;
  middleware.close = async () => { if (owned) await validator.close(); };
  return middleware;
}

