"""Against an authority that authenticates its callers: the API key goes on every call,
the revocation stream included."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from authority_client import AuthorityClient
from authority_client.errors import PermissionDenied, Unauthenticated
from conftest import FLAVOURS, Consumer, validation_settings

from authority.credentials import Role, api_key_entry, new_api_key
from authority.testing import InProcessAuthority

LOGIN_KEY = new_api_key()
GREETER_KEY = new_api_key()


@pytest.fixture
def guarded_authority() -> Iterator[InProcessAuthority]:
    entries = (api_key_entry("login", [Role.ISSUER], LOGIN_KEY), api_key_entry("greeter", [Role.VERIFIER], GREETER_KEY))
    with InProcessAuthority(audiences=("token-authority", "greeter"), api_keys=entries, api_key=LOGIN_KEY) as authority:
        yield authority


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_local_consumer_with_a_verifier_key_follows_the_stream(
    guarded_authority: InProcessAuthority, flavour: str
) -> None:
    consumer = Consumer(flavour, guarded_authority.target, validation_settings("local"), api_key=GREETER_KEY)
    try:
        assert consumer.wait_until_fresh()
        laptop = guarded_authority.sign_in("alice", "laptop", audience="greeter")
        assert consumer.say_hello(laptop.access_token) == "hello world, you are alice on laptop"
        guarded_authority.sign_in("alice", "phone", audience="greeter")
        # Seen through the stream, well within a second.
        deadline = time.monotonic() + 1.0
        while consumer.accepts(laptop.access_token) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert consumer.refusal(laptop.access_token) == (grpc.StatusCode.UNAUTHENTICATED, "REVOKED")
    finally:
        consumer.close()


def test_a_consumer_without_a_key_cannot_vouch_and_refuses_with_unavailable(
    guarded_authority: InProcessAuthority,
) -> None:
    consumer = Consumer("grpc", guarded_authority.target, validation_settings("local"))
    try:
        assert not consumer.wait_until_fresh(1.0)
        with AuthorityClient(guarded_authority.target, api_key=LOGIN_KEY) as login:
            token = login.issue_token("bob", "laptop", audience="greeter").access_token
        assert consumer.refusal(token) == (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
    finally:
        consumer.close()


def test_keys_are_checked_per_role(guarded_authority: InProcessAuthority) -> None:
    with AuthorityClient(guarded_authority.target, api_key=GREETER_KEY) as verifier:
        assert verifier.get_signing_keys()
        with pytest.raises(PermissionDenied):
            verifier.issue_token("carol", "laptop")
    with AuthorityClient(guarded_authority.target) as anonymous, pytest.raises(Unauthenticated):
        anonymous.get_signing_keys()
