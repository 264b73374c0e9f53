"""Rolling upgrades. Across schema revision 0007 (the logs without the lock) a replica
still running the previous code, side by side with a new one on the same database,
refuses to follow the migrated log, with a message saying why, instead of skipping
entries, and cannot trade a device-bound session's refresh token without its proof.
Across 0008 (the sign-in that replaces unread), 0009 (the sign-in functions' bodies
rewritten, their arguments and writes unchanged) and 0010 (the functions notifying only
when asked, by default as before) it keeps serving, and across 0011 (the key set's
version) its key changes raise the version the new code publishes: its sign-ins and the new code's, of
one subject at once, keep one device. The previous code is the commit before the one that
added the revision, checked out into a temporary directory and run as a process of its
own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import grpc
import pytest
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1.authority_pb2_grpc import TokenAuthorityStub

from authority.store.migrate import migrate
from bench import previous
from bench.servers import start_authority
from tests.conftest import TEST_KEY_ENCRYPTION_KEY, StartServer
from tests.support.bound import SIGN_IN_URI, bound_sign_in, proof_message
from tests.support.calls import live_sessions, new_subject, reason, rpc_error, sign_in

REPO = Path(__file__).resolve().parent.parent
REVISION = "authority/store/migrations/versions/0007_log_without_lock.py"
UNREAD_REVISION = "authority/store/migrations/versions/0008_sign_in_replacing.py"
ONCE_REVISION = "authority/store/migrations/versions/0009_sign_in_without_rereads.py"
NOTIFY_REVISION = "authority/store/migrations/versions/0010_sign_in_notify_after_commit.py"
KEY_SET_REVISION = "authority/store/migrations/versions/0011_key_set_version.py"
DEADLINE = 30.0

pytestmark = pytest.mark.parametrize("store", ["postgres"])  # the refusal is PostgreSQL's views

# The previous code's follower, as its replicas run it: prints its position whenever it
# moves; the follower logs what goes wrong to stderr.
OLD_FOLLOWER = """
import asyncio, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
import authority
from authority.revocations import LogFollower, RevocationMirror
from authority.store import Store
from authority.store.migrate import prepare_schema

async def main(url):
    print("code", authority.__file__, flush=True)
    store = Store.open(url)
    await prepare_schema(store, upgrade=True)
    mirror = RevocationMirror()
    async def keys_changed():
        pass
    asyncio.create_task(LogFollower(store, mirror, 0.05, keys_changed).run(asyncio.Event()))
    shown = None
    while True:
        if mirror.sequence != shown:
            shown = mirror.sequence
            print("position", shown, len(mirror), flush=True)
        await asyncio.sleep(0.01)

asyncio.run(main(sys.argv[1]))
"""


def _before_revision(revision: str = REVISION) -> str:
    """The commit before the one that added ``revision``: the previous code."""
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", revision],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout.split()
    if not added:
        pytest.skip(f"the checkout has no history of {Path(revision).stem}")
    return f"{added[-1]}^"


def _previous_code(into: Path) -> Path:
    """The ``authority`` package as it was before revision 0007, extracted under ``into``."""
    archive = subprocess.run(
        ["git", "archive", _before_revision(), "authority"], cwd=REPO, check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


class _Lines:
    """Everything a process writes to one stream, line by line, as it comes."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[str] = []
        self.task = asyncio.ensure_future(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.lines.append(line.decode(errors="replace").rstrip())

    async def wait_for(self, needle: str) -> str:
        """The first line holding ``needle``, waited for up to DEADLINE seconds."""
        deadline = time.monotonic() + DEADLINE
        while True:
            found = [line for line in self.lines if needle in line]
            if found:
                return found[0]
            assert time.monotonic() < deadline and not self.task.done(), f"no line with {needle!r}: {self.lines[-20:]}"
            await asyncio.sleep(0.02)


async def test_a_replica_of_the_previous_code_refuses_the_migrated_log_instead_of_skipping_entries(
    start_server: StartServer, database_url: str, tmp_path: Path
) -> None:
    old_code = _previous_code(tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", OLD_FOLLOWER, database_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(old_code)}, cwd=str(tmp_path),
    )
    assert process.stdout is not None and process.stderr is not None
    out, err = _Lines(process.stdout), _Lines(process.stderr)
    try:
        assert str(old_code) in await out.wait_for("code ")
        await out.wait_for("position 0 0")  # the previous code made its schema (0006) and follows it
        raw = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            await raw.execute(
                "INSERT INTO revocations (session_id, subject, reason, revoked_at, expires_at)"
                " VALUES ('before-the-upgrade', 's', 'test', $1, $2)", time.time(), time.time() + 3600,
            )
        finally:
            await raw.close()
        before = (await out.wait_for(" 1")).split()
        assert before[0] == "position" and before[2] == "1"

        assert await migrate(database_url) == "0006_device_key_binding"
        new = await start_server()
        subject = new_subject()
        laptop = await sign_in(new.stub, subject, "laptop")
        await sign_in(new.stub, subject, "phone", policy=pb.SESSION_POLICY_REPLACE)

        refused = await err.wait_for("upgrade this replica")
        assert "older authority relies on" in refused
        assert await reason(new.stub, laptop.access_token) == "REVOKED"  # the new replica writes and follows
        positions = [line for line in out.lines if line.startswith("position")]
        assert positions[-1].split() == before, "the previous code read past the migration"
    finally:
        process.kill()
        await process.wait()
        out.task.cancel()
        err.task.cancel()


async def test_a_replica_of_the_previous_code_cannot_trade_a_bound_refresh_token_for_bearer_tokens(
    start_server: StartServer, database_url: str, tmp_path: Path
) -> None:
    # The previous code knows nothing of device binding: were it to trade a bound
    # session's refresh token, it would do so without a proof and issue bearer tokens.
    source, _ = previous.export(_before_revision(), tmp_path / "previous")
    env = {"AUTHORITY_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY}
    old = await asyncio.to_thread(start_authority, database_url, tmp_path, "previous", "INFO", False, source, env)
    try:
        await migrate(database_url)
        new = await start_server()
        key, issued = await bound_sign_in(new.stub, new_subject(), "laptop")
        async with grpc.aio.insecure_channel(old.target) as channel:
            old_stub = TokenAuthorityStub(channel)
            error = await rpc_error(old_stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=issued.refresh_token)))
        assert error.code() is not grpc.StatusCode.OK
        # Nothing changed: the device trades the same refresh token, with its proof, on the new replica.
        renewed = await new.stub.RefreshToken(pb.RefreshTokenRequest(
            refresh_token=issued.refresh_token, proof=proof_message(key, "POST", SIGN_IN_URI)))
        assert renewed.token_type == "DPoP"
        assert await reason(new.stub, renewed.access_token) == "PROOF_REQUIRED"  # bound: needs its proof
    finally:
        old.stop()


