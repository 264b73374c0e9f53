// A grpc-js (1.10+) server interceptor that lets a call reach its handler only with a
// valid bearer token. A refused call ends with UNAUTHENTICATED (UNAVAILABLE when the token
// cannot be checked) before the handler runs, with the reason's name in the trailing
// metadata under the same keys as the Python interceptors: x-token-invalid-reason (and
// x-token-revocation-cause, once the authority sends causes). The status details are the
// reason's text from the one table, as the Express middleware's error_description. The
// handler reads the claims with claimsOf(call).
//
// Device-bound tokens (RFC 9449): `authorization: DPoP <token>` with the proof in exactly
// one `dpop` metadata value (two are BAD_PROOF); htm is POST and htu
// `https://<authority>/<package.Service>/<Method>`, the authority being the call's own
// (call.getHost(), its :authority) unless `externalAuthority` names the one clients
// address. A bound token sent as Bearer is PROOF_REQUIRED.
//
// The check runs when the call's metadata arrives; grpc-js holds the messages back until
// it passes it on. The claims are filed under that metadata object, which grpc-js hands
// to the handler as call.metadata: nothing a caller sends can forge them.
import * as grpc from '@grpc/grpc-js';

import { check, presentedToken, validatorFrom } from './access.js';
import { DPOP_HEADER, grpcProofUri } from './proof.js';

export const REASON_HEADER = 'x-token-invalid-reason';
export const CAUSE_HEADER = 'x-token-revocation-cause';
/** The standard health and reflection services answer without a token by default. */
export const DEFAULT_PUBLIC = Object.freeze([
  'grpc.health.v1.Health', 'grpc.reflection.v1.ServerReflection', 'grpc.reflection.v1alpha.ServerReflection',
]);

const claimsByMetadata = new WeakMap();

/** The claims of the token that let this call in (undefined for a public method). */
export function claimsOf(call) {
  return claimsByMetadata.get(call.metadata);
}

const serviceOf = (path) => path.replace(/^\//, '').split('/')[0];

/** The `audiences` option as a Map; TypeError for an entry that is not a non-empty string:
 * ValidateToken reads '' as the authority's default audience, and local mode as no token's. */
function audienceMap(audiences) {
  if (audiences === null || typeof audiences !== 'object' || Array.isArray(audiences)) {
    throw new TypeError('authInterceptor: audiences maps services and methods to audiences');
  }
  const byName = new Map(Object.entries(audiences));
  for (const [name, value] of byName) {
    if (typeof value !== 'string' || value === '') throw new TypeError(`authInterceptor: audiences[${JSON.stringify(name)}] needs an audience`);
  }
  return byName;
}

/**
 * The interceptor, for `new grpc.Server({ interceptors: [...] })`. Options: validator |
 * client | target (+ clientOptions), mode ('remote' default, or 'local'), audience (the
 * default), audiences ({'pkg.Service' or '/pkg.Service/Method': audience}), publicMethods
 * (services or methods added to health and reflection), externalAuthority (the authority
 * clients address, for the htu of proofs: by default each call's :authority), and the
 * Validator's options.
 * The returned function has `ready` and `close()`.
 */
export function authInterceptor({
  audience, audiences = {}, publicMethods = [], externalAuthority, log = console, ...options
} = {}) {
  if (typeof audience !== 'string' || audience === '') throw new TypeError('authInterceptor needs an audience');
  const byName = audienceMap(audiences);
  const { validator, ready, owned } = validatorFrom({ log, ...options });
  ready.catch(() => {});
  const publicNames = new Set([...DEFAULT_PUBLIC, ...publicMethods]);
  const isPublic = (path) => publicNames.has(path) || publicNames.has(serviceOf(path));
  const audienceFor = (path) => byName.get(path) ?? byName.get(serviceOf(path)) ?? audience;

  function refuse(call, code, details, reason, cause) {
    const trailer = new grpc.Metadata();
    trailer.set(REASON_HEADER, reason);
    if (cause !== undefined) trailer.set(CAUSE_HEADER, cause);
    call.sendStatus({ code, details, metadata: trailer });
  }

  function interceptor(methodDescriptor, call) {
    const path = methodDescriptor.path;
    if (isPublic(path)) return new grpc.ServerInterceptingCall(call);
    const listener = new grpc.ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const [header] = metadata.get('authorization');
        const request = {
          proofs: metadata.get(DPOP_HEADER),
          httpMethod: 'POST',
          httpUri: () => grpcProofUri(externalAuthority ?? call.getHost(), path),
        };
        ready
          .then(() => check(validator, presentedToken(header), audienceFor(path), request))
          .then((outcome) => {
            if (outcome.claims !== undefined) {
              claimsByMetadata.set(metadata, outcome.claims);
              next(metadata);
            } else if (outcome.refusal.kind === 'unavailable') {
              refuse(call, grpc.status.UNAVAILABLE, outcome.refusal.text, 'UNAVAILABLE');
            } else {
              refuse(call, grpc.status.UNAUTHENTICATED, outcome.refusal.text, outcome.refusal.reason, outcome.refusal.cause);
            }
          })
          .catch((error) => {
            // A bug, not the caller's doing: fail closed; the detail stays in the log.
            log.error?.('token check failed', error);
            refuse(call, grpc.status.INTERNAL, 'internal error', 'INTERNAL');
          });
      })
      .build();
    const responder = new grpc.ResponderBuilder().withStart((next) => next(listener)).build();
    return new grpc.ServerInterceptingCall(call, responder);
  }

  interceptor.ready = ready;
  interceptor.validator = validator;
  interceptor.close = async () => { if (owned) await validator.close(); };
  return interceptor;
}
