// Protobuf messages (as @grpc/proto-loader decodes them) to and from plain JavaScript:
// Timestamp to Date, Duration to milliseconds, Struct to and from plain objects.
import { MAX_JSON_DEPTH, frozen, readOnlyDate } from './json.js';
import { CAUSE_BY_NUMBER } from './reasons.js';

/** A Date from a Timestamp ({seconds: string, nanos}); undefined when unset. */
export function toDate(timestamp) {
  if (timestamp === null || timestamp === undefined) return undefined;
  return new Date(Number(timestamp.seconds) * 1000 + Math.floor(timestamp.nanos / 1e6));
}

/** A claims Timestamp as a read-only Date (claims are shared: see json.js frozen). */
function claimDate(timestamp) {
  const date = toDate(timestamp);
  return date === undefined ? undefined : readOnlyDate(date.getTime());
}

/** A Duration of `ms` milliseconds. */
export function duration(ms) {
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError('a duration is a number of milliseconds, not negative');
  const whole = Math.floor(ms / 1000);
  return { seconds: String(whole), nanos: Math.round((ms - whole * 1000) * 1e6) };
}

/** Milliseconds of a Duration. */
export function toMilliseconds(value) {
  return Number(value.seconds) * 1000 + value.nanos / 1e6;
}

/** A google.protobuf.Struct of a plain object; TypeError naming the path of a value it cannot hold. */
export function toStruct(object, path = 'claims', depth = 1) {
  if (object === null || typeof object !== 'object' || Array.isArray(object)) {
    throw new TypeError(`${path} must be a plain object`);
  }
  tooDeep(path, depth);
  const fields = {};
  for (const [name, value] of Object.entries(object)) fields[name] = toValue(value, `${path}.${name}`, depth + 1);
  return { fields };
}

// The claims object is the token's payload, the first of MAX_JSON_DEPTH levels any
// verifier reads; the authority refuses deeper claims, and a cycle would never end.
function tooDeep(path, depth) {
  if (depth > MAX_JSON_DEPTH) throw new TypeError(`${path}: claims must not nest more than ${MAX_JSON_DEPTH - 1} levels deep`);
}

function toValue(value, path, depth) {
  if (value === null) return { nullValue: 'NULL_VALUE' };
  switch (typeof value) {
    case 'string': return { stringValue: value };
    case 'boolean': return { boolValue: value };
    case 'number':
      // A Struct holds doubles: an integer past 2^53 would arrive as another number.
      if (!Number.isFinite(value) || (Number.isInteger(value) && !Number.isSafeInteger(value))) {
        throw new TypeError(`${path} is not a number a Struct holds exactly`);
      }
      return { numberValue: value };
    case 'object':
      if (Array.isArray(value)) {
        tooDeep(path, depth);
        return { listValue: { values: value.map((item, i) => toValue(item, `${path}[${i}]`, depth + 1)) } };
      }
      return { structValue: toStruct(value, path, depth) };
    default:
      throw new TypeError(`${path} cannot be sent as a claim (${typeof value})`);
  }
}

/** A plain object of a Struct. */
export function fromStruct(struct) {
  const object = {};
  for (const [name, value] of Object.entries(struct?.fields ?? {})) {
    Object.defineProperty(object, name, { value: fromValue(value), enumerable: true, writable: true, configurable: true });
  }
  return object;
}

function fromValue(value) {
  switch (value.kind) {
    case 'stringValue': return value.stringValue;
    case 'boolValue': return value.boolValue;
    case 'numberValue': return value.numberValue;
    case 'structValue': return fromStruct(value.structValue);
    case 'listValue': return (value.listValue.values ?? []).map(fromValue);
    default: return null;
  }
}

/** Claims of a ValidateToken answer, shaped (and frozen) as the local verifier's. */
export function claims(message) {
  return frozen({
    subject: message.subject,
    deviceId: message.deviceId,
    sessionId: message.sessionId,
    tokenId: message.tokenId,
    issuer: message.issuer,
    audience: message.audience,
    issuedAt: claimDate(message.issuedAt),
    expiresAt: claimDate(message.expiresAt),
    keyThumbprint: message.keyThumbprint ?? '',
    extra: fromStruct(message.extra),
  });
}

/** An issued token pair; its tokens are kept out of inspection output. */
export function issued(message) {
  const result = {
    sessionId: message.sessionId,
    expiresAt: toDate(message.expiresAt),
    refreshExpiresAt: toDate(message.refreshExpiresAt),
    replacedSessionIds: [...message.replacedSessionIds],
    // 'DPoP' for tokens bound to the proof's key; an authority from before proofs sends ''.
    tokenType: message.tokenType || 'Bearer',
  };
  // Not enumerable: console.log and JSON.stringify of a result do not print secrets.
  Object.defineProperty(result, 'accessToken', { value: message.accessToken, enumerable: false });
  Object.defineProperty(result, 'refreshToken', { value: message.refreshToken, enumerable: false });
  return result;
}

