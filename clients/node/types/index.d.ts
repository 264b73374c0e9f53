// Type declarations of @token-authority/client (the package is plain ESM JavaScript).
import type * as grpc from '@grpc/grpc-js';
import type { RequestHandler } from 'express';

export type Reason =
  | 'MALFORMED' | 'BAD_SIGNATURE' | 'UNKNOWN_KEY' | 'EXPIRED'
  | 'NOT_YET_VALID' | 'WRONG_AUDIENCE' | 'WRONG_ISSUER' | 'REVOKED'
  | 'PROOF_REQUIRED' | 'BAD_PROOF';

/** Why a token is not valid. */
export declare const InvalidReason: { readonly [R in Reason]: R };
/** The one table of texts a person is shown for a refused token. */
export declare const REASON_TEXTS: Readonly<Record<Reason, string>>;
/** For a call that carries no token at all. */
export declare const MISSING_TEXT: string;

export type Problem = 'OVERSIZED' | 'MALFORMED_HEADER' | 'SEVERAL_HEADERS' | 'EMPTY_TOKEN' | 'TOKEN_IN_QUERY';
/** Why an HTTP request's way of presenting a token is refused before any token is checked (400 invalid_request). */
export declare const RequestProblem: { readonly [P in Problem]: P };
/** The texts of the request problems, from the one table. */
export declare const REQUEST_TEXTS: Readonly<Record<Problem, string>>;
/** What a person is told about a request refused for `problem`; TypeError for anything else. */
export declare function problemText(problem: Problem): string;
/** What a person is told about a token refused for `reason`. */
export declare function reasonText(reason: Reason): string;

export type Cause =
  | 'UNSPECIFIED' | 'REPLACED_BY_SIGN_IN' | 'LOGGED_OUT' | 'SIGNED_OUT_EVERYWHERE'
  | 'SESSION_REVOKED' | 'REFRESH_TOKEN_REUSED' | 'OTHER_DEVICES_SIGNED_OUT';
/** Why a revoked token's session was revoked. */
export declare const RevocationCause: { readonly [C in Cause]: C };
/** The texts of the causes (UNSPECIFIED has none), from the one table. */
export declare const CAUSE_TEXTS: Readonly<Record<Exclude<Cause, 'UNSPECIFIED'>, string>>;
/** REPLACED_BY_SIGN_IN when the replacing device's name is known (`{device_name}` in it). */
export declare const REPLACED_BY_DEVICE_TEXT: string;
/** Why a session was revoked, naming the replacing device when known; '' for UNSPECIFIED. */
export declare function causeText(cause: Cause, deviceName?: string): string;
/** What a refused call is told: `revoked: <cause>` for a revoked token with a cause, else the reason's text. */
export declare function refusalText(reason: Reason, cause?: Cause | null, deviceName?: string): string;
/** What a signed-out device shows its user (`signed out: signed in on the phone`). */
export declare function signedOutText(cause?: Cause | null, deviceName?: string): string;
export declare const MAX_TOKEN_BYTES: number;
export declare const MAX_JSON_DEPTH: number;

/** What an access token says; the same shape whether checked locally or remotely. Frozen,
 * `extra` all the way down: a token's claims are shared by every request that presents it. */
export interface AccessClaims {
  readonly subject: string;
  readonly deviceId: string;
  readonly sessionId: string;
  readonly tokenId: string;
  readonly issuer: string;
  readonly audience: string;
  readonly issuedAt: Date;
  readonly expiresAt: Date;
  /** The RFC 7638 thumbprint (cnf.jkt) of the device key the token is bound to; '' for a bearer token. */
  readonly keyThumbprint: string;
  /** Claims the login service added at sign-in. */
  readonly extra: Readonly<Record<string, unknown>>;
}

/** A token failed verification; `reason` names the step. Never quotes the token. */
export declare class InvalidToken extends Error {
  constructor(reason: Reason, options?: { cause?: Cause; replacedByDeviceId?: string; replacedByDeviceName?: string });
  readonly reason: Reason;
  /** Why a revoked token was revoked, when known. */
  readonly revocationCause?: Cause;
  /** For REPLACED_BY_SIGN_IN: the device that signed in ('' when unknown). */
  readonly replacedByDeviceId: string;
  /** Its name: from ValidateToken only (the revocation stream carries the id alone). */
  readonly replacedByDeviceName: string;
}

