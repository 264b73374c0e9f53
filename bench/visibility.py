"""How soon a revocation made on one replica is seen elsewhere.

Two ``authority serve`` processes share one PostgreSQL database. For each sample a new
subject signs in on replica A; replica B and a local-mode consumer (the client
package's :class:`~authority_client.Validator`, following WatchRevocations from B) both
accept the token first (the consumer then remembers it as verified). The token is
revoked through A, and from the moment RevokeToken returns this process polls, in one
tight loop, ValidateToken on B and the consumer's ``validate`` (in-process, no network)
until each has refused the token as REVOKED. The time to each one's first refusal is its
sample. The loop's resolution is one ValidateToken round trip on loopback (a fraction
of a millisecond); while that call waits, the consumer's follower thread gets the GIL.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
import grpc
from authority_client import InvalidReason, Validator
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc
from authority_client.verify import InvalidToken

from bench.consumer import close, local_validator

# A revocation not seen within this long is a failed sample (and fails the run).
GIVE_UP_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class Delays:
    """Seconds from RevokeToken returning to each observer's first refusal, sorted."""

    replica: list[float]
    consumer: list[float]


def _consumer_refuses(validator: Validator, token: str, audience: str) -> bool:
    try:
        validator.validate(token, audience)
    except InvalidToken as invalid:
        if invalid.reason is not InvalidReason.REVOKED:
            raise RuntimeError(f"the consumer refused the token as {invalid.reason.name}, not REVOKED") from None
        # A stale mirror hands the decision to ValidateToken on B: that would time B
        # again, not the consumer's own view.
        if validator.mirror is None or not validator.mirror.is_fresh():
            raise RuntimeError("the consumer's mirror went stale during the measurement") from None
        return True
    return False


def measure(replica_a: str, replica_b: str, issuer: str, audience: str, leeway: float, samples: int) -> Delays:
    """``samples`` revocations through ``replica_a``, each timed until ``replica_b`` and a
    consumer following ``replica_b`` refuse the token."""
    validator = local_validator(replica_b, issuer, leeway)
    replica: list[float] = []
    consumer: list[float] = []
    try:
        with grpc.insecure_channel(replica_a) as channel_a, grpc.insecure_channel(replica_b) as channel_b:
            a = authority_pb2_grpc.TokenAuthorityStub(channel_a)
            b = authority_pb2_grpc.TokenAuthorityStub(channel_b)
            run = secrets.token_hex(3)
            for n in range(samples):
                token = a.IssueToken(pb.IssueTokenRequest(subject=f"bench-visibility-{run}-{n}", device_id="laptop"),
                                     timeout=30).access_token
                validate = pb.ValidateTokenRequest(token=token, audience=audience)
                if not b.ValidateToken(validate, timeout=30).valid or _consumer_refuses(validator, token, audience):
                    raise RuntimeError("a freshly issued token was not valid everywhere before its revocation")
                a.RevokeToken(pb.RevokeTokenRequest(token=token, reason="bench"), timeout=30)
                revoked = time.perf_counter()
                seen_by_replica = seen_by_consumer = 0.0
                while not (seen_by_replica and seen_by_consumer):
                    if not seen_by_consumer and _consumer_refuses(validator, token, audience):
                        seen_by_consumer = time.perf_counter() - revoked
                    if not seen_by_replica:
                        answer = b.ValidateToken(validate, timeout=30)
                        if not answer.valid:
                            if answer.reason != pb.INVALID_REASON_REVOKED:
                                raise RuntimeError(f"replica B refused the token with reason {answer.reason}, "
                                                   "not REVOKED")
                            seen_by_replica = time.perf_counter() - revoked
                    else:
                        time.sleep(0.0001)  # only the consumer left: let its follower thread run
                    if time.perf_counter() - revoked > GIVE_UP_SECONDS:
                        raise RuntimeError(f"a revocation was not seen within {GIVE_UP_SECONDS:g} s")
                replica.append(seen_by_replica)
                consumer.append(seen_by_consumer)
    finally:
        close(validator)
    return Delays(sorted(replica), sorted(consumer))