/** A session of ListSessions or PreviewSignIn; `lastUsedAt` (the last sign-in or refresh) is
 * null from an authority that does not send it. */
export function session(message) {
  return {
    sessionId: message.sessionId,
    subject: message.subject,
    deviceId: message.deviceId,
    createdAt: toDate(message.createdAt),
    expiresAt: toDate(message.expiresAt),
    deviceClass: message.deviceClass ?? '',
    deviceName: message.deviceName ?? '',
    lastUsedAt: toDate(message.lastUsedAt) ?? null,
  };
}

/** A PreviewSignIn answer: whether the sign-in would go through, and whom it would sign out. */
export function preview(message) {
  return { allowed: message.allowed, wouldReplace: (message.wouldReplace ?? []).map(session) };
}

/** `request` guarded by `expectedReplacements` (undefined: unguarded; [] : replace nothing). */
export function guard(request, expectedReplacements) {
  if (expectedReplacements === undefined) return request;
  if (!Array.isArray(expectedReplacements) || !expectedReplacements.every((id) => typeof id === 'string')) {
    throw new TypeError('expectedReplacements must be an array of session ids');
  }
  // Set even when empty: an empty SessionIds is the guard "sign out nobody".
  request.expectedReplacements = { sessionIds: [...expectedReplacements] };
  return request;
}

/** The one target named in `targets` as [field, value]; TypeError unless exactly one is given. */
function oneTarget(targets) {
  const named = Object.entries(targets).filter(([, value]) => value !== undefined);
  if (named.length !== 1) {
    const names = Object.keys(targets);
    throw new TypeError(`name exactly one of ${names.slice(0, -1).join(', ')} or ${names.at(-1)}`);
  }
  return named[0];
}

/** The RevokeToken request for exactly one of token, refreshToken, sessionId or subject. */
export function revokeRequest({ token, refreshToken, sessionId, subject }, reason) {
  const [field, value] = oneTarget({ token, refreshToken, sessionId, subject });
  return { reason, [field]: value };
}

/** The RevokeToken request that ends every other session of the one `token` or `sessionId` names. */
export function otherSessionsRequest({ token, sessionId }, reason) {
  const [field, value] = oneTarget({ token, sessionId });
  return { reason, otherSessions: { [field]: value } };
}

const EVENT_KINDS = {
  REVOCATION_EVENT_KIND_REVOCATION: 'REVOCATION',
  REVOCATION_EVENT_KIND_CAUGHT_UP: 'CAUGHT_UP',
  REVOCATION_EVENT_KIND_HEARTBEAT: 'HEARTBEAT',
  REVOCATION_EVENT_KIND_SIGNING_KEYS: 'SIGNING_KEYS',
};

/** A RevocationCause as its short name (REPLACED_BY_SIGN_IN); UNSPECIFIED for one this
 * version does not know. */
export function causeName(value) {
  const name = typeof value === 'string' ? value.replace(/^REVOCATION_CAUSE_/, '') : CAUSE_BY_NUMBER[value];
  return name !== undefined && CAUSE_BY_NUMBER.includes(name) ? name : 'UNSPECIFIED';
}

/** A WatchRevocations event; `sequence` is a bigint, as the uint64 it is, a position in
 * `epoch`. For a revocation, `cause` is the cause's short name and `replacedByDeviceId`
 * the device that signed in ('' unless REPLACED_BY_SIGN_IN). For SIGNING_KEYS,
 * `keySetVersion` is the set's version (see keySet); 0 when the server does not say. */
export function revocationEvent(message) {
  return {
    kind: EVENT_KINDS[message.kind] ?? 'UNSPECIFIED',
    sequence: BigInt(message.sequence),
    tokenId: message.tokenId,
    sessionId: message.sessionId,
    expiresAt: toDate(message.expiresAt),
    sentAt: toDate(message.sentAt),
    jwksJson: message.jwksJson,
    epoch: message.epoch ?? '',
    cause: causeName(message.cause),
    replacedByDeviceId: message.replacedByDeviceId ?? '',
    keySetVersion: keySetVersion(message.keySetVersion),
  };
}

/** A key set version (a uint64, as a decimal string) as a Number: the database counts
 * changes to the signing keys, so it stays far below 2^53. */
function keySetVersion(value) {
  return value === undefined || value === null ? 0 : Number(value);
}

/** A GetSigningKeys answer: the JWK Set (JSON text) and its version. Of two sets of one
 * log epoch the higher version is the newer, whichever replica answered; 0: the server
 * does not say (an authority older than versions). */
export function keySet(message) {
  return { jwksJson: message.jwksJson, version: keySetVersion(message.keySetVersion) };
}
