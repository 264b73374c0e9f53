"""Devices: why a device was signed out, device classes, a confirmed replacement, the
device list and "sign out my other devices", through a real server on both stores."""

from __future__ import annotations

import time

import grpc
import pytest
from authority_client.reasons import refusal_text, signed_out_text
from authority_client.types import InvalidReason, RevocationCause
from authority_client.v1 import authority_pb2 as pb

from tests.conftest import Clock, StartServer
from tests.support.calls import (
    Stub,
    live_sessions,
    named_in_time,
    new_subject,
    reason,
    rpc_error,
    sign_in,
    validate,
)

CLASSES = ("mobile=1", "web=1")


async def test_a_replaced_device_is_told_it_was_replaced_and_by_which_device(stub: Stub) -> None:
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop-1", device_name="Firefox on Linux")
    before = time.time()
    await sign_in(stub, subject, "phone-1", device_name="the phone")

    answer = await validate(stub, laptop.access_token)

    assert not answer.valid and answer.reason == pb.INVALID_REASON_REVOKED
    assert answer.revocation_cause == pb.REVOCATION_CAUSE_REPLACED_BY_SIGN_IN
    assert answer.replaced_by_device_id == "phone-1"
    assert answer.replaced_by_device_name == "the phone"
    assert before - 1 <= answer.revoked_at.seconds <= time.time() + 1
    cause = RevocationCause(answer.revocation_cause)
    assert refusal_text(InvalidReason.REVOKED, cause) == "revoked: signed in on another device"
    assert signed_out_text(cause, answer.replaced_by_device_name) == "signed out: signed in on the phone"


async def test_an_answer_leaves_out_an_explanation_not_read_within_its_wait(start_server: StartServer) -> None:
    # explanation_wait 0: the first answer never waits for the store's read, which goes
    # on, so a later answer names the device.
    stub = (await start_server(explanation_wait=0)).stub
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop-1")
    await sign_in(stub, subject, "phone-1", device_name="the phone")

    first = await validate(stub, laptop.access_token)
    later = await named_in_time(
        lambda: validate(stub, laptop.access_token), lambda validated: bool(validated.replaced_by_device_name)
    )

    assert first.reason == pb.INVALID_REASON_REVOKED
    assert first.revocation_cause == pb.REVOCATION_CAUSE_REPLACED_BY_SIGN_IN
    assert (first.replaced_by_device_id, first.replaced_by_device_name) == ("", "")
    assert (later.replaced_by_device_id, later.replaced_by_device_name) == ("phone-1", "the phone")


@pytest.mark.parametrize(
    ("revoke", "cause"),
    [
        (lambda s, issued, subject: pb.RevokeTokenRequest(token=issued.access_token), "LOGGED_OUT"),
        (lambda s, issued, subject: pb.RevokeTokenRequest(session_id=issued.session_id), "SESSION_REVOKED"),
        (lambda s, issued, subject: pb.RevokeTokenRequest(subject=subject), "SIGNED_OUT_EVERYWHERE"),
    ],
    ids=["logout", "session", "subject"],
)
async def test_every_revocation_says_its_cause_and_names_no_device(stub: Stub, revoke: object, cause: str) -> None:
    subject = new_subject()
    issued = await sign_in(stub, subject, "laptop")
    await stub.RevokeToken(revoke(stub, issued, subject))  # type: ignore[operator]

    answer = await validate(stub, issued.access_token)

    assert pb.RevocationCause.Name(answer.revocation_cause) == f"REVOCATION_CAUSE_{cause}"
    assert answer.replaced_by_device_id == "" and answer.replaced_by_device_name == ""
    assert answer.revoked_at.seconds > 0


async def test_a_reused_refresh_token_revokes_with_its_cause(start_server: StartServer) -> None:
    stub = (await start_server(refresh_token_reuse_grace=0)).stub  # strict: no retry forgiven
    issued = await sign_in(stub, new_subject(), "laptop")
    await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=issued.refresh_token))
    await rpc_error(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=issued.refresh_token)))

    answer = await validate(stub, issued.access_token)

    assert answer.revocation_cause == pb.REVOCATION_CAUSE_REFRESH_TOKEN_REUSED


