// The errors the client throws in place of grpc-js's: every failed call becomes one of
// these at one seam (fromServiceError), carrying the gRPC `code` and the server's `details`.
//
//   AuthorityError
//   ├── Unavailable           UNAVAILABLE: the authority (or its database) cannot be reached
//   ├── DeadlineExceeded      DEADLINE_EXCEEDED
//   ├── Unauthenticated       UNAUTHENTICATED: this caller was not recognised
//   │   └── RefreshRejected   a refresh token that is unknown, ended or already used
//   ├── PermissionDenied      PERMISSION_DENIED
//   ├── InvalidArgument       INVALID_ARGUMENT: `details` names the field
//   ├── SessionLimitReached   FAILED_PRECONDITION: a REJECT sign-in while another device is signed in
//   ├── SignInAborted         ABORTED: a guarded sign-in would sign out other sessions than expected
//   ├── ResourceExhausted     RESOURCE_EXHAUSTED
//   └── Internal              any other status
import { status } from '@grpc/grpc-js';

/** A call to the token authority failed; `code` is the gRPC status code. */
export class AuthorityError extends Error {
  constructor(details = '', code = status.UNKNOWN) {
    super(details || new.target.name);
    this.name = new.target.name;
    this.details = details;
    this.code = code;
  }
}

/** The authority, or the database behind it, cannot be reached right now. */
export class Unavailable extends AuthorityError {
  constructor(details = '', code = status.UNAVAILABLE) {
    super(details, code);
  }
}

/** No answer within the call's deadline. */
export class DeadlineExceeded extends AuthorityError {
  constructor(details = '', code = status.DEADLINE_EXCEEDED) {
    super(details, code);
  }
}

/** The authority did not recognise this caller. */
export class Unauthenticated extends AuthorityError {
  constructor(details = '', code = status.UNAUTHENTICATED) {
    super(details, code);
  }
}

/** The refresh token is unknown, its session ended, or it was already used. */
export class RefreshRejected extends Unauthenticated {}

/** This caller may not make this call. */
export class PermissionDenied extends AuthorityError {
  constructor(details = '', code = status.PERMISSION_DENIED) {
    super(details, code);
  }
}

/** The request was refused as it stands; `details` names the field. */
export class InvalidArgument extends AuthorityError {
  constructor(details = '', code = status.INVALID_ARGUMENT) {
    super(details, code);
  }
}

/** A sign-in under policy REJECT while the subject is signed in elsewhere. */
export class SessionLimitReached extends AuthorityError {
  constructor(details = '', code = status.FAILED_PRECONDITION) {
    super(details, code);
  }
}

/** A guarded sign-in (`expectedReplacements`) would sign out other sessions than expected;
 * nothing changed: preview again and ask the user again. */
export class SignInAborted extends AuthorityError {
  constructor(details = '', code = status.ABORTED) {
    super(details, code);
  }
}

/** Too many calls, or a revocation watcher fell too far behind. */
export class ResourceExhausted extends AuthorityError {
  constructor(details = '', code = status.RESOURCE_EXHAUSTED) {
    super(details, code);
  }
}

/** The authority failed in a way the caller cannot fix. */
export class Internal extends AuthorityError {
  constructor(details = '', code = status.INTERNAL) {
    super(details, code);
  }
}

const BY_CODE = new Map([
  [status.UNAVAILABLE, Unavailable],
  [status.DEADLINE_EXCEEDED, DeadlineExceeded],
  [status.UNAUTHENTICATED, Unauthenticated],
  [status.PERMISSION_DENIED, PermissionDenied],
  [status.INVALID_ARGUMENT, InvalidArgument],
  [status.FAILED_PRECONDITION, SessionLimitReached],
  [status.ABORTED, SignInAborted],
  [status.RESOURCE_EXHAUSTED, ResourceExhausted],
]);

/** The AuthorityError for a failed grpc-js call (`refreshing`: it was RefreshToken). */
export function fromServiceError(error, { refreshing = false } = {}) {
  const code = typeof error?.code === 'number' ? error.code : status.UNKNOWN;
  const details = typeof error?.details === 'string' ? error.details : '';
  if (refreshing && code === status.UNAUTHENTICATED) return new RefreshRejected(details, code);
  const Class = BY_CODE.get(code) ?? Internal;
  return new Class(details, code);
}