/** Which check of a proof failed (the same names as the Python package's InvalidProof.check). */
export type ProofCheck =
  | 'size' | 'form' | 'typ' | 'alg' | 'jwk' | 'signature' | 'jti' | 'htm' | 'htu' | 'iat' | 'ath' | 'key'
  | 'replayed' | 'replay-quota' | 'replay-cache-full' | 'unbound';

/** A proof of possession failed a check: always BAD_PROOF. Never quotes the proof or the token. */
export declare class InvalidProof extends InvalidToken {
  constructor(check: ProofCheck);
  readonly reason: 'BAD_PROOF';
  readonly check: ProofCheck;
}

/** A DPoP proof exactly as sent, and the request it came with (the proto's ProofOfPossession). */
export interface Proof {
  proof: string;
  /** The request's method ('GET'; 'POST' for gRPC). */
  httpMethod: string;
  /** The request's URI as the client addressed it; query and fragment are ignored. */
  httpUri: string;
}

export declare const PROOF_TYPE: 'dpop+jwt';
export declare const MAX_PROOF_BYTES: number;
/** The allow-list of proof algorithms. */
export declare const PROOF_ALGORITHMS: readonly ['EdDSA', 'ES256', 'RS256'];
/** Seconds a proof's iat may be from now, either way (60). */
export declare const DEFAULT_MAX_AGE: number;
export declare const DEFAULT_REPLAY_CACHE_SIZE: number;
export declare const DPOP_SCHEME: 'DPoP';
export declare const DPOP_HEADER: 'dpop';

/** Checks DPoP proofs against their requests and keeps the replay cache (bounded by the
 * window and by replayCacheSize; full, it refuses proofs rather than forget early). One key
 * thumbprint holds at most perKeyLimit entries (default max(1, floor(replayCacheSize / 10)));
 * past it that key's new proofs fail 'replay-quota' while other keys keep working. */
export declare class ProofChecker {
  /** maxAge: seconds above 0; replayCacheSize and perKeyLimit: integers from 1 to 10,000,000
   * (TypeError or RangeError naming the option). */
  constructor(options?: { maxAge?: number; replayCacheSize?: number; perKeyLimit?: number; clock?: () => number });
  readonly maxAge: number;
  readonly replayCacheSize: number;
  readonly perKeyLimit: number;
  readonly replayCacheEntries: number;
  /** The RFC 7638 thumbprint of the proof's key; throws InvalidProof. */
  /** `beforeSpending` runs once every other check passed, before the jti is recorded;
   * what it throws leaves the proof unspent. */
  check(
    proof: Proof,
    options?: { accessToken?: string | null; keyThumbprint?: string | null; beforeSpending?: () => void },
  ): string;
}

/** The RFC 7638 thumbprint (SHA-256, base64url) of a public OKP, EC or RSA JWK. */
export declare function jwkThumbprint(jwk: Record<string, unknown>): string;
/** base64url(SHA-256(token)): a proof's ath for the token. */
export declare function accessTokenHash(token: string): string;
/** A URI as a proof's htu is compared (RFC 9449 4.3, RFC 3986 6); TypeError unless absolute http(s). */
export declare function normalizeUri(uri: string): string;
/** `https://<authority>/<pkg.Service>/<Method>` for grpc's "/pkg.Service/Method". */
export declare function grpcProofUri(authority: string, method: string): string;

/** An immutable set of public verification keys, by kid. */
export declare class KeySet {
  /** The keys of a JWK Set; keys of other kinds are skipped; rejects for a malformed set. */
  static fromJwks(jwksJson: string): Promise<KeySet>;
  readonly kids: readonly string[];
  readonly size: number;
  /** This set but the keys named in `kids`. */
  without(kids: Iterable<string>): KeySet;
}

/** Verifies access tokens as strictly as the Python TokenVerifier (no revocation check). */
export declare class TokenVerifier {
  /** `leeway`: seconds, at least 0. */
  constructor(keys: KeySet, options: { issuer: string; leeway?: number; clock?: () => number; proofs?: ProofChecker });
  keys: KeySet;
  readonly proofs: ProofChecker;
  /** The claims of a valid token for `audience` (a bound one needs `proof`); throws InvalidToken or InvalidProof. */
  verify(token: string, audience: string, proof?: Proof | null): AccessClaims;
  /** The token's own checks, without its binding: only for callers that then call checkBinding. */
  verifyToken(token: string, audience: string): AccessClaims;
  /** PROOF_REQUIRED for a bound token without a proof; the proof checked for one with; BAD_PROOF for a proof with an unbound token. */
  /** `admit` runs with the claims once the proof passed, before its jti is spent; it may throw to refuse the token. */
  checkBinding(claims: AccessClaims, token: string, proof?: Proof | null, admit?: (claims: AccessClaims) => void): void;
}

