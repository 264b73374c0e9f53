// What the Express middleware and the grpc-js interceptor decide before a handler runs,
// shared by both: where the token is, and how each way of refusing a call is answered.
// A refusal carries the reason's name (for x-token-invalid-reason) and the text from the
// one table (for error_description); never the token, never internal detail.
import { Unavailable } from './errors.js';
import { MISSING_TEXT, refusalText } from './reasons.js';
import { InvalidToken } from './verify.js';
import { Validator } from './validation.js';

export const MISSING = 'MISSING';
const BEARER = /^Bearer +([^ ]+) *$/i;

/** The token of an `Authorization: Bearer <token>` value, or undefined. */
export function bearerToken(value) {
  if (typeof value !== 'string') return undefined;
  const match = BEARER.exec(value.trim());
  return match === null ? undefined : match[1];
}

/** What a person is told about a refused token: the reason's text, and for a revoked one
 * its cause when known (`revoked: signed in on the phone`), from the one table. */
export function describe(reason, cause, deviceName = '') {
  if (reason === MISSING) return MISSING_TEXT;
  return refusalText(reason, cause, deviceName);
}

/**
 * The outcome of checking `token`: {claims} or {refusal: {kind, reason, cause, text}}
 * where kind is 'invalid' (401 / UNAUTHENTICATED) or 'unavailable' (503 / UNAVAILABLE).
 * Anything else the validator throws is a bug and propagates.
 */
export async function check(validator, token, audience) {
  if (token === undefined) return { refusal: { kind: 'invalid', reason: MISSING, text: MISSING_TEXT } };
  try {
    return { claims: await validator.validate(token, audience) };
  } catch (error) {
    if (error instanceof InvalidToken) {
      // UNSPECIFIED is no cause to tell (no x-token-revocation-cause for it).
      const cause = error.revocationCause === 'UNSPECIFIED' ? undefined : error.revocationCause;
      const text = describe(error.reason, cause, error.replacedByDeviceName);
      return { refusal: { kind: 'invalid', reason: error.reason, cause, text } };
    }
    if (error instanceof Unavailable) {
      return { refusal: { kind: 'unavailable', reason: 'UNAVAILABLE', text: 'the token cannot be checked right now' } };
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