async def test_a_phone_sign_in_replaces_the_other_phone_and_never_the_browser(start_server: StartServer) -> None:
    stub = (await start_server(session_limits=CLASSES)).stub
    subject = new_subject()
    browser = await sign_in(stub, subject, "browser", device_class="web")
    phone = await sign_in(stub, subject, "phone-a", device_class="mobile")

    other_phone = await sign_in(stub, subject, "phone-b", device_class="mobile")

    assert list(other_phone.replaced_session_ids) == [phone.session_id]
    assert await reason(stub, browser.access_token) == "VALID"
    assert await reason(stub, phone.access_token) == "REVOKED"
    assert sorted(await live_sessions(stub, subject)) == sorted([browser.session_id, other_phone.session_id])


async def test_reject_refuses_a_second_phone_and_changes_nothing(start_server: StartServer) -> None:
    stub = (await start_server(session_limits=CLASSES)).stub
    subject = new_subject()
    browser = await sign_in(stub, subject, "browser", device_class="web")
    phone = await sign_in(stub, subject, "phone-a", device_class="mobile")

    error = await rpc_error(sign_in(stub, subject, "phone-b", device_class="mobile", policy=pb.SESSION_POLICY_REJECT))

    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert sorted(await live_sessions(stub, subject)) == sorted([browser.session_id, phone.session_id])
    assert await reason(stub, phone.access_token) == "VALID"


async def test_an_empty_class_counts_as_star_and_an_unnamed_class_without_star_is_refused(
    start_server: StartServer,
) -> None:
    strict = (await start_server(session_limits=CLASSES)).stub
    error = await rpc_error(sign_in(strict, new_subject(), "tv", device_class="tv"))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "device_class" in (error.details() or "")
    error = await rpc_error(sign_in(strict, new_subject(), "tv"))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and "device_class" in (error.details() or "")

    lenient = (await start_server(session_limits=(*CLASSES, "*=1"))).stub
    subject = new_subject()
    phone = await sign_in(lenient, subject, "phone", device_class="mobile")
    tv = await sign_in(lenient, subject, "tv", device_class="tv")
    other = await sign_in(lenient, subject, "console")  # empty: the class *
    assert list(other.replaced_session_ids) == [tv.session_id]
    assert sorted(await live_sessions(lenient, subject)) == sorted([phone.session_id, other.session_id])


async def test_the_total_cap_binds_across_classes(start_server: StartServer) -> None:
    stub = (await start_server(session_limits=("mobile=2", "web=2"), max_sessions_per_subject=3)).stub
    subject = new_subject()
    oldest = await sign_in(stub, subject, "phone-a", device_class="mobile")
    await sign_in(stub, subject, "browser-a", device_class="web")
    await sign_in(stub, subject, "phone-b", device_class="mobile")

    error = await rpc_error(sign_in(stub, subject, "browser-b", device_class="web", policy=pb.SESSION_POLICY_REJECT))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    fourth = await sign_in(stub, subject, "browser-b", device_class="web")

    # REPLACE ends the oldest session in any class: here a phone, for a browser.
    assert list(fourth.replaced_session_ids) == [oldest.session_id]
    assert len(await live_sessions(stub, subject)) == 3


async def test_without_a_total_cap_the_class_limits_add_up(start_server: StartServer) -> None:
    stub = (await start_server(session_limits=("mobile=1", "web=2"))).stub
    subject = new_subject()
    for device, device_class in (("phone", "mobile"), ("browser-a", "web"), ("browser-b", "web")):
        issued = await sign_in(stub, subject, device, device_class=device_class)
        assert list(issued.replaced_session_ids) == []
    assert len(await live_sessions(stub, subject)) == 3


async def test_a_sessions_class_is_fixed_at_sign_in(start_server: StartServer) -> None:
    stub = (await start_server(session_limits=CLASSES)).stub
    subject = new_subject()
    phone = await sign_in(stub, subject, "device-1", device_class="mobile")
    await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=phone.refresh_token))

    browser = await sign_in(stub, subject, "device-2", device_class="web")

    assert list(browser.replaced_session_ids) == []
    listed = (await stub.ListSessions(pb.ListSessionsRequest(subject=subject))).sessions
    assert {s.device_id: s.device_class for s in listed} == {"device-1": "mobile", "device-2": "web"}


