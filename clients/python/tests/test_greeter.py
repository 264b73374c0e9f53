"""The greeter example against a real authority: both interceptor flavours, every mode."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from conftest import FLAVOURS, MODES, Consumer, StartConsumer

from authority.testing import InProcessAuthority

AUDIENCE = "greeter"


def wait_for_refusal(consumer: Consumer, token: str, within: float) -> float:
    """Seconds until SayHello with ``token`` is refused; fails after ``within``."""
    started = time.monotonic()
    while consumer.accepts(token):
        if time.monotonic() - started > within:
            pytest.fail(f"the token was still accepted after {within}s")
        time.sleep(0.01)
    return time.monotonic() - started


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_second_device_signs_out_the_first(
    authority: InProcessAuthority, start_consumer: StartConsumer, flavour: str, mode: str
) -> None:
    consumer = start_consumer(flavour, mode)
    assert consumer.wait_until_fresh()
    laptop = authority.sign_in("alice", "laptop", audience=AUDIENCE)
    assert consumer.say_hello(laptop.access_token, "bob") == "hello bob, you are alice on laptop"

    phone = authority.sign_in("alice", "phone", audience=AUDIENCE)
    assert phone.replaced_session_ids == (laptop.session_id,)

    if mode != "remote":
        # Seen through the revocation stream (local mode; the cache's eviction): within
        # its latency, well under a second.
        assert wait_for_refusal(consumer, laptop.access_token, within=1.0) < 1.0
    assert consumer.refusal(laptop.access_token) == (grpc.StatusCode.UNAUTHENTICATED, "REVOKED")
    assert consumer.say_hello(phone.access_token) == "hello world, you are alice on phone"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_calls_without_a_good_token_never_reach_the_handler(
    authority: InProcessAuthority, start_consumer: StartConsumer, flavour: str, mode: str
) -> None:
    consumer = start_consumer(flavour, mode)
    assert consumer.wait_until_fresh()
    other_audience = authority.sign_in("carol", "laptop")  # for token-authority, not greeter
    assert consumer.refusal(None) == (grpc.StatusCode.UNAUTHENTICATED, "MISSING")
    assert consumer.refusal("not-a-token") == (grpc.StatusCode.UNAUTHENTICATED, "MALFORMED")
    assert consumer.refusal(other_audience.access_token) == (grpc.StatusCode.UNAUTHENTICATED, "WRONG_AUDIENCE")
    expired = authority.mint("dave", audience=AUDIENCE, ttl=-60)
    assert consumer.refusal(expired) == (grpc.StatusCode.UNAUTHENTICATED, "EXPIRED")


@pytest.mark.parametrize("mode", ["remote", "local"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_public_methods_answer_without_a_token_and_see_no_claims(
    authority: InProcessAuthority, start_consumer: StartConsumer, flavour: str, mode: str
) -> None:
    consumer = start_consumer(flavour, mode)
    token = authority.sign_in("erin", "laptop", audience=AUDIENCE).access_token
    # Many authenticated calls first, so every pool thread has handled one: none may
    # carry its caller's claims into the public call after it.
    for _ in range(20):
        consumer.say_hello(token)
    import greeter

    for _ in range(20):
        assert greeter.ping(consumer.channel) == "pong"
        assert greeter.ping(consumer.channel, token) == "pong"


def test_refusal_message_is_generic_and_never_echoes_the_token(
    authority: InProcessAuthority, start_consumer: StartConsumer
) -> None:
    consumer = start_consumer("grpc", "local")
    token = authority.mint("frank", audience=AUDIENCE, ttl=-60)
    with pytest.raises(grpc.RpcError) as failed:
        consumer.say_hello(token)
    error: grpc.Call = failed.value  # type: ignore[assignment]
    assert error.details() == "a valid bearer token is required"
    assert token not in str(error.details()) and token not in str(error.trailing_metadata())


def test_bearer_interceptor_attaches_the_current_token(
    authority: InProcessAuthority, start_consumer: StartConsumer
) -> None:
    import greeter
    from authority_client import BearerToken

    consumer = start_consumer("grpc", "remote")
    tokens = [authority.sign_in("gina", "laptop", audience=AUDIENCE).access_token]
    channel = grpc.intercept_channel(consumer.channel, BearerToken(lambda: tokens[-1]))
    assert greeter.say_hello(channel, "x") == "hello x, you are gina on laptop"
    tokens.append(authority.sign_in("gina", "phone", audience=AUDIENCE).access_token)
    # Asked on every call: the new token goes out, the revoked one is gone.
    assert greeter.say_hello(channel, "x") == "hello x, you are gina on phone"


async def test_async_bearer_interceptor_attaches_the_current_token(
    authority: InProcessAuthority, start_consumer: StartConsumer
) -> None:
    import greeter
    from authority_client import AsyncBearerToken

    consumer = start_consumer("grpc", "remote")
    token = authority.sign_in("hank", "laptop", audience=AUDIENCE).access_token

    async def current_token() -> str:
        return token

    async with grpc.aio.insecure_channel(consumer.target, interceptors=[AsyncBearerToken(current_token)]) as channel:
        call = channel.unary_unary(greeter.SAY_HELLO, request_serializer=str.encode, response_deserializer=bytes.decode)
        assert await call("y", timeout=5) == "hello y, you are hank on laptop"
        # Metadata the caller gives is kept alongside.
        assert await call("z", timeout=5, metadata=(("x-trace", "1"),)) == "hello z, you are hank on laptop"


async def test_an_asyncio_consumer_tests_itself_in_one_event_loop() -> None:
    """How a grpc.aio service writes its own test: authority, validator and service in one loop."""
    import greeter
    from authority_client import AsyncValidator, Mode, ValidationSettings

    from authority.testing import AsyncInProcessAuthority

    async with AsyncInProcessAuthority(audiences=("token-authority", AUDIENCE)) as authority:
        async with AsyncValidator(authority.client, ValidationSettings(mode=Mode.LOCAL)) as validator:
            assert await validator.wait_until_fresh(10)
            server, port = await greeter.create_aio_server(validator)
            try:
                laptop = await authority.sign_in("ada", "laptop", audience=AUDIENCE)
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    call = channel.unary_unary(
                        greeter.SAY_HELLO, request_serializer=str.encode, response_deserializer=bytes.decode
                    )
                    metadata = (("authorization", f"Bearer {laptop.access_token}"),)
                    assert await call("x", metadata=metadata, timeout=5) == "hello x, you are ada on laptop"
                    await authority.sign_in("ada", "phone", audience=AUDIENCE)
                    for _ in range(100):
                        try:
                            await call("x", metadata=metadata, timeout=5)
                        except grpc.aio.AioRpcError as error:
                            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
                            break
                        await asyncio.sleep(0.01)
                    else:
                        pytest.fail("the replaced device's token was still accepted after a second")
            finally:
                await server.stop(None)


def _cause_trailer(consumer: Consumer, token: str) -> tuple[str, str]:
    """The reason and the cause of a refused SayHello, from its trailing metadata."""
    with pytest.raises(grpc.RpcError) as failed:
        consumer.say_hello(token)
    trailers = dict(failed.value.trailing_metadata() or ())  # type: ignore[attr-defined]
    return trailers.get("x-token-invalid-reason", ""), trailers.get("x-token-revocation-cause", "")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_signed_out_device_is_told_why_in_the_trailers(
    authority: InProcessAuthority, start_consumer: StartConsumer, flavour: str, mode: str
) -> None:
    consumer = start_consumer(flavour, mode)
    assert consumer.wait_until_fresh()
    laptop = authority.sign_in("alice", "laptop", audience=AUDIENCE)
    authority.sign_in("alice", "phone", audience=AUDIENCE, device_name="the phone")
    if mode != "remote":
        wait_for_refusal(consumer, laptop.access_token, within=5.0)

    assert _cause_trailer(consumer, laptop.access_token) == ("REVOKED", "REPLACED_BY_SIGN_IN")

    tablet = authority.sign_in("bob", "tablet", audience=AUDIENCE)
    authority.client.revoke_token(token=tablet.access_token)
    if mode != "remote":
        wait_for_refusal(consumer, tablet.access_token, within=5.0)
    assert _cause_trailer(consumer, tablet.access_token) == ("REVOKED", "LOGGED_OUT")
    expired = authority.mint("dave", audience=AUDIENCE, ttl=-60)
    assert _cause_trailer(consumer, expired) == ("EXPIRED", "")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_local_mode_consumer_knows_the_cause_and_the_replacing_device_from_the_stream(
    authority: InProcessAuthority, start_consumer: StartConsumer, flavour: str
) -> None:
    consumer = start_consumer(flavour, "local")
    assert consumer.wait_until_fresh()
    laptop = authority.sign_in("alice", "laptop", audience=AUDIENCE)
    phone = authority.sign_in("alice", "phone-7", audience=AUDIENCE, device_name="the phone")
    wait_for_refusal(consumer, laptop.access_token, within=5.0)
    # Stop the authority: the answer below is the consumer's own, from its mirror.
    authority.stop()

    refusal = consumer.mirror.refusal(laptop.session_id, "")

    assert refusal is not None
    assert (refusal.reason.name, refusal.cause and refusal.cause.name) == ("REVOKED", "REPLACED_BY_SIGN_IN")
    assert refusal.replaced_by_device_id == "phone-7"
    assert consumer.mirror.refusal(phone.session_id, "") is None