/** A call to the token authority failed; `code` is the gRPC status code. */
export declare class AuthorityError extends Error {
  constructor(details?: string, code?: grpc.status);
  readonly code: grpc.status;
  readonly details: string;
}
export declare class Unavailable extends AuthorityError {}
export declare class DeadlineExceeded extends AuthorityError {}
export declare class Unauthenticated extends AuthorityError {}
export declare class RefreshRejected extends Unauthenticated {}
export declare class PermissionDenied extends AuthorityError {}
export declare class InvalidArgument extends AuthorityError {}
export declare class SessionLimitReached extends AuthorityError {}
/** ABORTED: a guarded sign-in (`expectedReplacements`) would sign out other sessions than
 * expected; nothing changed: preview again and ask the user again. */
export declare class SignInAborted extends AuthorityError {}
export declare class ResourceExhausted extends AuthorityError {}
export declare class Internal extends AuthorityError {}

export type JsonValue = null | boolean | number | string | JsonValue[] | { [name: string]: JsonValue };

export interface IssuedToken {
  readonly accessToken: string;
  readonly refreshToken: string;
  sessionId: string;
  expiresAt: Date;
  refreshExpiresAt: Date;
  replacedSessionIds: string[];
  /** 'DPoP' when bound to the sign-in proof's key (send `Authorization: DPoP` with a proof), else 'Bearer'. */
  tokenType: string;
}

export interface Session {
  sessionId: string;
  subject: string;
  deviceId: string;
  createdAt: Date;
  expiresAt: Date;
  /** As given at sign-in ('' for none: the class '*'). */
  deviceClass: string;
  /** The display label given at sign-in ('' for none). */
  deviceName: string;
  /** The last sign-in or refresh; null from an authority that does not send it. */
  lastUsedAt: Date | null;
}

/** What a sign-in would do now (PreviewSignIn): whether it is allowed, and the sessions it
 * would sign out (when not allowed, those it would have to). */
export interface SignInPreview {
  allowed: boolean;
  wouldReplace: Session[];
}

/** Exactly one of T's members, the others absent. */
type OneOf<T> = { [K in keyof T]: Pick<T, K> & { [O in Exclude<keyof T, K>]?: never } }[keyof T];

export type Validation =
  | { valid: true; claims: AccessClaims }
  | { valid: false; reason: Exclude<Reason, 'REVOKED'> }
  | {
    valid: false; reason: 'REVOKED'; revocationCause: Cause; revokedAt?: Date;
    replacedByDeviceId: string; replacedByDeviceName: string;
  };

export interface RevocationEvent {
  kind: 'REVOCATION' | 'CAUGHT_UP' | 'HEARTBEAT' | 'SIGNING_KEYS' | 'UNSPECIFIED';
  sequence: bigint;
  tokenId: string;
  sessionId: string;
  expiresAt?: Date;
  sentAt?: Date;
  jwksJson: string;
  /** The revocation log's epoch ('' from an authority without epochs): `sequence` is a position in it. */
  epoch: string;
  /** For REVOCATION: why ('UNSPECIFIED' otherwise). */
  cause: Cause;
  /** For REPLACED_BY_SIGN_IN: the device that signed in. */
  replacedByDeviceId: string;
  /** For SIGNING_KEYS: the set's version (SigningKeySet.version); 0 when the server does not say. */
  keySetVersion: number;
}

/** The authority's public keys, as GetSigningKeys answers them. */
export interface SigningKeySet {
  /** The RFC 7517 JWK Set, as JSON text. */
  jwksJson: string;
  /** Raised by the database on every change to the stored keys: of two sets of one log
   * epoch, the higher version is the newer, whichever replica answered. 0: the server does
   * not say (an authority older than the field). */
  version: number;
}

export interface CallOptions { timeoutMs?: number }