async def test_preview_says_what_a_sign_in_would_do_and_changes_nothing(stub: Stub) -> None:
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop", device_name="the laptop")
    request = pb.IssueTokenRequest(subject=subject, device_id="phone")

    preview = await stub.PreviewSignIn(request)
    rejecting = await stub.PreviewSignIn(pb.IssueTokenRequest(subject=subject, device_id="phone",
                                                              policy=pb.SESSION_POLICY_REJECT))

    assert preview.allowed
    assert [(s.session_id, s.device_name) for s in preview.would_replace] == [(laptop.session_id, "the laptop")]
    assert not rejecting.allowed
    assert await live_sessions(stub, subject) == [laptop.session_id]
    assert await reason(stub, laptop.access_token) == "VALID"


async def test_a_guarded_sign_in_commits_when_the_replacements_are_those_expected(stub: Stub) -> None:
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop")
    expected = pb.SessionIds(session_ids=[s.session_id for s in (await stub.PreviewSignIn(
        pb.IssueTokenRequest(subject=subject, device_id="phone"))).would_replace])

    phone = await sign_in(stub, subject, "phone", expected_replacements=expected)

    assert list(phone.replaced_session_ids) == [laptop.session_id]


async def test_preview_then_a_concurrent_sign_in_makes_the_guarded_sign_in_abort(stub: Stub) -> None:
    subject = new_subject()
    await sign_in(stub, subject, "laptop")
    preview = await stub.PreviewSignIn(pb.IssueTokenRequest(subject=subject, device_id="phone"))
    intruder = await sign_in(stub, subject, "tablet")  # signs in meanwhile
    expected = pb.SessionIds(session_ids=[s.session_id for s in preview.would_replace])

    error = await rpc_error(sign_in(stub, subject, "phone", expected_replacements=expected))

    assert error.code() is grpc.StatusCode.ABORTED
    assert "expected_replacements" in (error.details() or "")
    assert await live_sessions(stub, subject) == [intruder.session_id]
    assert await reason(stub, intruder.access_token) == "VALID"


async def test_an_empty_guard_means_replace_nothing(stub: Stub) -> None:
    subject = new_subject()
    first = await sign_in(stub, new_subject(), "laptop", expected_replacements=pb.SessionIds())
    assert list(first.replaced_session_ids) == []
    laptop = await sign_in(stub, subject, "laptop")

    error = await rpc_error(sign_in(stub, subject, "phone", expected_replacements=pb.SessionIds()))

    assert error.code() is grpc.StatusCode.ABORTED
    assert await live_sessions(stub, subject) == [laptop.session_id]


async def test_a_guard_naming_unknown_sessions_simply_does_not_match(stub: Stub) -> None:
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop")

    error = await rpc_error(sign_in(stub, subject, "phone",
                                    expected_replacements=pb.SessionIds(session_ids=[laptop.session_id, "nope"])))

    assert error.code() is grpc.StatusCode.ABORTED
    assert await live_sessions(stub, subject) == [laptop.session_id]


async def test_the_device_list_shows_class_name_and_last_use(start_server: StartServer) -> None:
    clock = Clock()
    stub = (await start_server(clock, session_limits=CLASSES)).stub
    subject = new_subject()
    phone = await sign_in(stub, subject, "phone", device_class="mobile", device_name="Pixel 8")
    before = (await stub.ListSessions(pb.ListSessionsRequest(subject=subject))).sessions[0]
    clock.advance(60)
    await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=phone.refresh_token))

    after = (await stub.ListSessions(pb.ListSessionsRequest(subject=subject))).sessions[0]

    assert (after.device_id, after.device_class, after.device_name) == ("phone", "mobile", "Pixel 8")
    assert before.last_used_at.seconds == before.created_at.seconds
    assert after.last_used_at.seconds == before.last_used_at.seconds + 60


