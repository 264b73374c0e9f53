// AuthorityClient: every RPC of the token authority over grpc-js, with promises, a
// deadline on every call, and errors translated to the AuthorityError tree.
//
// Retries are gRPC's own (a retryPolicy in the channel's service config), on UNAVAILABLE
// only and only for calls that are safe to repeat, as in the Python client: ValidateToken
// and GetSigningKeys read, and RevokeToken of an already revoked target changes nothing.
// A sign-in or a refresh is never repeated behind the caller's back: a refresh sent twice
// would be taken for a stolen refresh token.
//
// After close() every call rejects with Unavailable (a stream fails with it when read),
// never with grpc-js's own Error for a channel that has been shut down.
import * as grpc from '@grpc/grpc-js';

import * as convert from './convert.js';
import { Unavailable, fromServiceError } from './errors.js';
import { checkNumber } from './options.js';
import { authorityPackage } from './protos.js';
import { REASON_BY_NUMBER } from './reasons.js';

const SERVICE = 'authority.v1.TokenAuthority';
const IDEMPOTENT_METHODS = ['ValidateToken', 'GetSigningKeys', 'RevokeToken'];
export const API_KEY_HEADER = 'x-api-key';
const CLOSED_MESSAGE = 'the authority client is closed';
const POLICIES = { DEFAULT: 'SESSION_POLICY_UNSPECIFIED', REPLACE: 'SESSION_POLICY_REPLACE', REJECT: 'SESSION_POLICY_REJECT' };

function serviceConfig({ maxAttempts, initialBackoffMs, maxBackoffMs }) {
  return {
    loadBalancingConfig: [{ round_robin: {} }],
    methodConfig: [{
      name: IDEMPOTENT_METHODS.map((method) => ({ service: SERVICE, method })),
      retryPolicy: {
        maxAttempts,
        // grpc-js takes at most nine decimals: 1/3 ms written in full would be refused.
        initialBackoff: `${(initialBackoffMs / 1000).toFixed(9)}s`,
        maxBackoff: `${(maxBackoffMs / 1000).toFixed(9)}s`,
        backoffMultiplier: 2,
        retryableStatusCodes: ['UNAVAILABLE'],
      },
    }],
  };
}

function channelCredentials({ credentials, tls }) {
  if (credentials !== undefined) return credentials;
  if (tls === undefined || tls === false) return grpc.credentials.createInsecure();
  const { ca = null, cert = null, key = null } = tls === true ? {} : tls;
  if ((cert === null) !== (key === null)) throw new TypeError('tls: give both cert and key for mTLS, or neither');
  return grpc.credentials.createSsl(ca, key, cert);
}

/** The ProofOfPossession message of {proof, httpMethod, httpUri}. */
function proofMessage({ proof, httpMethod, httpUri }) {
  return { proof, httpMethod, httpUri };
}

/** The SessionPolicy enum name of 'DEFAULT', 'REPLACE' or 'REJECT'. */
function sessionPolicy(policy) {
  if (!Object.hasOwn(POLICIES, policy)) throw new TypeError('policy must be DEFAULT, REPLACE or REJECT');
  return POLICIES[policy];
}

/** A client of the token authority. */
export class AuthorityClient {
  /**
   * @param {string} target host:port, or a grpc-js target such as dns:///authority:50051
   * @param {object} [options] credentials | tls ({ca, cert, key}: Buffers; cert and key for
   *   mTLS), apiKey, timeoutMs (every unary call's deadline, retries included), maxAttempts,
   *   initialBackoffMs, maxBackoffMs, channelOptions. The durations are milliseconds: finite,
   *   timeoutMs above 0, the backoffs at least 1, all at most ten years; maxAttempts an
   *   integer of at least 2 (grpc-js makes no more than 5, its retry_max_attempts_limit).
   *   TypeError for an option that is not a number, RangeError for one out of range.
   */
  constructor(target, options = {}) {
    const {
      apiKey, timeoutMs = 2000, maxAttempts = 4, initialBackoffMs = 50, maxBackoffMs = 1000, channelOptions = {},
    } = options;
    if (typeof target !== 'string' || target === '') throw new TypeError('target must be host:port');
    checkNumber('timeoutMs', timeoutMs, { above: true });
    checkNumber('maxAttempts', maxAttempts, { min: 2, max: Number.MAX_SAFE_INTEGER, integer: true });
    checkNumber('initialBackoffMs', initialBackoffMs, { min: 1 });
    checkNumber('maxBackoffMs', maxBackoffMs, { min: 1 });
    const Service = authorityPackage().TokenAuthority;
    this.timeoutMs = timeoutMs;
    /** Whether close() was called: every call then rejects with Unavailable. */
    this.closed = false;
    /** The revocation streams open now, which close() ends. */
    this.streams = new Set();
    this.stub = new Service(target, channelCredentials(options), {
      'grpc.service_config': JSON.stringify(serviceConfig({ maxAttempts, initialBackoffMs, maxBackoffMs })),
      // Pings only while calls are open, so a dead peer is noticed on a quiet stream.
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      ...channelOptions,
    });
    this.metadata = new grpc.Metadata();
    if (apiKey) {
      // grpc-js's own refusal quotes the value: the key would reach a crash log.
      if (typeof apiKey !== 'string' || !/^[!-~](?:[ -~]*[!-~])?$/.test(apiKey)) {
        throw new TypeError(
          'apiKey must be printable ASCII without spaces at its ends (one read from a file may end in a newline)',
        );
      }
      this.metadata.set(API_KEY_HEADER, apiKey);
    }
  }