/** Numeric options are checked where they are given: a TypeError for one that is not a
 * number, a RangeError for one out of range (NaN and Infinity always are), naming it.
 * Durations are at most ten years (3650 days) unless said otherwise. */
export interface ClientOptions {
  credentials?: grpc.ChannelCredentials;
  /** TLS (true: the system's roots) or mTLS (cert and key). */
  tls?: boolean | { ca?: Buffer; cert?: Buffer; key?: Buffer };
  apiKey?: string;
  /** Every unary call's deadline in ms, retries included (default 2000; above 0). A call's own `timeoutMs` too. */
  timeoutMs?: number;
  /** Attempts of a retried call, an integer of at least 2 (default 4; grpc-js makes at most 5). */
  maxAttempts?: number;
  /** Retry backoff in ms, at least 1 (default 50). */
  initialBackoffMs?: number;
  /** At least 1 (default 1000). */
  maxBackoffMs?: number;
  channelOptions?: grpc.ChannelOptions;
}

/** An open WatchRevocations call. */
export declare class RevocationStream implements AsyncIterable<RevocationEvent> {
  [Symbol.asyncIterator](): AsyncIterator<RevocationEvent>;
  cancel(): void;
}

/** Every RPC of the token authority, with promises and a deadline on every call. */
export declare class AuthorityClient {
  constructor(target: string, options?: ClientOptions);
  issueToken(subject: string, deviceId: string, options?: CallOptions & {
    policy?: 'DEFAULT' | 'REPLACE' | 'REJECT'; audience?: string; claims?: Record<string, JsonValue>; ttlMs?: number;
    deviceClass?: string; deviceName?: string;
    /** The device's proof (for the sign-in request): binds the session to its key. */
    proof?: Proof;
    /** Commit only if the sign-in signs out exactly these sessions ([]: none), else
     * SignInAborted; take them from previewSignIn's wouldReplace. */
    expectedReplacements?: readonly string[];
  }): Promise<IssuedToken>;
  /** What issueToken would do now, changing nothing. `proof`, where the authority requires
   * one, is only required here: not checked, nor used up for the sign-in. */
  previewSignIn(subject: string, deviceId: string, options?: CallOptions & {
    policy?: 'DEFAULT' | 'REPLACE' | 'REJECT'; deviceClass?: string; expectedReplacements?: readonly string[]; proof?: Proof;
  }): Promise<SignInPreview>;
  validateToken(token: string, audience?: string, options?: CallOptions & { proof?: Proof }): Promise<Validation>;
  /** Logout by access or refresh token, end one session, or sign a subject out: the sessions ended. */
  revokeToken(target: CallOptions & { reason?: string }
    & OneOf<{ token: string; refreshToken: string; sessionId: string; subject: string }>): Promise<number>;
  /** Ends every other live session of the subject of the session named: how many ended. */
  /** A token bound to a device key needs the device's `proof` for it (InvalidArgument without). */
  revokeOtherSessions(
    target: CallOptions & { reason?: string; proof?: Proof } & OneOf<{ token: string; sessionId: string }>,
  ): Promise<number>;
  /** A bound session needs `proof` by its key. */
  refreshToken(refreshToken: string, options?: CallOptions & { proof?: Proof }): Promise<IssuedToken>;
  listSessions(subject: string, options?: CallOptions): Promise<Session[]>;
  getSigningKeys(options?: CallOptions): Promise<string>;
  /** The public keys with the set's version. */
  getSigningKeySet(options?: CallOptions): Promise<SigningKeySet>;
  /** `epoch`: the one `afterSequence` came from; a position of another epoch fails with OUT_OF_RANGE. */
  watchRevocations(afterSequence?: bigint | number, options?: { heartbeatIntervalMs?: number; epoch?: string }): RevocationStream;
  /** Whether close() was called. */
  readonly closed: boolean;
  /** Closes the channel: every call after it rejects with Unavailable (a stream when read);
   * a revocation stream open now ends, its reading failing with Unavailable. */
  close(): void;
}

export declare function toStruct(object: Record<string, JsonValue>): unknown;
export declare function fromStruct(struct: unknown): Record<string, JsonValue>;

