"""No races with device classes: concurrent sign-ins, decided under the subject's lock,
leave each class with exactly its limit, and a guard admits exactly one of many."""

from __future__ import annotations

import asyncio

import grpc
from authority_client.v1 import authority_pb2 as pb

from tests.conftest import StartServer
from tests.support.calls import new_subject, reason, rpc_error, sign_in

DEVICES = 50


async def test_fifty_concurrent_phone_sign_ins_leave_one_phone_and_never_touch_the_browser(
    start_server: StartServer,
) -> None:
    stub = (await start_server(session_limits=("mobile=1", "web=1"))).stub
    subject = new_subject()
    browser = await sign_in(stub, subject, "browser", device_class="web")

    results = await asyncio.gather(
        *(sign_in(stub, subject, f"phone-{n}", device_class="mobile") for n in range(DEVICES)), return_exceptions=True
    )

    issued = [r for r in results if isinstance(r, pb.IssueTokenResponse)]
    assert len(issued) == DEVICES, [r for r in results if not isinstance(r, pb.IssueTokenResponse)]
    reasons = [await reason(stub, r.access_token) for r in issued]
    assert reasons.count("VALID") == 1
    assert await reason(stub, browser.access_token) == "VALID"
    listed = (await stub.ListSessions(pb.ListSessionsRequest(subject=subject))).sessions
    assert sorted(s.device_class for s in listed) == ["mobile", "web"]
    replaced = sorted(sid for r in issued for sid in r.replaced_session_ids)
    assert browser.session_id not in replaced
    assert len(replaced) == DEVICES - 1


async def test_fifty_concurrent_phone_sign_ins_admit_one_under_reject(start_server: StartServer) -> None:
    stub = (await start_server(session_limits=("mobile=1", "web=1"))).stub
    subject = new_subject()
    browser = await sign_in(stub, subject, "browser", device_class="web")

    results = await asyncio.gather(
        *(sign_in(stub, subject, f"phone-{n}", device_class="mobile", policy=pb.SESSION_POLICY_REJECT)
          for n in range(DEVICES)),
        return_exceptions=True,
    )

    issued = [r for r in results if isinstance(r, pb.IssueTokenResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(issued) == 1 and len(refused) == DEVICES - 1
    assert {error.code() for error in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert await reason(stub, browser.access_token) == "VALID"


async def test_concurrent_sign_ins_in_two_classes_keep_exactly_each_limit(start_server: StartServer) -> None:
    stub = (await start_server(session_limits=("mobile=2", "web=3"))).stub
    subject = new_subject()
    calls = [sign_in(stub, subject, f"{device_class}-{n}", device_class=device_class)
             for n in range(20) for device_class in ("mobile", "web")]

    results = await asyncio.gather(*calls, return_exceptions=True)

    assert all(isinstance(r, pb.IssueTokenResponse) for r in results), results
    listed = (await stub.ListSessions(pb.ListSessionsRequest(subject=subject))).sessions
    classes = [s.device_class for s in listed]
    assert classes.count("mobile") == 2 and classes.count("web") == 3
    valid = [r for r in results if isinstance(r, pb.IssueTokenResponse) and await reason(stub, r.access_token) == "VALID"]
    assert sorted(r.session_id for r in valid) == sorted(s.session_id for s in listed)


async def test_of_many_guarded_sign_ins_from_one_preview_exactly_one_commits(start_server: StartServer) -> None:
    stub = (await start_server()).stub
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop")
    preview = await stub.PreviewSignIn(pb.IssueTokenRequest(subject=subject, device_id="phone-0"))
    expected = pb.SessionIds(session_ids=[s.session_id for s in preview.would_replace])
    assert list(expected.session_ids) == [laptop.session_id]

    results = await asyncio.gather(
        *(sign_in(stub, subject, f"phone-{n}", expected_replacements=expected) for n in range(20)),
        return_exceptions=True,
    )

    issued = [r for r in results if isinstance(r, pb.IssueTokenResponse)]
    aborted = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(issued) == 1
    assert {error.code() for error in aborted} == {grpc.StatusCode.ABORTED} and len(aborted) == 19
    assert list(issued[0].replaced_session_ids) == [laptop.session_id]


async def test_a_guard_prepared_before_a_sign_in_on_another_server_aborts(start_server: StartServer) -> None:
    first, second = await start_server(), await start_server()
    subject = new_subject()
    await sign_in(first.stub, subject, "laptop")
    preview = await first.stub.PreviewSignIn(pb.IssueTokenRequest(subject=subject, device_id="phone"))
    await sign_in(second.stub, subject, "tablet")  # through another process on the same store

    error = await rpc_error(sign_in(first.stub, subject, "phone", expected_replacements=pb.SessionIds(
        session_ids=[s.session_id for s in preview.would_replace])))

    assert error.code() is grpc.StatusCode.ABORTED