  call(method, request, { timeoutMs = this.timeoutMs, refreshing = false } = {}) {
    if (this.closed) return Promise.reject(new Unavailable(CLOSED_MESSAGE));
    // Infinity would be no deadline at all.
    checkNumber('timeoutMs', timeoutMs, { above: true });
    return new Promise((resolve, reject) => {
      this.stub[method](request, this.metadata, { deadline: Date.now() + timeoutMs }, (error, response) => {
        if (error) reject(fromServiceError(error, { refreshing }));
        else resolve(response);
      });
    });
  }

  /** Signs `subject` in on `deviceId` (of `deviceClass`, labelled `deviceName` for the
   * device list and for the device it signs out); never retried (a sign-in is not idempotent).
   * With `proof` (the device's DPoP proof and the request it came with) the tokens are
   * bound to the proof's key, and the result's tokenType is 'DPoP'. With
   * `expectedReplacements` (session ids, from previewSignIn) it commits only if it would
   * sign out exactly those sessions ([]: none), else rejects with SignInAborted and
   * changes nothing. */
  async issueToken(subject, deviceId, {
    policy = 'DEFAULT', audience = '', claims, ttlMs, timeoutMs, deviceClass = '', deviceName = '', proof,
    expectedReplacements,
  } = {}) {
    const request = { subject, deviceId, policy: sessionPolicy(policy), audience, deviceClass, deviceName };
    convert.guard(request, expectedReplacements);
    if (proof !== undefined) request.proof = proofMessage(proof);
    if (claims !== undefined) request.claims = convert.toStruct(claims);
    if (ttlMs !== undefined) request.ttl = convert.duration(ttlMs);
    return convert.issued(await this.call('IssueToken', request, { timeoutMs }));
  }

  /** The authority's verdict: {valid: true, claims} or {valid: false, reason}; for REVOKED
   * also revocationCause (its short name), revokedAt and, for a replacement,
   * replacedByDeviceId and replacedByDeviceName. `proof`: the DPoP proof that came with a
   * bound token, and the request it came with (PROOF_REQUIRED without one). */
  async validateToken(token, audience = '', { timeoutMs, proof } = {}) {
    const request = { token, audience };
    if (proof !== undefined) request.proof = proofMessage(proof);
    const response = await this.call('ValidateToken', request, { timeoutMs });
    if (response.valid) return { valid: true, claims: convert.claims(response.claims) };
    const named = typeof response.reason === 'string'
      ? response.reason.replace(/^INVALID_REASON_/, '')
      : REASON_BY_NUMBER[response.reason];
    const reason = named === 'UNSPECIFIED' || named === undefined ? 'MALFORMED' : named;
    if (reason !== 'REVOKED') return { valid: false, reason };
    return {
      valid: false,
      reason,
      revocationCause: convert.causeName(response.revocationCause),
      revokedAt: convert.toDate(response.revokedAt),
      replacedByDeviceId: response.replacedByDeviceId ?? '',
      replacedByDeviceName: response.replacedByDeviceName ?? '',
    };
  }

  /** Logout by access token or refresh token (either works for the session's whole life),
   * end one session, or sign a subject out; resolves to the sessions ended. */
  async revokeToken({ token, refreshToken, sessionId, subject, reason = '', timeoutMs } = {}) {
    const request = convert.revokeRequest({ token, refreshToken, sessionId, subject }, reason);
    return (await this.call('RevokeToken', request, { timeoutMs })).revokedSessions;
  }

