// What the Express middleware and the grpc-js interceptor decide before a handler runs,
// shared by both: where the token and its proof are, and how each way of refusing a call
// is answered.
// A refusal carries the reason's name (for x-token-invalid-reason) and the text from the
// one table (for error_description); never the token, never internal detail.
import { Unavailable } from './errors.js';
import { DPOP_SCHEME } from './proof.js';
import { InvalidReason, MISSING_TEXT, refusalText } from './reasons.js';
import { InvalidToken } from './verify.js';
import { Validator } from './validation.js';

export const MISSING = 'MISSING';
const CREDENTIALS = /^(Bearer|DPoP) +([^ ]+) *$/i;

/** The scheme ('Bearer' or 'DPoP') and token of an `Authorization` value, or undefined. */
export function presentedToken(value) {
  if (typeof value !== 'string') return undefined;
  const match = CREDENTIALS.exec(value.trim());
  if (match === null) return undefined;
  return { scheme: match[1].toLowerCase() === 'dpop' ? DPOP_SCHEME : 'Bearer', token: match[2] };
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
      return { refusal: { kind: 'unavailable', reason: 'UNAVAILABLE', text: 'the token cannot be checked right now', scheme } };
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
