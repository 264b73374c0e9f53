// The errors of a refused token and of a refused proof, in a module of their own so that
// the token verifier (verify.js) and the proof checker (proof.js) can both use them.
import { InvalidReason } from './reasons.js';

/** A token failed verification; `reason` names the step. The message never quotes the token. */
export class InvalidToken extends Error {
  /** For REVOKED, when known: the cause's name, and for a replacement the device that
   * signed in (its name only from ValidateToken: the stream carries the id alone). */
  constructor(reason, { cause, replacedByDeviceId = '', replacedByDeviceName = '' } = {}) {
    super(reason);
    this.name = 'InvalidToken';
    this.reason = reason;
    if (cause !== undefined) this.revocationCause = cause;
    this.replacedByDeviceId = replacedByDeviceId;
    this.replacedByDeviceName = replacedByDeviceName;
  }
}

/** A proof of possession failed a check: always BAD_PROOF; `check` names which, for logs
 * and tests ("size", "form", "typ", "alg", "jwk", "signature", "jti", "htm", "htu",
 * "iat", "ath", "key", "replayed", "replay-cache-full", "replay-quota", "unbound"). Never quotes the
 * proof or the token. */
export class InvalidProof extends InvalidToken {
  constructor(check) {
    super(InvalidReason.BAD_PROOF);
    this.name = 'InvalidProof';
    this.message = `BAD_PROOF (${check})`;
    this.check = check;
  }
}
