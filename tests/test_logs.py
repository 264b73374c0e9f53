"""Log lines: one JSON line per RPC with no secret in it, text at a terminal; and
`authority config`, which shows the effective settings with secrets masked."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import logging
import time
from collections.abc import Iterator

import grpc
import pytest
from authority_client.v1 import authority_pb2 as pb

from authority.config import Settings, describe
from authority.credentials import api_key_entry, new_api_key, parse_roles
from authority.ops import logs
from tests.conftest import Running
from tests.support.calls import new_subject, sign_in, validate
from tests.test_admin import cli


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything logged while the test runs, as ``logs.install`` writes it (JSON)."""
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    stream = io.StringIO()
    logs.install("INFO", "json", stream)
    yield stream
    root.handlers[:] = before[0]
    root.setLevel(before[1])


def rpc_lines(stream: io.StringIO) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["logger"] == logs.RPC_LOGGER]


async def written_rpc_lines(stream: io.StringIO, count: int) -> list[dict[str, object]]:
    """The RPC lines once ``count`` are written (at most 5 s): lines are written in batches
    soon after the first, and a refused call's status can reach its caller before its
    line is queued."""
    deadline = asyncio.get_running_loop().time() + 5
    while len(rpc_lines(stream)) < count and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    return rpc_lines(stream)


async def test_each_rpc_is_one_json_line_with_its_status_and_a_hashed_subject(
    authority: Running, captured: io.StringIO
) -> None:
    subject = new_subject()
    issued = await sign_in(authority.stub, subject, "laptop")
    await validate(authority.stub, issued.access_token)

    lines = await written_rpc_lines(captured, 2)

    assert [(line["method"], line["code"]) for line in lines] == [
        ("authority.v1.TokenAuthority/IssueToken", "OK"),
        ("authority.v1.TokenAuthority/ValidateToken", "OK"),
    ]
    assert lines[0]["subject_hash"] == logs.subject_hash(subject)
    assert "subject_hash" not in lines[1]
    assert all(isinstance(line["duration_ms"], float) and str(line["peer"]).startswith("ipv4:127.0.0.1:") for line in lines)
    assert lines[0]["level"] == "INFO" and "time" in lines[0]


async def test_no_token_refresh_token_or_subject_reaches_any_log_line(
    authority: Running, captured: io.StringIO
) -> None:
    subject = new_subject()
    stub = authority.stub
    laptop = await sign_in(stub, subject, "laptop")
    phone = await sign_in(stub, subject, "phone")
    traded = await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=phone.refresh_token))
    refreshed = await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=traded.refresh_token))
    with pytest.raises(grpc.aio.AioRpcError) as reused:  # reuse (not a retry: its pair was used): revokes, and says so
        await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=phone.refresh_token))
    assert reused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    await validate(stub, laptop.access_token)
    await stub.RevokeToken(pb.RevokeTokenRequest(token=refreshed.access_token))
    with pytest.raises(grpc.aio.AioRpcError) as forged:
        await stub.RevokeToken(pb.RevokeTokenRequest(token=laptop.access_token[:-4] + "AAAA"))
    assert forged.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    key_pem = authority.server.authority.codec.keyring.signing_key_at(time.time()).private_pem().decode()

    lines = await written_rpc_lines(captured, 8)
    text = captured.getvalue()

    secrets = [laptop.access_token, phone.access_token, phone.refresh_token, refreshed.access_token,
               refreshed.refresh_token, laptop.refresh_token, traded.access_token, traded.refresh_token,
               subject, key_pem.splitlines()[1]]
    # Every call wrote its line, the refused ones on the paths meant (the reuse detected,
    # the forged token refused), not on some earlier failure.
    assert [(line["method"].rpartition("/")[2], line["code"]) for line in lines] == [
        ("IssueToken", "OK"), ("IssueToken", "OK"), ("RefreshToken", "OK"), ("RefreshToken", "OK"),
        ("RefreshToken", "UNAUTHENTICATED"), ("ValidateToken", "OK"), ("RevokeToken", "OK"),
        ("RevokeToken", "INVALID_ARGUMENT"),
    ]
    leaked = [secret[:12] for secret in secrets if secret in text]
    assert not leaked, leaked


def test_auto_writes_text_to_a_terminal_and_json_elsewhere() -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    try:
        terminal, pipe = Terminal(), io.StringIO()
        logs.install("INFO", "auto", terminal)
        logs.log_rpc("a.B/C", "OK", 1.25, "ipv4:127.0.0.1:1", "someone")
        logs.install("WARNING", "auto", pipe)
        logs.log_rpc("a.B/C", "OK", 1.25, "ipv4:127.0.0.1:1", "someone")
        logging.getLogger("authority.test").warning("plain")
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])

    assert terminal.getvalue().rstrip().endswith(
        f"INFO authority.rpc: a.B/C OK 1.2ms peer=ipv4:127.0.0.1:1 subject={logs.subject_hash('someone')}"
    )
    assert [json.loads(line)["message"] for line in pipe.getvalue().splitlines()] == ["plain"]  # INFO is off


