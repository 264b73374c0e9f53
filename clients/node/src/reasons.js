// The one table of texts a person is shown for a refused token: the same table as the
// Python package's authority_client/reasons.py. The shared corpus (tests/vectors in the
// repository) carries each reason's text, and the Node suite checks this table against
// it, so the two cannot drift apart. A text never quotes the token.

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
});

/** Reason names by their number in the proto. */
export const REASON_BY_NUMBER = Object.freeze([
  undefined, 'MALFORMED', 'BAD_SIGNATURE', 'UNKNOWN_KEY', 'EXPIRED',
  'NOT_YET_VALID', 'WRONG_AUDIENCE', 'WRONG_ISSUER', 'REVOKED',
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
});

/** For a call that carries no token at all. */
export const MISSING_TEXT = 'no token was presented';

/** What a person is told about a token refused for `reason`. */
export function reasonText(reason) {
  return REASON_TEXTS[reason] ?? REASON_TEXTS.MALFORMED;
}
