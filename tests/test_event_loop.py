"""The event loop ``authority serve`` runs on (authority/api/loops.py): uvloop by default,
asyncio's own when asked or when uvloop cannot be imported, and a refused start for a
loop it cannot have. Real processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from authority_client.v1 import authority_pb2 as pb

from authority.api import loops
from authority.errors import ConfigError
from tests.conftest import TEST_KEY_ENCRYPTION_KEY
from tests.support.replicas import AUTHORITY, Replica, ReplicaSet

DEADLINE = 30.0


def _listening_lines(replica: Replica) -> list[str]:
    return [line for line in replica.log if " listening on " in line and "event loop:" in line]


async def _single_device_rule_holds(replica: Replica) -> tuple[str, str]:
    laptop = await replica.stub.IssueToken(pb.IssueTokenRequest(subject="alice", device_id="laptop"), timeout=10)
    phone = await replica.stub.IssueToken(pb.IssueTokenRequest(subject="alice", device_id="phone"), timeout=10)
    return await replica.outcome(laptop.access_token), await replica.outcome(phone.access_token)


@pytest.mark.parametrize(("choice", "expected"), [("", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")],
                         ids=["default", "uvloop", "asyncio"])
async def test_serve_runs_on_the_chosen_loop_and_stops_cleanly(database_url: str, choice: str, expected: str) -> None:
    settings = {"key_encryption_key": TEST_KEY_ENCRYPTION_KEY, **({"event_loop": choice} if choice else {})}
    replicas = ReplicaSet(database_url, name=f"loop-{expected}", **settings)
    try:
        (replica,) = await replicas.start(1)
        outcomes = await _single_device_rule_holds(replica)
        code = await replica.stop()
    finally:
        await replicas.close()

    log = "".join(replica.log)
    assert [line for line in _listening_lines(replica) if f"event loop: {expected}" in line], log
    assert outcomes == ("REVOKED", "VALID")
    assert code == 0 and "stopped" in log
    assert "Traceback" not in log and "never awaited" not in log


async def test_every_worker_runs_on_uvloop(tmp_path: Path) -> None:
    replicas = ReplicaSet(f"sqlite+aiosqlite:///{tmp_path}/a.db", name="loop-workers",
                          key_encryption_key=TEST_KEY_ENCRYPTION_KEY, workers="2")
    try:
        (replica,) = await replicas.start(1)
        deadline = time.monotonic() + DEADLINE
        while len(_listening_lines(replica)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # polling the log the workers write as each is ready, bounded
        outcomes = await _single_device_rule_holds(replica)
    finally:
        await replicas.close()

    lines = _listening_lines(replica)
    assert len(lines) == 2 and all("event loop: uvloop" in line for line in lines), "".join(replica.log)
    assert {line.partition(" (pid")[0].rpartition("worker ")[2] for line in lines} == {"0", "1"}
    assert outcomes == ("REVOKED", "VALID")


def _hide_uvloop(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import uvloop: a package of that name, first on
    the path, that refuses to be imported, as where uvloop does not build."""
    hidden = tmp_path / "hidden" / "uvloop"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text('raise ImportError("uvloop is not available here")\n')
    path = os.pathsep.join(filter(None, [str(hidden.parent), os.environ.get("PYTHONPATH", "")]))
    return {"PYTHONPATH": path}


async def test_auto_falls_back_to_asyncio_where_uvloop_cannot_be_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _hide_uvloop(tmp_path).items():
        monkeypatch.setenv(name, value)  # a replica inherits every variable but AUTHORITY_*
    replicas = ReplicaSet(f"sqlite+aiosqlite:///{tmp_path}/a.db", name="loop-fallback",
                          key_encryption_key=TEST_KEY_ENCRYPTION_KEY)
    try:
        (replica,) = await replicas.start(1)
        outcomes = await _single_device_rule_holds(replica)
    finally:
        await replicas.close()

    assert [line for line in _listening_lines(replica) if "event loop: asyncio" in line], "".join(replica.log)
    assert outcomes == ("REVOKED", "VALID")


async def _serve_exit(tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, "serve", "--listen", "127.0.0.1:0", "--database-url", f"sqlite+aiosqlite:///{tmp_path}/a.db",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "AUTHORITY_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY, **env},
    )
    _, err = await asyncio.wait_for(process.communicate(), timeout=DEADLINE)
    assert process.returncode is not None
    return process.returncode, err.decode()


@pytest.mark.parametrize(("given", "message"), [
    ({"AUTHORITY_EVENT_LOOP": "trio"}, "event_loop: must be one of auto, uvloop, asyncio"),
    ({"AUTHORITY_EVENT_LOOP": "uvloop", "HIDE": "1"}, "event_loop: uvloop cannot be imported"),
    ({"AUTHORITY_EVENT_LOOP": "uvloop", "AUTHORITY_WORKERS": "2", "HIDE": "1"}, "event_loop: uvloop cannot be imported"),
], ids=["unknown-loop", "uvloop-missing", "uvloop-missing-with-workers"])
async def test_a_loop_that_cannot_be_had_refuses_the_start_in_one_line(
    tmp_path: Path, given: dict[str, str], message: str
) -> None:
    env = dict(given)
    if env.pop("HIDE", None):
        env.update(_hide_uvloop(tmp_path))

    code, err = await _serve_exit(tmp_path, env)

    assert code == 2, err
    assert message in err and "Traceback" not in err and "never awaited" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "a.db").exists()  # refused before the store was touched


def test_run_gives_each_choice_its_loop() -> None:
    async def which() -> str:
        return loops.loop_name(asyncio.get_running_loop())

    assert loops.run(which(), "auto") == "uvloop"
    assert loops.run(which(), "uvloop") == "uvloop"
    assert loops.run(which(), "asyncio") == "asyncio"


def test_without_uvloop_auto_is_asyncio_and_uvloop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError

    async def which() -> str:
        return loops.loop_name(asyncio.get_running_loop())

    assert loops.loop_factory("auto") is None
    assert loops.run(which(), "auto") == "asyncio"
    refused = which()
    with pytest.raises(ConfigError, match="uvloop cannot be imported") as raised:
        loops.run(refused, "uvloop")
    assert raised.value.option == "event_loop"
    assert inspect.getcoroutinestate(refused) == inspect.CORO_CLOSED


def test_an_unknown_choice_is_refused_by_the_loop_factory_too() -> None:
    with pytest.raises(ConfigError, match="must be one of auto, uvloop, asyncio"):
        loops.loop_factory("trio")


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
def test_stop_signals_stop_while_set_and_leave_the_process_s_own_handlers_behind(choice: str) -> None:
    before = {signum: signal.getsignal(signum) for signum in loops.STOP_SIGNALS}

    async def serve_until_signalled() -> bool:
        stopping = asyncio.Event()
        with loops.stop_signals(asyncio.get_running_loop(), stopping.set):
            signal.raise_signal(signal.SIGTERM)
            await asyncio.wait_for(stopping.wait(), DEADLINE)
        return stopping.is_set()

    stopped = loops.run(serve_until_signalled(), choice)

    # uvloop's closed loop would otherwise keep its handlers, and a later signal be lost.
    assert stopped
    assert {signum: signal.getsignal(signum) for signum in loops.STOP_SIGNALS} == before