def test_describe_masks_the_database_password_the_key_encryption_key_and_api_keys() -> None:
    kek = base64.b64encode(b"k" * 32).decode()
    entry = api_key_entry("billing", parse_roles("verifier"), new_api_key())
    settings = Settings(
        database_url="postgresql+asyncpg://app:hunter2@db:5432/authority", key_encryption_key=kek, api_keys=(entry,)
    )

    shown = describe(settings)

    assert shown["database_url"] == "postgresql+asyncpg://app:***@db:5432/authority"
    assert shown["key_encryption_key"] == "***" and shown["api_keys"] == "***"
    # Not secrets: durations and paths whose names happen to say "key".
    assert shown["key_publish_ahead"] == "1m" and shown["key_encryption_key_file"] == ""
    assert shown["access_token_ttl"] == "15m" and shown["audiences"] == "token-authority"
    assert "hunter2" not in json.dumps(shown) and kek not in json.dumps(shown)


def test_describe_masks_a_password_given_in_the_query_too() -> None:
    settings = Settings(
        database_url="postgresql+asyncpg://app@db:5432/authority?ssl=require&password=hunter2",
        listen_database_url="postgresql+asyncpg://app@db/authority?password=hunter3&target_session_attrs=primary",
        key_encryption_key=base64.b64encode(b"k" * 32).decode(),
    )

    shown = describe(settings)

    assert shown["database_url"] == "postgresql+asyncpg://app@db:5432/authority?ssl=require&password=***"
    assert shown["listen_database_url"] == (
        "postgresql+asyncpg://app@db/authority?password=***&target_session_attrs=primary"
    )


async def test_config_command_shows_every_option_and_where_it_came_from() -> None:
    env = {"AUTHORITY_DATABASE_URL": "postgresql+asyncpg://app:hunter2@db/authority", "AUTHORITY_LEEWAY": "10s"}

    code, out, err = await cli("config", "--log-level", "debug", env=env)
    json_code, json_out, _ = await cli("config", "--json", env=env)

    assert code == 0 and json_code == 0, err
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    assert set(rows) == {field.name for field in dataclasses.fields(Settings)}
    assert rows["database_url"] == ["postgresql+asyncpg://app:***@db/authority", "env"]
    assert rows["leeway"] == ["10s", "env"]
    assert rows["log_level"] == ["debug", "flag"]
    assert rows["listen"] == ["127.0.0.1:50051", "default"]
    assert "hunter2" not in out + json_out
    assert json.loads(json_out)["metrics_listen"] == ""


async def test_config_with_an_invalid_value_names_the_option() -> None:
    code, _, err = await cli("config", env={"AUTHORITY_LOG_FORMAT": "xml"})

    assert code == 2
    assert err.strip() == "authority config: log_format: must be one of json, text, auto"



def test_subject_pseudonyms_are_keyed_by_the_key_encryption_key_when_there_is_one() -> None:
    unkeyed = logs.subject_hash("alice@example.com")
    try:
        logs.use_subject_key(b"k" * 32)
        keyed = logs.subject_hash("alice@example.com")
        again = logs.subject_hash("alice@example.com")
        logs.use_subject_key(b"j" * 32)
        other_deployment = logs.subject_hash("alice@example.com")
    finally:
        logs._subject_key = b""

    assert keyed == again != unkeyed
    assert other_deployment != keyed


def _grpc_reports_a_write_to_a_vanished_client() -> None:
    """What grpc's server logs (server.pyx.pxi, _handle_exceptions) when a stream's write
    fails before it noticed the client left."""
    try:
        raise RuntimeError("Failed \"execute_batch\": (<grpc._cython.cygrpc.SendMessageOperation>,)")
    except RuntimeError:
        logging.getLogger("grpc._cython.cygrpc").exception(
            "ExecuteBatchError raised in core by servicer method [%s]" % "/authority.v1.TokenAuthority/WatchRevocations"
        )


async def test_a_watcher_that_went_away_is_logged_at_debug_not_as_an_error(
    authority: Running, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        _grpc_reports_a_write_to_a_vanished_client()
    assert [r for r in caplog.records if r.name.startswith("grpc")] == []

    with caplog.at_level(logging.DEBUG, logger="grpc._cython.cygrpc"):
        _grpc_reports_a_write_to_a_vanished_client()
    (record,) = [r for r in caplog.records if r.name.startswith("grpc")]
    assert record.levelno == logging.DEBUG and record.exc_info is None
    assert "WatchRevocations" in record.getMessage() and "client went away" in record.getMessage()


async def test_other_grpc_errors_still_log_as_errors(authority: Running, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("grpc._cython.cygrpc").error("Unexpected [ValueError] raised by servicer method [x]")

    assert [r.levelno for r in caplog.records if r.name.startswith("grpc")] == [logging.ERROR]
