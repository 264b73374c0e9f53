// @token-authority/client: what a Node.js service needs to trust the token authority.
export {
  CAUSE_TEXTS, InvalidReason, MISSING_TEXT, REASON_TEXTS, REPLACED_BY_DEVICE_TEXT, REQUEST_TEXTS, RequestProblem,
  RevocationCause, causeText, problemText, reasonText, refusalText, signedOutText,
} from './reasons.js';
export { InvalidProof, InvalidToken, KeySet, MAX_TOKEN_BYTES, TokenVerifier } from './verify.js';
export {
  DEFAULT_MAX_AGE, DEFAULT_REPLAY_CACHE_SIZE, DPOP_HEADER, DPOP_SCHEME, MAX_PROOF_BYTES, PROOF_ALGORITHMS, PROOF_TYPE,
  ProofChecker, accessTokenHash, grpcProofUri, jwkThumbprint, normalizeUri,
} from './proof.js';
export { MAX_JSON_DEPTH } from './json.js';
export { AuthorityClient, RevocationStream } from './client.js';
export {
  AuthorityError, DeadlineExceeded, Internal, InvalidArgument, PermissionDenied, RefreshRejected,
  ResourceExhausted, SessionLimitReached, SignInAborted, Unauthenticated, Unavailable,
} from './errors.js';
export { toStruct, fromStruct } from './convert.js';
export { RevocationMirror } from './local/mirror.js';
export { LocalVerification, Validator } from './validation.js';
export { MAX_AUTHORIZATION_BYTES, MISSING, bearerToken, describe, presentedToken } from './access.js';
export { requireToken } from './express.js';
export { CAUSE_HEADER, DEFAULT_PUBLIC, REASON_HEADER, authInterceptor, claimsOf } from './grpc-server.js';
export { redactedGrpcLine, redactedGrpcLogger } from './grpc-log.js';