/** A consumer's copy of the live revocations, and how fresh it is. */
export declare class RevocationMirror {
  /** maxStalenessMs above 0, leewaySeconds at least 0 (TypeError or RangeError naming the option). */
  constructor(options?: { maxStalenessMs?: number; leewaySeconds?: number });
  readonly lastSequence: bigint;
  /** The epoch lastSequence is a position in ('' before any stream). */
  readonly epoch: string;
  readonly caughtUp: boolean;
  /** Drops the position (and the epoch); what is held stays held, but is not fresh until the next CAUGHT_UP. */
  restart(): void;
  /** Takes the event's epoch; false when it is another than the position's (the mirror then restarts). */
  sameEpoch(event: RevocationEvent): boolean;
  apply(event: RevocationEvent): void;
  stalenessMs(): number | null;
  isFresh(): boolean;
  isRevoked(sessionId: string, tokenId: string): boolean;
  /** The InvalidToken (with its cause) for a revoked token; null when it is not revoked. */
  refusal(sessionId: string, tokenId: string): InvalidToken | null;
  readonly size: number;
}

export interface Log { warn?(message: string): void; error?(message: string, error?: unknown): void }

/** Milliseconds above 0 and at most 2^31 - 1 (what a Node timer keeps); idleTimeoutMs above
 * heartbeatIntervalMs; maxBackoffMs at least minBackoffMs. A RangeError names the option
 * (`follow.minBackoffMs`). */
export interface FollowOptions {
  /** Default 1000; at least 1 (less would be sent as no interval, which the authority refuses). */
  heartbeatIntervalMs?: number;
  /** Default 3000. */
  idleTimeoutMs?: number;
  /** Default 50. */
  minBackoffMs?: number;
  /** Default 2000. */
  maxBackoffMs?: number;
}

/** The numeric options are checked at construction, in either mode: a TypeError for one
 * that is not a number, a RangeError for one out of range (NaN and Infinity always are),
 * naming it. Durations are at most ten years. */
export interface ValidatorOptions {
  client?: AuthorityClient;
  target?: string;
  clientOptions?: ClientOptions;
  mode?: 'remote' | 'local';
  issuer?: string;
  /** How long the revocation mirror may go unheard before it stops vouching, in ms (default 5000; above 0). */
  maxStalenessMs?: number;
  /** Clock skew allowed on exp, nbf and iat, in seconds (default 30; at least 0). */
  leewaySeconds?: number;
  /** The least time between two key fetches for an unknown kid, in ms (default 1000; at least 0). */
  keyRefetchIntervalMs?: number;
  /** Tokens remembered once verified in full (0: verify every call in full); an integer up to 10,000,000. */
  localCacheSize?: number;
  /** Local mode: seconds a proof's iat may be from now (default 60; above 0). */
  proofMaxAge?: number;
  /** Local mode: the (key, jti) pairs the replay cache holds at most (default 100,000; an
   * integer from 1 to 10,000,000). */
  proofReplayCacheSize?: number;
  follow?: FollowOptions;
  log?: Log;
}

/** The decisions of local mode that need no I/O (keys, mirror, verified tokens). */
export declare class LocalVerification {
  constructor(options?: Omit<ValidatorOptions, 'client' | 'target' | 'clientOptions' | 'mode' | 'follow'>);
  readonly mirror: RevocationMirror;
  /** `fetched`: a GetSigningKeys answer, which cannot bring back a key the stream withdrew.
   * A set of a lower `version` than one taken is ignored (stream sets of another `epoch`
   * start the count afresh; version 0: not known to be older). */
  readonly keys: {
    verifier: TokenVerifier | null;
    replace(jwksJson: string, options?: { fetched?: boolean; version?: number; epoch?: string }): Promise<boolean>;
    /** A stream's SIGNING_KEYS event. */
    replaceAnnounced(jwksJson: string, version?: number, epoch?: string): Promise<boolean>;
    /** A GetSigningKeys answer. */
    replaceFetched(keySet: SigningKeySet): Promise<boolean>;
  };
  /** This consumer's proof checker and its replay cache. */
  readonly proofs: ProofChecker;
  /** The claims, or a symbol saying the authority must be asked; throws InvalidToken. */
  decide(token: string, audience: string, proof?: Proof): AccessClaims | symbol;
}