@pytest.mark.parametrize(("revision", "before"), [
    (UNREAD_REVISION, "0007_log_without_lock"), (ONCE_REVISION, "0008_sign_in_replacing"),
    (NOTIFY_REVISION, "0009_sign_in_without_rereads"),
])
async def test_sign_ins_of_the_previous_code_and_unread_ones_of_the_new_keep_one_device(
    start_server: StartServer, database_url: str, tmp_path: Path, revision: str, before: str
) -> None:
    # Revision 0008 only adds a function, 0009 only rewrites the functions' bodies, and 0010
    # gives them a last argument with a default: a replica of the code before any of them
    # keeps serving on the migrated schema (before 0008 reading and deciding, before 0009
    # and 0010 calling the rewritten functions as it knows them), beside the new code.
    source, _ = previous.export(_before_revision(revision), tmp_path / "previous")
    env = {"AUTHORITY_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY}
    old = await asyncio.to_thread(start_authority, database_url, tmp_path, "previous", "INFO", False, source, env)
    try:
        async with grpc.aio.insecure_channel(old.target) as channel:
            # Its connections prepare their statements before the functions change under them.
            await sign_in(TokenAuthorityStub(channel), new_subject(), "before-the-migration")
        assert await migrate(database_url) == before
        new = await start_server()
        subject = new_subject()
        async with grpc.aio.insecure_channel(old.target) as channel:
            stubs = [TokenAuthorityStub(channel), new.stub]
            issued = await asyncio.gather(*(sign_in(stubs[n % 2], subject, f"device-{n}") for n in range(40)))
            replaced = [sid for r in issued for sid in r.replaced_session_ids]
            [live] = [r for r in issued if r.session_id not in replaced]
            assert sorted(replaced) == sorted(r.session_id for r in issued if r is not live)
            assert await live_sessions(new.stub, subject) == [live.session_id]
            # Each replica enforces the other's replacements, once its follower reads them.
            deadline = time.monotonic() + DEADLINE
            others = [r.access_token for r in issued if r is not live]
            for stub in stubs:
                while (answers := {await reason(stub, token) for token in others}) != {"REVOKED"}:
                    assert time.monotonic() < deadline, answers
                    await asyncio.sleep(0.05)
                assert await reason(stub, live.access_token) == "VALID"
    finally:
        old.stop()


async def test_a_key_the_previous_code_rotates_in_raises_the_version_the_new_code_publishes(
    start_server: StartServer, database_url: str, tmp_path: Path
) -> None:
    # Revision 0011 adds the version's table and its triggers: the previous code neither
    # reads nor writes the version, and its own key changes raise it all the same.
    source, _ = previous.export(_before_revision(KEY_SET_REVISION), tmp_path / "previous")
    env = {"AUTHORITY_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY}
    old = await asyncio.to_thread(start_authority, database_url, tmp_path, "previous", "INFO", False, source, env)
    try:
        assert await migrate(database_url) == "0010_sign_in_notify_after_commit"
        new = await start_server(revocation_poll_interval=0.2)
        before = await new.stub.GetSigningKeys(pb.GetSigningKeysRequest(), timeout=5)
        rotate = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "authority.cli", "keys", "rotate", "--publish-ahead", "0s",
            env={**os.environ, **env, "AUTHORITY_DATABASE_URL": database_url,
                 "PYTHONPATH": f"{source}{os.pathsep}{source / 'clients' / 'python'}"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(rotate.communicate(), DEADLINE)
        assert rotate.returncode == 0, err.decode()
        deadline = time.monotonic() + DEADLINE
        async with grpc.aio.insecure_channel(old.target) as channel:
            for stub in (TokenAuthorityStub(channel), new.stub):
                while (answer := await stub.GetSigningKeys(pb.GetSigningKeysRequest(), timeout=5)).jwks_json.count(
                    '"kid"'
                ) != 2:
                    assert time.monotonic() < deadline, answer.jwks_json
                    await asyncio.sleep(0.05)
                if stub is new.stub:
                    assert answer.key_set_version > before.key_set_version >= 1
                else:
                    assert answer.key_set_version == 0  # the previous code does not say
    finally:
        old.stop()
