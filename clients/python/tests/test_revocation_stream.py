"""Local mode over time: revocation latency, key rotation, restarts and outages of the
authority while consumers follow its revocation stream."""

from __future__ import annotations

import time

import grpc
import pytest
from conftest import FLAVOURS, Consumer, StartConsumer

from authority.testing import InProcessAuthority

AUDIENCE = "greeter"


def eventually(condition: object, within: float, step: float = 0.01) -> float:
    """Seconds until ``condition()`` holds; fails after ``within``."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - started > within:
            pytest.fail(f"not within {within}s")
        time.sleep(step)
    return time.monotonic() - started


def status(consumer: Consumer, token: str) -> grpc.StatusCode:
    """The status of SayHello with ``token``."""
    try:
        consumer.say_hello(token)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


def accepted(consumer: Consumer, token: str) -> bool:
    return status(consumer, token) is grpc.StatusCode.OK


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_revocation_reaches_a_local_consumer_within_a_second(
    authority: InProcessAuthority, start_consumer: StartConsumer, flavour: str
) -> None:
    consumer = start_consumer(flavour, "local")
    assert consumer.wait_until_fresh()
    for attempt in range(5):
        token = authority.sign_in(f"user-{attempt}", "laptop", audience=AUDIENCE).access_token
        assert accepted(consumer, token)
        authority.client.revoke_token(token=token)
        # From RevokeToken returning to the consumer refusing the token.
        latency = eventually(lambda: not accepted(consumer, token), within=1.0, step=0.005)
        assert latency < 1.0
        assert consumer.refusal(token) == (grpc.StatusCode.UNAUTHENTICATED, "REVOKED")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_consumer_resumes_after_a_restart_without_missing_a_revocation(
    authority: InProcessAuthority, start_consumer: StartConsumer, flavour: str
) -> None:
    # A long staleness bound: the consumer rides out the outage on its last view, so
    # it learns of the revocation only from the resumed stream.
    consumer = start_consumer(flavour, "local", max_staleness=60)
    assert consumer.wait_until_fresh()
    alice = authority.sign_in("alice", "laptop", audience=AUDIENCE)
    bob = authority.sign_in("bob", "laptop", audience=AUDIENCE)
    assert accepted(consumer, alice.access_token) and accepted(consumer, bob.access_token)
    seen_before = consumer.mirror.last_sequence

    authority.stop()
    # While it is down, another authority process on the same database revokes bob.
    with InProcessAuthority(database_url=authority.database_url, audiences=("token-authority", AUDIENCE)) as other:
        assert other.client.revoke_token(session_id=bob.session_id) == 1
    assert consumer.mirror.last_sequence == seen_before
    authority.start()

    eventually(lambda: consumer.mirror.is_revoked(bob.session_id, ""), within=5.0)
    assert consumer.mirror.last_sequence > seen_before
    assert consumer.refusal(bob.access_token) == (grpc.StatusCode.UNAUTHENTICATED, "REVOKED")
    assert accepted(consumer, alice.access_token)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_stale_local_consumer_refuses_with_unavailable_and_recovers(
    authority: InProcessAuthority, start_consumer: StartConsumer, flavour: str
) -> None:
    consumer = start_consumer(flavour, "local", max_staleness=0.5)
    assert consumer.wait_until_fresh()
    token = authority.sign_in("alice", "laptop", audience=AUDIENCE).access_token
    assert accepted(consumer, token)

    authority.stop()
    eventually(lambda: status(consumer, token) is grpc.StatusCode.UNAVAILABLE, within=5.0, step=0.05)
    # Not before the bound: until then the last view still vouches. Nothing refreshes the
    # view while the authority is down, so its age, read just after the refusal, is over
    # the bound if the refusal was right, and an early refusal is caught unless it came
    # within the few milliseconds before the bound.
    staleness = consumer.mirror.staleness()
    assert staleness is not None and staleness > 0.5
    assert consumer.refusal(token) == (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
    # A bad token is still refused as bad: it needs no fresh view.
    assert consumer.refusal("garbage") == (grpc.StatusCode.UNAUTHENTICATED, "MALFORMED")

    authority.start()
    eventually(lambda: accepted(consumer, token), within=10.0, step=0.05)
    assert consumer.wait_until_fresh(5.0)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_local_consumer_follows_a_signing_key_rotation(
    authority: InProcessAuthority, start_consumer: StartConsumer, flavour: str
) -> None:
    consumer = start_consumer(flavour, "local")
    assert consumer.wait_until_fresh()
    old = authority.sign_in("alice", "laptop", audience=AUDIENCE).access_token
    assert accepted(consumer, old)
    keys = consumer.validator._decisions.keys  # noqa: SLF001
    assert keys is not None

    def consumer_kids() -> frozenset[str]:
        return keys.verifier.keys.kids if keys is not None and keys.verifier is not None else frozenset()

    # Published ahead: the consumer learns the key from the stream before any token uses it.
    ahead = authority.rotate_keys(publish_ahead=60)
    eventually(lambda: ahead in consumer_kids(), within=2.0)
    # Signing at once: the stream announced it, no refetch needed.
    now = authority.rotate_keys(publish_ahead=0)
    eventually(lambda: now in consumer_kids(), within=2.0)
    time.sleep(1.1)  # tokens carry whole seconds: the key signs from the next one
    new = authority.sign_in("bob", "phone", audience=AUDIENCE).access_token
    assert _kid(new) == now != _kid(old)
    assert accepted(consumer, new) and accepted(consumer, old)
    assert consumer.mirror.is_fresh()  # decided in-process, not by the fallback
    authority.client.revoke_token(token=new)
    eventually(lambda: not accepted(consumer, new), within=1.0)


def _kid(token: str) -> str:
    import base64
    import json

    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])
