"""The stolen-token scenario end to end (issue 13), on SQLite and PostgreSQL: device A
signs in bound to its key; a thief copies A's access and refresh tokens and presents
them with proofs by its own key (or none). Every call of the thief's is refused, none
changes anything (in particular, a copy of an already-traded refresh token does not set
off reuse detection, which would sign A out), and A goes on working.
"""

from __future__ import annotations

import grpc
import pytest
from authority_client import AsyncAuthorityClient, AuthorityClient
from authority_client.errors import RefreshRejected
from authority_client.proof import DeviceKey
from authority_client.types import InvalidReason
from authority_client.v1 import authority_pb2 as pb

from authority.testing import InProcessAuthority
from tests.conftest import Running, StartServer
from tests.support.calls import Stub, live_sessions, new_subject, rpc_error
from tests.support.proofs import API, REFRESH, SIGN_IN
from tests.test_device_binding import api_proof, bound_sign_in, refresh, verdict


async def _thief_is_refused_everywhere(stub: Stub, access_token: str, refresh_token: str, thief: DeviceKey) -> None:
    assert await verdict(stub, access_token) == "PROOF_REQUIRED"
    assert await verdict(stub, access_token, api_proof(thief, access_token)) == "BAD_PROOF"
    for key in (thief, None):
        error = await rpc_error(refresh(stub, refresh_token, key))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_thief_with_a_devices_tokens_and_its_own_key_is_refused_and_the_device_goes_on(
    start_server: StartServer,
) -> None:
    # Strict reuse detection: any reuse of a traded refresh token would revoke the session.
    stub = (await start_server(refresh_token_reuse_grace=0)).stub
    device, thief, subject = DeviceKey.generate(), DeviceKey.generate(), new_subject()
    signed_in = await bound_sign_in(stub, device, subject)

    # The thief copies both tokens while they are current.
    await _thief_is_refused_everywhere(stub, signed_in.access_token, signed_in.refresh_token, thief)
    assert await verdict(stub, signed_in.access_token, api_proof(device, signed_in.access_token)) == "VALID"

    # The device refreshes; the thief's copy of the refresh token is now a traded one.
    refreshed = await refresh(stub, signed_in.refresh_token, device)
    await _thief_is_refused_everywhere(stub, signed_in.access_token, signed_in.refresh_token, thief)
    await _thief_is_refused_everywhere(stub, refreshed.access_token, refreshed.refresh_token, thief)

    # No reuse detection fired: A's session is live, its tokens work, it refreshes again.
    assert await live_sessions(stub, subject) == [signed_in.session_id]
    assert await verdict(stub, refreshed.access_token, api_proof(device, refreshed.access_token)) == "VALID"
    again = await refresh(stub, refreshed.refresh_token, device)
    assert again.session_id == signed_in.session_id
    assert await verdict(stub, again.access_token, api_proof(device, again.access_token)) == "VALID"
    events = await _session_event_kinds(stub)
    assert pb.SESSION_EVENT_KIND_REFRESH_TOKEN_REUSED not in events


async def test_the_device_itself_reusing_a_traded_refresh_token_is_still_reuse(start_server: StartServer) -> None:
    # Reuse detection is unchanged for the key's holder: whoever presents a traded token
    # with the device's key has the device's key, and the session ends as before.
    stub = (await start_server(refresh_token_reuse_grace=0)).stub
    device, subject = DeviceKey.generate(), new_subject()
    signed_in = await bound_sign_in(stub, device, subject)
    await refresh(stub, signed_in.refresh_token, device)

    error = await rpc_error(refresh(stub, signed_in.refresh_token, device))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await live_sessions(stub, subject) == []


async def test_the_python_client_carries_proofs_and_token_types(authority: Running) -> None:
    device, thief = DeviceKey.generate(), DeviceKey.generate()
    async with AsyncAuthorityClient(authority.target) as client:
        issued = await client.issue_token(new_subject(), "phone", proof=device.proof_for(*SIGN_IN))
        assert issued.token_type == "DPoP" and issued.is_bound
        assert issued.access_token not in repr(issued)

        valid = await client.validate_token(issued.access_token,
                                            proof=device.proof_for(*API, access_token=issued.access_token))
        required = await client.validate_token(issued.access_token)
        stolen = await client.validate_token(issued.access_token,
                                             proof=thief.proof_for(*API, access_token=issued.access_token))
        with pytest.raises(RefreshRejected):
            await client.refresh_token(issued.refresh_token, thief.proof_for(*REFRESH))
        refreshed = await client.refresh_token(issued.refresh_token, device.proof_for(*REFRESH))

    assert valid.valid and valid.claims is not None and valid.claims.key_thumbprint == device.thumbprint
    assert (required.valid, required.reason) == (False, InvalidReason.PROOF_REQUIRED)
    assert (stolen.valid, stolen.reason) == (False, InvalidReason.BAD_PROOF)
    assert refreshed.token_type == "DPoP" and refreshed.session_id == issued.session_id


def test_the_blocking_client_carries_proofs_too(database_url: str) -> None:
    device = DeviceKey.generate("ES256")
    with InProcessAuthority(database_url=database_url) as authority, AuthorityClient(authority.target) as client:
        bearer = client.issue_token(new_subject(), "laptop")
        issued = client.issue_token(new_subject(), "phone", proof=device.proof_for(*SIGN_IN))
        valid = client.validate_token(issued.access_token, "",
                                      device.proof_for(*API, access_token=issued.access_token))
        refreshed = client.refresh_token(issued.refresh_token, device.proof_for(*REFRESH))

    assert bearer.token_type == "Bearer" and not bearer.is_bound
    assert valid.valid and valid.claims is not None and valid.claims.key_thumbprint == device.thumbprint
    assert refreshed.is_bound


async def _session_event_kinds(stub: Stub) -> list[int]:
    """The kinds of the session event log so far (up to its CAUGHT_UP)."""
    kinds = []
    async for event in stub.WatchSessionEvents(pb.WatchSessionEventsRequest(), timeout=10):
        if event.kind == pb.SESSION_EVENT_KIND_CAUGHT_UP:
            break
        kinds.append(event.kind)
    return kinds