  /** "Sign out my other devices": ends every other live session of the subject of the session
   * that `token` (an access token) or `sessionId` names; resolves to how many ended. A token
   * bound to a device key needs the `proof` the device sent with the request that asked for
   * this (with ath); without a good one the call rejects with InvalidArgument. */
  async revokeOtherSessions({ token, sessionId, reason = '', timeoutMs, proof } = {}) {
    const request = convert.otherSessionsRequest({ token, sessionId }, reason);
    if (proof !== undefined) request.otherSessions.proof = proofMessage(proof);
    return (await this.call('RevokeToken', request, { timeoutMs })).revokedSessions;
  }

  /** What issueToken would do now, changing nothing: {allowed, wouldReplace} (the sessions it
   * would sign out, or when not allowed would have to). Where the authority requires proofs,
   * give the sign-in's `proof`: it is only required here, not checked nor used up. */
  async previewSignIn(subject, deviceId, {
    policy = 'DEFAULT', deviceClass = '', expectedReplacements, proof, timeoutMs,
  } = {}) {
    const request = convert.guard({ subject, deviceId, policy: sessionPolicy(policy), deviceClass }, expectedReplacements);
    if (proof !== undefined) request.proof = proofMessage(proof);
    return convert.preview(await this.call('PreviewSignIn', request, { timeoutMs }));
  }

  /** A new token pair on the same session; rejects with RefreshRejected for a dead refresh
   * token, and for a bound session without a good `proof` by its key. */
  async refreshToken(refreshToken, { timeoutMs, proof } = {}) {
    const request = { refreshToken };
    if (proof !== undefined) request.proof = proofMessage(proof);
    return convert.issued(await this.call('RefreshToken', request, { timeoutMs, refreshing: true }));
  }

  /** The subject's live sessions, oldest first. */
  async listSessions(subject, { timeoutMs } = {}) {
    return (await this.call('ListSessions', { subject }, { timeoutMs })).sessions.map(convert.session);
  }

  /** The public keys as a JWK Set (JSON text). */
  async getSigningKeys({ timeoutMs } = {}) {
    return (await this.getSigningKeySet({ timeoutMs })).jwksJson;
  }

  /** The public keys with the set's version: {jwksJson, version} (see convert.keySet). */
  async getSigningKeySet({ timeoutMs } = {}) {
    return convert.keySet(await this.call('GetSigningKeys', {}, { timeoutMs }));
  }

  /** The revocation stream after `afterSequence` (a bigint or number) of `epoch` (the epoch
   * of the event it came from; a position of another epoch fails with OUT_OF_RANGE); no deadline. */
  watchRevocations(afterSequence = 0n, { heartbeatIntervalMs, epoch = '' } = {}) {
    const request = { afterSequence: String(afterSequence), epoch };
    if (heartbeatIntervalMs !== undefined) request.heartbeatInterval = convert.duration(heartbeatIntervalMs);
    if (this.closed) return new RevocationStream(null, new Unavailable(CLOSED_MESSAGE));
    const stream = new RevocationStream(this.stub.WatchRevocations(request, this.metadata));
    // Kept until it ends, so that close() can end it: a stream, unlike a call, has no end of its own.
    this.streams.add(stream);
    stream.grpcCall.on('close', () => this.streams.delete(stream));
    return stream;
  }

  /** Closes the channel; every call after rejects with Unavailable. Calls already under way
   * run to their end, but a revocation stream still open ends at once, its reading failing
   * with Unavailable. Closing twice is closing once. */
  close() {
    if (this.closed) return;
    this.closed = true;
    for (const stream of this.streams) stream.end(new Unavailable(CLOSED_MESSAGE));
    this.streams.clear();
    this.stub.close();
  }
}

/** An open WatchRevocations call: iterate it for events; cancel() ends it. */
export class RevocationStream {
  /** `failure`: the error reading fails with when there is no call (a closed client). */
  constructor(call, failure = undefined) {
    this.grpcCall = call;
    this.failure = failure;
  }

  async *[Symbol.asyncIterator]() {
    if (this.grpcCall === null) throw this.failure;
    try {
      for await (const message of this.grpcCall) yield convert.revocationEvent(message);
    } catch (error) {
      throw this.failure ?? fromServiceError(error);
    } finally {
      this.grpcCall.cancel();
    }
  }

  /** Ends the call; the iteration then ends with a CANCELLED error or stops. */
  cancel() {
    this.grpcCall?.cancel();
  }

  /** Ends the call, the iteration failing with `failure` (the client was closed). */
  end(failure) {
    this.failure = failure;
    this.grpcCall?.cancel();
  }
}
