"""The admin command line (`authority token ...`, `authority sessions list`) as an operator
runs it: a real process against a real authority."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from authority_client.v1 import authority_pb2 as pb

from authority.store import Store
from tests.conftest import TEST_KEY_ENCRYPTION_KEY, Running, StartServer
from tests.support.calls import new_subject, reason, sign_in

AUTHORITY = str(Path(sys.executable).with_name("authority"))


async def cli(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def cli_json(authority: Running, *args: str, stdin: str = "") -> Any:
    code, out, err = await cli(*args, "--target", authority.target, "--json", stdin=stdin)
    assert code == 0, err
    return json.loads(out)


async def test_issue_validate_list_and_revoke_by_token(authority: Running) -> None:
    subject = new_subject()

    issued = await cli_json(authority, "token", "issue", subject, "laptop", "--ttl", "5m", "--claim", "plan=\"pro\"",
                            "--claim", "seats=3")
    checked = await cli_json(authority, "token", "validate", issued["access_token"])
    listed = await cli_json(authority, "sessions", "list", subject)
    revoked = await cli_json(authority, "token", "revoke", "--token", "-", stdin=issued["access_token"] + "\n")
    code, out, _ = await cli("token", "validate", issued["access_token"], "--target", authority.target)

    assert checked["valid"] is True
    assert checked["claims"]["subject"] == subject
    assert checked["claims"]["extra"] == {"plan": "pro", "seats": 3}
    assert checked["claims"]["expires_at"] - checked["claims"]["issued_at"] == 300
    assert [s["session_id"] for s in listed] == [issued["session_id"]]
    assert revoked == {"revoked_sessions": 1}
    assert (code, out.strip()) == (1, "not valid: REVOKED (revoked: logged out)")


async def test_a_second_device_shows_what_it_replaced_and_the_table_is_readable(authority: Running) -> None:
    subject = new_subject()
    laptop = await sign_in(authority.stub, subject, "laptop")

    code, out, err = await cli("token", "issue", subject, "phone", "--target", authority.target)
    listing = await cli("sessions", "list", subject, "--target", authority.target)

    assert code == 0, err
    rows = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert rows["replaced_session_ids"] == json.dumps([laptop.session_id])
    assert rows["expires_at"].endswith("UTC")
    assert listing[1].splitlines()[0].split() == ["SESSION", "DEVICE", "CLASS", "NAME", "CREATED", "LAST-USED",
                                                  "EXPIRES"]
    assert "phone" in listing[1] and "laptop" not in listing[1]


async def test_refresh_from_stdin_and_revoke_a_session_and_a_subject(authority: Running) -> None:
    subject = new_subject()
    first = await sign_in(authority.stub, subject, "laptop")

    refreshed = await cli_json(authority, "token", "refresh", "-", stdin=first.refresh_token)
    by_session = await cli_json(authority, "token", "revoke", "--session", first.session_id, "--reason", "lost")
    await sign_in(authority.stub, subject, "tablet")
    by_subject = await cli_json(authority, "token", "revoke", "--subject", subject)

    assert refreshed["session_id"] == first.session_id
    assert refreshed["refresh_token"] != first.refresh_token
    assert by_session == {"revoked_sessions": 1} and by_subject == {"revoked_sessions": 1}
    assert await reason(authority.stub, refreshed["access_token"]) == "REVOKED"


async def test_log_out_by_refresh_token_read_from_stdin(authority: Running) -> None:
    subject = new_subject()
    signed_in = await sign_in(authority.stub, subject, "laptop")

    revoked = await cli_json(authority, "token", "revoke", "--refresh-token", "-", stdin=signed_in.refresh_token + "\n")

    assert revoked == {"revoked_sessions": 1}
    assert await reason(authority.stub, signed_in.access_token) == "REVOKED"


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (("token", "issue", "", "laptop"), "INVALID_ARGUMENT: subject: must not be empty"),
        (("token", "refresh", "x" * 43), "UNAUTHENTICATED"),
        (("token", "issue", "someone", "laptop", "--ttl", "soon"), "--ttl:"),
        (("token", "issue", "someone", "laptop", "--claim", "novalue"), "--claim:"),
    ],
    ids=["invalid-argument", "unauthenticated", "bad-ttl", "bad-claim"],
)
async def test_a_refused_call_prints_one_clear_line_and_exits_non_zero(
    authority: Running, args: tuple[str, ...], status: str
) -> None:
    code, out, err = await cli(*args, "--target", authority.target)

    assert code != 0
    assert out == ""
    assert err.strip().splitlines() == [err.strip()]
    assert status in err
    assert "Traceback" not in err


@pytest.mark.parametrize("target", ["127.0.0.1:99999", "127.0.0.1", "127.0.0.1:http"])
async def test_a_target_that_is_not_host_port_is_refused_before_any_call(target: str) -> None:
    code, _, err = await cli("sessions", "list", "someone", "--target", target)

    assert code == 2
    assert err.strip() == f"authority sessions list: --target: {target!r} is not HOST:PORT"


async def test_an_unreachable_authority_is_one_line_naming_the_target() -> None:
    code, _, err = await cli("sessions", "list", "someone", env={"AUTHORITY_TARGET": "127.0.0.1:1"})

    assert code == 1
    assert err.strip() == 'authority sessions list: no authority answering at 127.0.0.1:1 (is "authority serve" running?)'


async def test_the_api_key_goes_out_as_metadata() -> None:
    seen: list[dict[str, str]] = []

    async def list_sessions(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        seen.append({m.key: m.value for m in context.invocation_metadata() or ()})  # type: ignore[misc]
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "checked")
        return b""

    handler = grpc.method_handlers_generic_handler(
        "authority.v1.TokenAuthority", {"ListSessions": grpc.unary_unary_rpc_method_handler(list_sessions)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        code, _, err = await cli(
            "sessions", "list", "someone", "--target", f"127.0.0.1:{port}", env={"AUTHORITY_API_KEY": "k-123"}
        )
    finally:
        await server.stop(None)

    assert (code, err.strip()) == (1, "authority sessions list: PERMISSION_DENIED: checked")
    assert seen and seen[0]["x-api-key"] == "k-123"


async def test_the_device_list_and_a_refused_token_say_which_device_and_why(authority: Running) -> None:
    subject = new_subject()
    laptop = await sign_in(authority.stub, subject, "laptop")
    await sign_in(authority.stub, subject, "phone", device_class="mobile", device_name="the phone")

    listed = await cli_json(authority, "sessions", "list", subject)
    code, out, _ = await cli("token", "validate", laptop.access_token, "--target", authority.target)
    _, as_json, _ = await cli("token", "validate", laptop.access_token, "--target", authority.target, "--json")
    checked = json.loads(as_json)

    assert [(s["device_id"], s["device_class"], s["device_name"]) for s in listed] == [("phone", "mobile", "the phone")]
    assert listed[0]["last_used_at"] == listed[0]["created_at"]
    assert (code, out.strip()) == (1, "not valid: REVOKED (revoked: signed in on the phone)")
    assert (checked["cause"], checked["text"]) == ("REPLACED_BY_SIGN_IN", "revoked: signed in on the phone")


async def test_sessions_events_prints_the_log_and_filters_by_subject(authority: Running) -> None:
    subject = new_subject()
    laptop = await sign_in(authority.stub, subject, "laptop", device_name="the laptop")
    phone = await sign_in(authority.stub, subject, "phone")
    await sign_in(authority.stub, new_subject(), "laptop")

    code, out, err = await cli("sessions", "events", "--subject", subject, "--json", "--target", authority.target)
    table = await cli("sessions", "events", "--subject", subject, "--target", authority.target)

    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["kind"], e["session_id"]) for e in events] == [
        ("SIGNED_IN", laptop.session_id), ("SESSION_ENDED", laptop.session_id), ("SIGNED_IN", phone.session_id)
    ]
    assert events[1]["cause"] == "REPLACED_BY_SIGN_IN" and events[0]["device_name"] == "the laptop"
    assert len(table[1].splitlines()) == 3 and "REPLACED_BY_SIGN_IN" in table[1]
    assert "eyJ" not in out + table[1]


async def test_sessions_events_follow_prints_new_events_as_they_happen(authority: Running) -> None:
    subject = new_subject()
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, "sessions", "events", "--follow", "--json", "--subject", subject, "--target", authority.target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        issued = None
        deadline = asyncio.get_running_loop().time() + 30
        line = b""
        while not line:
            # Sign in until the follower, once connected, prints it (bounded by the deadline).
            assert asyncio.get_running_loop().time() < deadline, "sessions events --follow printed nothing"
            issued = await sign_in(authority.stub, subject, "laptop")
            try:
                line = await asyncio.wait_for(process.stdout.readline(), 1.0)
            except TimeoutError:
                continue
        event = json.loads(line)
        assert event["kind"] in ("SIGNED_IN", "SESSION_ENDED") and event["subject"] == subject
        assert issued is not None
    finally:
        process.kill()
        await process.wait()


async def test_sessions_events_follow_prints_a_new_epoch_of_the_log_again_from_its_start(
    start_server: StartServer, database_url: str
) -> None:
    """After `authority migrate --renew-epoch` (a restored copy) the follower neither stops
    nor skips: the new log may write events at positions it already printed."""
    running = await start_server(revocation_poll_interval=0.1)
    subject = new_subject()
    signed = await sign_in(running.stub, subject, "laptop")
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, "sessions", "events", "--follow", "--json", "--subject", subject, "--target", running.target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        assert (first["kind"], first["session_id"]) == ("SIGNED_IN", signed.session_id) and first["epoch"]

        store = Store.open(database_url)
        try:
            await store.renew_epoch()
            renewed = (await store.log_state()).epoch
        finally:
            await store.close()

        # The same event again, now of the new epoch, and a note saying why.
        again = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        assert (again["sequence"], again["session_id"]) == (first["sequence"], signed.session_id)
        assert again["epoch"] == renewed
        assert renewed != first["epoch"]
        assert "changed epoch" in (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        # And it goes on following the new log.
        later = await sign_in(running.stub, subject, "phone")
        followed = [json.loads(await asyncio.wait_for(process.stdout.readline(), 30)) for _ in range(2)]
        assert [(e["kind"], e["session_id"], e["epoch"]) for e in followed] == [
            ("SESSION_ENDED", signed.session_id, renewed), ("SIGNED_IN", later.session_id, renewed)
        ]
        assert process.returncode is None
    finally:
        process.kill()
        await process.wait()


async def test_sessions_forget_on_a_database_that_is_not_there_says_so_and_creates_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    missing = tmp_path / "mistyped.db"
    env = {"AUTHORITY_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY}

    no_file = await cli("sessions", "forget", "alice", "--database-url", f"sqlite+aiosqlite:///{missing}", env=env)
    no_schema = await cli("sessions", "forget", "alice", "--database-url", postgres_url, env=env)
    unreachable = await cli("sessions", "forget", "alice", "--database-url",
                            "postgresql+asyncpg://postgres:hunter2@127.0.0.1:1/authority", env=env)

    assert no_file[0] == 2 and no_file[2].strip() == f"authority sessions: no database at {missing}"
    assert not missing.exists()
    assert no_schema[0] == 2 and "has no schema yet" in no_schema[2]
    assert unreachable[0] == 2 and unreachable[2].startswith("authority sessions forget: database_url: cannot use")
    assert "Traceback" not in no_file[2] + no_schema[2] + unreachable[2] and "hunter2" not in unreachable[2]


async def test_sessions_forget_signs_the_subject_out_and_erases_their_events(authority: Running) -> None:
    subject, bystander = new_subject(), new_subject()
    laptop = await sign_in(authority.stub, subject, "laptop", device_name="Alice's laptop")
    await sign_in(authority.stub, bystander, "laptop")
    url = authority.server.authority.settings.database_url

    code, out, err = await cli("sessions", "forget", subject, "--database-url", url, "--json",
                               env={"AUTHORITY_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY})

    assert code == 0, err
    assert json.loads(out) == {"ended_sessions": 1, "deleted_events": 2}
    # The running server learns of the sign-out through the log, as every replica does.
    deadline = asyncio.get_running_loop().time() + 10
    while await reason(authority.stub, laptop.access_token) != "REVOKED":
        assert asyncio.get_running_loop().time() < deadline, "the forgotten subject's token still validates"
        await asyncio.sleep(0.05)
    listed = await authority.stub.ListSessions(pb.ListSessionsRequest(subject=subject))
    assert list(listed.sessions) == []
    events = await cli("sessions", "events", "--json", "--target", authority.target)
    subjects = {json.loads(line)["subject"] for line in events[1].splitlines()}
    assert subject not in subjects and bystander in subjects
