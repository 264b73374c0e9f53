"""No races: concurrent sign-ins of one subject end with the single-device rule intact."""

from __future__ import annotations

import asyncio

import grpc
from authority_client.v1 import authority_pb2 as pb

from tests.support.calls import Stub, live_sessions, new_subject, reason, sign_in

DEVICES = 50


async def _sign_in_everywhere(stub: Stub, subject: str, policy: int) -> list[pb.IssueTokenResponse | BaseException]:
    calls = [sign_in(stub, subject, f"device-{n}", policy=policy) for n in range(DEVICES)]
    return await asyncio.gather(*calls, return_exceptions=True)


async def test_fifty_concurrent_sign_ins_leave_exactly_one_valid_token_under_replace(stub: Stub) -> None:
    subject = new_subject()

    results = await _sign_in_everywhere(stub, subject, pb.SESSION_POLICY_REPLACE)

    issued = [r for r in results if isinstance(r, pb.IssueTokenResponse)]
    assert len(issued) == DEVICES, [r for r in results if not isinstance(r, pb.IssueTokenResponse)]
    reasons = [await reason(stub, r.access_token) for r in issued]
    assert reasons.count("VALID") == 1
    assert reasons.count("REVOKED") == DEVICES - 1
    winner = issued[reasons.index("VALID")]
    assert await live_sessions(stub, subject) == [winner.session_id]
    # Every session but the winner was replaced by exactly one later sign-in.
    replaced = [sid for r in issued for sid in r.replaced_session_ids]
    assert sorted(replaced) == sorted(r.session_id for r in issued if r is not winner)


async def test_fifty_concurrent_sign_ins_admit_exactly_one_under_reject(stub: Stub) -> None:
    subject = new_subject()

    results = await _sign_in_everywhere(stub, subject, pb.SESSION_POLICY_REJECT)

    issued = [r for r in results if isinstance(r, pb.IssueTokenResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(issued) == 1
    assert len(refused) == DEVICES - 1
    assert {error.code() for error in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert await reason(stub, issued[0].access_token) == "VALID"
    assert await live_sessions(stub, subject) == [issued[0].session_id]