async def test_sign_out_other_devices_keeps_only_the_referenced_session(start_server: StartServer) -> None:
    stub = (await start_server(max_sessions_per_subject=3)).stub
    subject = new_subject()
    keep = await sign_in(stub, subject, "laptop")
    others = [await sign_in(stub, subject, device) for device in ("phone", "tablet")]
    bystander = await sign_in(stub, new_subject(), "laptop")

    by_token = await stub.RevokeToken(pb.RevokeTokenRequest(other_sessions=pb.SessionRef(token=keep.access_token)))

    assert by_token.revoked_sessions == 2
    assert await live_sessions(stub, subject) == [keep.session_id]
    for other in others:
        answer = await validate(stub, other.access_token)
        assert answer.revocation_cause == pb.REVOCATION_CAUSE_OTHER_DEVICES_SIGNED_OUT
    assert await reason(stub, bystander.access_token) == "VALID"
    again = await stub.RevokeToken(pb.RevokeTokenRequest(other_sessions=pb.SessionRef(session_id=keep.session_id)))
    assert again.revoked_sessions == 0


async def test_a_signed_out_session_cannot_sign_the_others_out(start_server: StartServer) -> None:
    stub = (await start_server(max_sessions_per_subject=2)).stub
    subject = new_subject()
    old = await sign_in(stub, subject, "laptop")
    await stub.RevokeToken(pb.RevokeTokenRequest(token=old.access_token))
    phone = await sign_in(stub, subject, "phone")

    answer = await stub.RevokeToken(pb.RevokeTokenRequest(other_sessions=pb.SessionRef(token=old.access_token)))

    assert answer.revoked_sessions == 0
    assert await reason(stub, phone.access_token) == "VALID"


async def test_other_sessions_with_a_token_of_another_authority_is_invalid_argument(
    stub: Stub, start_server: StartServer
) -> None:
    foreign = await sign_in((await start_server(issuer="someone-else")).stub, new_subject(), "laptop")
    subject = new_subject()
    mine = await sign_in(stub, subject, "laptop")

    error = await rpc_error(stub.RevokeToken(pb.RevokeTokenRequest(other_sessions=pb.SessionRef(token=foreign.access_token))))
    empty = await rpc_error(stub.RevokeToken(pb.RevokeTokenRequest(other_sessions=pb.SessionRef())))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "other_sessions.token" in (error.details() or "")
    assert foreign.access_token not in (error.details() or "")
    assert empty.code() is grpc.StatusCode.INVALID_ARGUMENT and "other_sessions" in (empty.details() or "")
    assert await reason(stub, mine.access_token) == "VALID"


@pytest.mark.parametrize("field", ["token", "session_id"])
async def test_other_sessions_with_an_empty_reference_names_the_field_given(stub: Stub, field: str) -> None:
    subject = new_subject()
    mine = await sign_in(stub, subject, "laptop")

    error = await rpc_error(stub.RevokeToken(pb.RevokeTokenRequest(other_sessions=pb.SessionRef(**{field: ""}))))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == f"other_sessions.{field}: must not be empty"
    assert await live_sessions(stub, subject) == [mine.session_id]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("device_name", "x" * 257),
        ("device_name", "evil\nname"),
        ("device_name", "bell\x07"),
        ("device_class", "m" * 65),
        ("device_class", "mob\tile"),
    ],
)
async def test_bad_device_fields_are_invalid_argument_naming_the_field_and_change_nothing(
    stub: Stub, field: str, value: str
) -> None:
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop")

    error = await rpc_error(sign_in(stub, subject, "phone", **{field: value}))
    preview = await rpc_error(stub.PreviewSignIn(pb.IssueTokenRequest(subject=subject, device_id="phone",
                                                                      **{field: value})))

    for refused in (error, preview):
        assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field in (refused.details() or "")
    assert await live_sessions(stub, subject) == [laptop.session_id]


async def test_preview_refuses_what_the_sign_in_would_refuse(stub: Stub) -> None:
    for request, field in ((pb.IssueTokenRequest(subject=new_subject(), device_id="phone", audience="elsewhere"),
                            "audience"),
                           (pb.IssueTokenRequest(subject="", device_id="phone"), "subject"),
                           (pb.IssueTokenRequest(subject=new_subject(), device_id="phone", policy=7), "policy")):  # type: ignore[arg-type]
        error = await rpc_error(stub.PreviewSignIn(request))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and field in (error.details() or ""), field


async def test_a_256_byte_device_name_of_any_script_is_accepted(stub: Stub) -> None:
    name = "é" * 128  # 256 bytes of UTF-8
    subject = new_subject()
    await sign_in(stub, subject, "laptop", device_name=name)

    listed = (await stub.ListSessions(pb.ListSessionsRequest(subject=subject))).sessions

    assert listed[0].device_name == name