/** Validates tokens in remote or local mode; rejects with InvalidToken or Unavailable. */
export declare class Validator {
  constructor(options: ValidatorOptions);
  readonly mode: 'remote' | 'local';
  readonly mirror: RevocationMirror | null;
  readonly local: LocalVerification | null;
  /** Resolves once started, or once close() came first; rejects with Unavailable after close(). */
  start(): Promise<this>;
  /** Rejects with Unavailable once closed. */
  waitUntilFresh(timeoutMs: number): Promise<boolean>;
  /** A bound token needs `proof`, the DPoP proof that came with it and its request. Rejects
   * with Unavailable once closed. */
  validate(token: string, audience: string, proof?: Proof): Promise<AccessClaims>;
  /** Stops following; every call after it rejects with Unavailable. */
  close(): Promise<void>;
}

export declare const MISSING: 'MISSING';
/** The longest Authorization value the Express middleware reads (bytes); longer is 400 OVERSIZED. */
export declare const MAX_AUTHORIZATION_BYTES: number;
export declare function bearerToken(header: string | undefined): string | undefined;
/** The scheme and token of an Authorization value (Bearer or DPoP, case-insensitive), or undefined. */
export declare function presentedToken(header: string | undefined): { scheme: 'Bearer' | 'DPoP'; token: string } | undefined;
/** The text of a refusal: MISSING_TEXT, or refusalText(reason, cause, deviceName). */
export declare function describe(reason: Reason | 'MISSING', cause?: Cause, deviceName?: string): string;

type GateOptions = Omit<ValidatorOptions, 'mode'> & {
  validator?: Validator;
  /** 'remote' unless given. */
  mode?: 'remote' | 'local';
  audience: string;
};

export interface TokenMiddleware extends RequestHandler {
  readonly ready: Promise<Validator>;
  readonly validator: Validator;
  close(): Promise<void>;
}

/** Express middleware: 401 per RFC 6750 for a missing or bad token (the DPoP challenge of RFC
 * 9449 for a DPoP token or a proof), 400 invalid_request for a token presented wrongly (a
 * RequestProblem), 503 when stale or when the check fails unexpectedly (logged); every
 * refusal Cache-Control: no-store; claims in req.auth. */
export declare function requireToken(options: GateOptions & {
  publicPaths?: Array<string | RegExp>;
  /** Printable ASCII (it is quoted into every challenge); default token-authority. */
  realm?: string;
  /** The 503's Retry-After: whole seconds, at least 0 (default 1). */
  retryAfterSeconds?: number;
  /** The scheme and host clients address ('https://api.example.com'), for proofs' htu behind a proxy,
   * with the path prefix a proxy strips if any; anything else is a TypeError. */
  externalOrigin?: string;
}): TokenMiddleware;

declare global {
  namespace Express {
    interface Request {
      /** The claims of the token requireToken accepted. */
      auth?: AccessClaims;
    }
  }
}

export declare const REASON_HEADER: 'x-token-invalid-reason';
export declare const CAUSE_HEADER: 'x-token-revocation-cause';
export declare const DEFAULT_PUBLIC: readonly string[];

export interface AuthInterceptor extends grpc.ServerInterceptor {
  readonly ready: Promise<Validator>;
  readonly validator: Validator;
  close(): Promise<void>;
}

/** A grpc-js server interceptor: UNAUTHENTICATED before the handler for a missing or bad token. */
export declare function authInterceptor(options: GateOptions & {
  audiences?: Record<string, string>;
  publicMethods?: string[];
  /** The authority clients address, for proofs' htu (default: each call's :authority). */
  externalAuthority?: string;
}): AuthInterceptor;

/** The claims of the token that let this call in (undefined for a public method). */
export declare function claimsOf(call: { metadata: grpc.Metadata }): AccessClaims | undefined;

/** Where grpc-js writes its lines: `console`, or an object with an `error` at least. */
export interface GrpcLogger {
  error(message?: any, ...rest: any[]): void;
  info?(message?: any, ...rest: any[]): void;
  debug?(message?: any, ...rest: any[]): void;
}

/** `message` with the value of a metadata entry grpc-js refused left out; anything else as it is. */
export declare function redactedGrpcLine<T>(message: T): T | string;

/**
 * A logger for grpc-js's `setLogger` that keeps metadata values (tokens among them) out of
 * its lines: `grpc.setLogger(redactedGrpcLogger())`. By default it writes to stderr, as
 * grpc-js does.
 */
export declare function redactedGrpcLogger(logger?: GrpcLogger): Readonly<Required<GrpcLogger>>;
