"""Device-bound tokens through both server interceptors (grpc and grpc.aio), in remote
mode (with and without its answer cache) and local mode, against a real authority: one
test body for every flavour and mode. The device side is the client interceptor with a
:class:`~authority_client.proof.DeviceKey`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from authority_client import (
    AccessRules,
    AsyncAuthInterceptor,
    AsyncAuthorityClient,
    AsyncBearerToken,
    AsyncValidator,
    AuthInterceptor,
    AuthorityClient,
    BearerToken,
    Validator,
    current_claims,
)
from authority_client.proof import grpc_proof_uri
from conftest import FLAVOURS, MODES, _Loop, validation_settings
from dpop_cases import BAD_CASES, Case, Device

from authority.testing import InProcessAuthority

SERVICE = "orders.v1.Orders"
WHOAMI = f"/{SERVICE}/Whoami"
EXTERNAL = "orders.example.com"
HTU = grpc_proof_uri(EXTERNAL, WHOAMI)
# Room for the 9 KiB proof of the size case: grpc's default (8 KiB) would refuse the
# call before any interceptor saw it.
OPTIONS = [("grpc.max_metadata_size", 64 * 1024)]


def _encode(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode()


def _whoami() -> str:
    claims = current_claims()
    return f"{claims.subject}:{claims.key_thumbprint}"


def _handlers(whoami: Any) -> grpc.GenericRpcHandler:
    handler = grpc.unary_unary_rpc_method_handler(whoami, request_deserializer=bytes.decode, response_serializer=_encode)
    return grpc.method_handlers_generic_handler(SERVICE, {"Whoami": handler})


class Orders:
    """The service behind one interceptor flavour, validating in one mode."""

    def __init__(self, flavour: str, mode: str, authority: InProcessAuthority, rules: AccessRules) -> None:
        self._stops: list[Callable[[], None]] = []
        settings = validation_settings(mode)
        if flavour == "grpc":
            client = AuthorityClient(authority.target)
            validator = Validator(client, settings).start()
            server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[AuthInterceptor(validator, rules)],
                                 options=OPTIONS)
            server.add_generic_rpc_handlers((_handlers(lambda request, context: _whoami()),))
            port = server.add_insecure_port("127.0.0.1:0")
            server.start()
            self._stops += [client.close, validator.close, lambda: server.stop(None)]
            assert validator.wait_until_fresh(15)
        else:
            loop = _Loop()

            async def whoami(request: str, context: Any) -> str:
                return _whoami()

            async def start() -> tuple[grpc.aio.Server, AsyncAuthorityClient, AsyncValidator, int]:
                aclient = AsyncAuthorityClient(authority.target)
                avalidator = await AsyncValidator(aclient, settings).start()
                aserver = grpc.aio.server(interceptors=[AsyncAuthInterceptor(avalidator, rules)], options=OPTIONS)
                aserver.add_generic_rpc_handlers((_handlers(whoami),))
                aport = aserver.add_insecure_port("127.0.0.1:0")
                await aserver.start()
                assert await avalidator.wait_until_fresh(15)
                return aserver, aclient, avalidator, aport

            aserver, aclient, avalidator, port = loop.run(start())

            async def stop() -> None:
                await aserver.stop(None)
                await avalidator.close()
                await aclient.close()

            self._stops += [loop.close, lambda: loop.run(stop())]
        self.target = f"127.0.0.1:{port}"
        self.channel = grpc.insecure_channel(self.target, options=OPTIONS)
        self._stops.append(self.channel.close)

    def call(self, metadata: list[tuple[str, str]]) -> str:
        """Whoami with exactly this metadata."""
        method = self.channel.unary_unary(WHOAMI, request_serializer=_encode, response_deserializer=bytes.decode)
        return str(method("", metadata=metadata, timeout=10))

    def refusal(self, metadata: list[tuple[str, str]]) -> tuple[grpc.StatusCode, str]:
        """The status and reason of a Whoami that must fail."""
        with pytest.raises(grpc.RpcError) as failed:
            self.call(metadata)
        error: Any = failed.value
        reasons = [value for key, value in error.trailing_metadata() or () if key == "x-token-invalid-reason"]
        return error.code(), reasons[0] if reasons else ""

    def close(self) -> None:
        for stop in reversed(self._stops):
            stop()


@pytest.fixture
def start_orders(authority: InProcessAuthority) -> Iterator[Callable[..., Orders]]:
    started: list[Orders] = []

    def start(flavour: str, mode: str, rules: AccessRules = AccessRules.of(external_authority=EXTERNAL)) -> Orders:
        started.append(Orders(flavour, mode, authority, rules))
        return started[-1]

    yield start
    for orders in reversed(started):
        orders.close()


@pytest.fixture(params=[(flavour, mode) for flavour in FLAVOURS for mode in MODES], ids=lambda p: "-".join(p))
def orders(request: pytest.FixtureRequest, start_orders: Callable[..., Orders]) -> Orders:
    flavour, mode = request.param
    return start_orders(flavour, mode)


def bound_sign_in(authority: InProcessAuthority, subject: str = "alice", device_id: str = "laptop") -> tuple[Device, str]:
    """A device signed in with a proof, and its bound access token."""
    device = Device.generate()
    issued = authority.sign_in(subject, device_id, proof=device.sign_in_proof())
    assert issued.token_type == "DPoP"
    return device, issued.access_token


def dpop(token: str, *proofs: str) -> list[tuple[str, str]]:
    return [("authorization", f"DPoP {token}"), *(("dpop", proof) for proof in proofs)]


def test_a_device_calls_with_its_bound_token_and_a_fresh_proof_on_every_call(
    authority: InProcessAuthority, orders: Orders
) -> None:
    device, token = bound_sign_in(authority)
    with grpc.intercept_channel(orders.channel, BearerToken(lambda: token, device_key=device.key,
                                                            authority=EXTERNAL)) as channel:
        whoami = channel.unary_unary(WHOAMI, request_serializer=_encode, response_deserializer=bytes.decode)
        # Three calls, three proofs: each is used once, and the cache (where there is one)
        # saves only the signature.
        answers = [whoami("", timeout=10) for _ in range(3)]
    assert answers == [f"alice:{device.key.thumbprint}"] * 3


@pytest.mark.parametrize("case", BAD_CASES, ids=lambda case: case.name)
def test_each_bad_way_of_presenting_a_bound_token_is_refused_with_its_reason(
    authority: InProcessAuthority, orders: Orders, case: Case
) -> None:
    device, token = bound_sign_in(authority)
    attacker = Device.generate()
    proofs = case.proofs(device, attacker, "POST", HTU, token)
    metadata = [("authorization", f"{case.scheme} {token}"), *(("dpop", proof) for proof in proofs)]

    assert orders.refusal(metadata) == (grpc.StatusCode.UNAUTHENTICATED, case.reason)
    # The device goes on working.
    assert orders.call(dpop(token, device.proof("POST", HTU, token))) == f"alice:{device.key.thumbprint}"


def test_a_replayed_proof_is_refused_and_the_device_goes_on(authority: InProcessAuthority, orders: Orders) -> None:
    device, token = bound_sign_in(authority)
    proof = device.proof("POST", HTU, token)

    assert orders.call(dpop(token, proof)).startswith("alice:")
    assert orders.refusal(dpop(token, proof)) == (grpc.StatusCode.UNAUTHENTICATED, "BAD_PROOF")
    assert orders.call(dpop(token, device.proof("POST", HTU, token))).startswith("alice:")


def test_a_bound_token_admitted_once_is_never_admitted_again_without_a_proof(
    authority: InProcessAuthority, orders: Orders
) -> None:
    # Guards the caches: remote mode's answer cache and local mode's verified tokens must
    # not serve a bound token on the strength of an earlier call's proof.
    device, token = bound_sign_in(authority)
    assert orders.call(dpop(token, device.proof("POST", HTU, token))).startswith("alice:")

    assert orders.refusal([("authorization", f"Bearer {token}")]) == (grpc.StatusCode.UNAUTHENTICATED, "PROOF_REQUIRED")
    assert orders.refusal(dpop(token)) == (grpc.StatusCode.UNAUTHENTICATED, "PROOF_REQUIRED")


def test_a_copied_token_with_the_attackers_own_proofs_is_refused_every_time(
    authority: InProcessAuthority, orders: Orders
) -> None:
    device, token = bound_sign_in(authority)
    attacker = Device.generate()
    for _ in range(3):
        assert orders.refusal(dpop(token, attacker.proof("POST", HTU, token))) == (
            grpc.StatusCode.UNAUTHENTICATED, "BAD_PROOF")
    assert orders.call(dpop(token, device.proof("POST", HTU, token))).startswith("alice:")


def test_a_bearer_token_works_as_before_and_is_refused_with_a_proof(
    authority: InProcessAuthority, orders: Orders
) -> None:
    token = authority.sign_in("bob", "phone").access_token
    device = Device.generate()

    assert orders.call([("authorization", f"Bearer {token}")]) == "bob:"
    # A proof for a token bound to nothing binds nothing: refused, not ignored.
    assert orders.refusal(dpop(token, device.proof("POST", HTU, token))) == (grpc.StatusCode.UNAUTHENTICATED, "BAD_PROOF")
    # A device key on the client changes nothing for a bearer token.
    with grpc.intercept_channel(orders.channel, BearerToken(lambda: token, device_key=device.key,
                                                            authority=EXTERNAL)) as channel:
        whoami = channel.unary_unary(WHOAMI, request_serializer=_encode, response_deserializer=bytes.decode)
        assert whoami("", timeout=10) == "bob:"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_without_an_external_authority_bound_tokens_are_refused_and_it_is_logged_once(
    authority: InProcessAuthority, start_orders: Callable[..., Orders], flavour: str, caplog: pytest.LogCaptureFixture
) -> None:
    orders = start_orders(flavour, "remote", AccessRules.of())
    device, token = bound_sign_in(authority)
    bearer = authority.sign_in("bob", "phone").access_token

    with caplog.at_level(logging.WARNING, logger="authority_client.access"):
        for _ in range(2):
            assert orders.refusal(dpop(token, device.proof("POST", HTU, token))) == (
                grpc.StatusCode.UNAUTHENTICATED, "BAD_PROOF")
        assert orders.refusal([("authorization", f"Bearer {token}")]) == (
            grpc.StatusCode.UNAUTHENTICATED, "PROOF_REQUIRED")
    assert orders.call([("authorization", f"Bearer {bearer}")]) == "bob:"

    warnings = [record for record in caplog.records if "external_authority" in record.getMessage()]
    assert len(warnings) == 1
    assert token not in caplog.text


def test_a_device_on_a_grpc_aio_channel_calls_a_protected_grpc_aio_service(
    authority: InProcessAuthority, start_orders: Callable[..., Orders]
) -> None:
    orders = start_orders("aio", "local")
    device, token = bound_sign_in(authority)
    asked: list[int] = []

    async def get_token() -> str:
        asked.append(1)
        return token

    async def device_calls() -> list[str]:
        interceptor = AsyncBearerToken(get_token, device_key=device.key, authority=EXTERNAL)
        async with grpc.aio.insecure_channel(orders.target, interceptors=[interceptor]) as channel:
            whoami = channel.unary_unary(WHOAMI, request_serializer=_encode, response_deserializer=bytes.decode)
            return [str(await whoami("", timeout=10)) for _ in range(3)]

    assert asyncio.run(device_calls()) == [f"alice:{device.key.thumbprint}"] * 3
    assert len(asked) == 3


def test_a_device_key_needs_the_authority_name() -> None:
    with pytest.raises(ValueError, match="authority"):
        BearerToken(lambda: "t", device_key=Device.generate().key)
    with pytest.raises(ValueError, match="authority"):
        AsyncBearerToken(lambda: "t", device_key=Device.generate().key)
