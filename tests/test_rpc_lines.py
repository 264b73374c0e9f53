"""The cheap per-RPC path: the JSON line written straight from pre-built parts is the line
the formatter writes; token-check lines may be sampled while the metrics count every call;
observation where handlers are registered still sees every status (with caller
authentication, refusals too); a warm token's message is built once."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import json
import logging
import re
from collections.abc import Iterator

import grpc
from authority_client.v1 import authority_pb2 as pb

from authority.api.answers import PerVerifiedToken
from authority.credentials import API_KEY_HEADER, api_key_entry, new_api_key, parse_roles
from authority.ops import logs
from authority.tokens import AccessClaims
from tests.conftest import StartServer
from tests.support.calls import new_subject, rpc_error, sign_in, validate
from tests.test_logs import captured, written_rpc_lines  # noqa: F401 (a fixture)
from tests.test_metrics import TA, scrape, value

VALIDATE = TA + "ValidateToken"


@contextlib.contextmanager
def sole_json_handler() -> Iterator[None]:
    """The installed JSON handler as the root's only handler, as in `authority serve`:
    the test runner's capturing handlers (added for each test's body) set aside."""
    root = logging.getLogger()
    others = [handler for handler in root.handlers if handler is not logs._installed]
    for handler in others:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in others:
            root.addHandler(handler)


def test_the_straight_line_is_exactly_the_line_the_json_formatter_writes(captured: io.StringIO) -> None:  # noqa: F811
    odd_peer = 'ipv6:[::1]:5 "quoted" \\ tab\t é'
    with sole_json_handler():
        assert logs._sole_json_handler() is logs._installed is not None  # the straight path is taken
        logs.log_rpc(VALIDATE, "OK", 0.1234, "ipv4:127.0.0.1:1", "")
        logs.log_rpc("a.B/Odd \"name\"", "INVALID_ARGUMENT", 12.5, odd_peer, "alice")
        straight = captured.getvalue().splitlines()
    # A second handler on the way: the ordinary log record, through JsonFormatter.
    beside = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(beside)
    try:
        logs.log_rpc(VALIDATE, "OK", 0.1234, "ipv4:127.0.0.1:1", "")
        logs.log_rpc("a.B/Odd \"name\"", "INVALID_ARGUMENT", 12.5, odd_peer, "alice")
    finally:
        logging.getLogger().removeHandler(beside)
    formatted = captured.getvalue().splitlines()[2:]

    assert len(straight) == len(formatted) == 2
    stamp = re.compile(r'^\{"time": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", ')
    for ours, theirs in zip(straight, formatted):
        assert stamp.match(ours) and stamp.match(theirs)
        assert stamp.sub("", ours) == stamp.sub("", theirs)  # byte for byte, but the time
    assert json.loads(straight[1])["peer"] == odd_peer
    assert json.loads(straight[1])["subject_hash"] == logs.subject_hash("alice")


def test_the_duration_is_written_as_the_json_formatter_writes_it_rounded() -> None:
    durations = [0.0, 0.0004, 0.0005, 0.0015, 0.001, 0.1, 0.1234, 0.1235, 1.0005, 2.675, 12.5, 999.9995,
                 1e6 + 0.0625, 2.0**43 - 0.001, *(n / 1024 for n in range(1, 4096, 37)),
                 *(n * 0.0001 for n in range(0, 20000, 7))]
    for duration_ms in durations:
        assert logs.json_milliseconds(duration_ms) == json.dumps(round(duration_ms, 3)), duration_ms


def test_no_line_is_written_while_info_is_off(captured: io.StringIO) -> None:  # noqa: F811
    logging.getLogger().setLevel(logging.WARNING)  # the fixture puts the level back
    with sole_json_handler():
        logs.log_rpc(VALIDATE, "OK", 0.1, "ipv4:127.0.0.1:1", "")

    assert captured.getvalue() == ""


async def test_sampled_token_checks_log_one_ok_line_in_n_and_metrics_count_every_call(
    start_server: StartServer, captured: io.StringIO  # noqa: F811
) -> None:
    served = await start_server(metrics_listen="127.0.0.1:0", log_sample_validate=3)
    issued = await sign_in(served.stub, new_subject(), "laptop")
    for _ in range(7):
        assert (await validate(served.stub, issued.access_token)).valid
    await rpc_error(served.stub.ValidateToken(pb.ValidateTokenRequest(token="")))

    lines = [(line["method"], line["code"]) for line in await written_rpc_lines(captured, 4)]
    samples = await scrape(served)

    assert lines == [(TA + "IssueToken", "OK"), (VALIDATE, "OK"), (VALIDATE, "OK"), (VALIDATE, "INVALID_ARGUMENT")]
    assert value(samples, "authority_rpcs_total", method=VALIDATE, code="OK") == 7
    assert value(samples, "authority_rpc_duration_seconds_count", method=VALIDATE) == 8
    assert value(samples, "authority_validations_total", outcome="valid") == 7


async def test_with_caller_authentication_a_refused_call_is_counted_and_logged(
    start_server: StartServer, captured: io.StringIO  # noqa: F811
) -> None:
    key = new_api_key()
    served = await start_server(metrics_listen="127.0.0.1:0",
                                api_keys=(api_key_entry("checkout", parse_roles("verifier"), key),))

    refused = await rpc_error(served.stub.ValidateToken(pb.ValidateTokenRequest(token="x")))
    answer = await served.stub.ValidateToken(pb.ValidateTokenRequest(token="x"), metadata=((API_KEY_HEADER, key),))
    undecodable = served.channel.unary_unary(f"/{VALIDATE}")
    bad = await rpc_error(undecodable(b"\x0a\x02\xff\xfe", metadata=((API_KEY_HEADER, key),)))

    written = await written_rpc_lines(captured, 3)
    samples = await scrape(served)
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED and not answer.valid
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [line["code"] for line in written if line["method"] == VALIDATE] == [
        "UNAUTHENTICATED", "OK", "INVALID_ARGUMENT"]
    for code in ("UNAUTHENTICATED", "OK", "INVALID_ARGUMENT"):
        assert value(samples, "authority_rpcs_total", method=VALIDATE, code=code) == 1, code
    assert key not in captured.getvalue()


def _claims(token_id: str) -> AccessClaims:
    return AccessClaims(subject="s", device_id="d", session_id="sid", token_id=token_id, issuer="i", audience="a",
                        issued_at=1, expires_at=2, extra={})


def test_a_message_is_built_once_per_verified_claims_and_anew_when_they_change() -> None:
    built: list[str] = []

    def build(claims: AccessClaims) -> str:
        built.append(claims.token_id)
        return f"message for {claims.token_id}"

    messages = PerVerifiedToken(build, size=2)
    first = _claims("one")
    assert messages.get("t1", first) == messages.get("t1", first) == "message for one"
    again = _claims("one-again")  # the validator verified t1 anew: another claims object
    assert messages.get("t1", again) == "message for one-again"
    messages.get("t2", _claims("two"))
    messages.get("t3", _claims("three"))  # full: emptied, then refilled

    assert built == ["one", "one-again", "two", "three"]
    assert len(messages) == 1


async def test_lines_are_written_together_soon_after_the_first(captured: io.StringIO) -> None:  # noqa: F811
    with sole_json_handler():
        logs.log_rpc(VALIDATE, "OK", 0.1, "ipv4:127.0.0.1:1", "")
        logs.log_rpc(VALIDATE, "UNAVAILABLE", 0.2, "ipv4:127.0.0.1:2", "")
        at_once = captured.getvalue()
        deadline = asyncio.get_running_loop().time() + 5
        while captured.getvalue().count("\n") < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        lines = [json.loads(line) for line in captured.getvalue().splitlines()]

    assert at_once == ""
    assert [(line["code"], line["peer"]) for line in lines] == [("OK", "ipv4:127.0.0.1:1"),
                                                                 ("UNAVAILABLE", "ipv4:127.0.0.1:2")]


async def test_a_full_batch_is_written_at_once(captured: io.StringIO) -> None:  # noqa: F811
    with sole_json_handler():
        for n in range(logs.RPC_LINES_BATCH):
            logs.log_rpc(VALIDATE, "OK", 0.1, f"ipv4:127.0.0.1:{n}", "")
        written = captured.getvalue().splitlines()

    assert [json.loads(line)["peer"] for line in written] == [f"ipv4:127.0.0.1:{n}" for n in range(logs.RPC_LINES_BATCH)]


async def test_a_line_made_when_its_batch_is_written_is_the_calls_own(captured: io.StringIO) -> None:  # noqa: F811
    odd_peer = 'ipv6:[::1]:5 "quoted" \\ tab\t é'
    with sole_json_handler():
        before = datetime.datetime.now(datetime.timezone.utc)
        logs.log_rpc(VALIDATE, "INVALID_ARGUMENT", 12.5, odd_peer, "alice")
        after = datetime.datetime.now(datetime.timezone.utc)
        assert captured.getvalue() == ""  # queued; made and written with its batch
        deadline = asyncio.get_running_loop().time() + 5
        while not captured.getvalue() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        written = datetime.datetime.now(datetime.timezone.utc)
        (line,) = captured.getvalue().splitlines()

    fields = json.loads(line)
    # The time is the call's, to the millisecond, not the write's (RPC_LINES_DELAY later).
    stamp = datetime.datetime.fromisoformat(fields.pop("time"))
    assert before - datetime.timedelta(milliseconds=1) <= stamp <= after
    assert written - stamp >= datetime.timedelta(seconds=logs.RPC_LINES_DELAY / 2)
    assert fields == {
        "level": "INFO", "logger": logs.RPC_LOGGER, "message": f"{VALIDATE} INVALID_ARGUMENT 12.5ms",
        "method": VALIDATE, "code": "INVALID_ARGUMENT", "duration_ms": 12.5, "peer": odd_peer,
        "subject_hash": logs.subject_hash("alice"),
    }
