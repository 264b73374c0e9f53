"""The command line as an operator runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from authority.credentials import api_key_entry, new_api_key, parse_roles
from authority.store import Store
from tests.conftest import TEST_EXPLANATION_WAIT, TEST_KEY_ENCRYPTION_KEY

AUTHORITY = str(Path(sys.executable).with_name("authority"))


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def _serve(
    database_url: str, cwd: Path, **env: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``authority serve`` in a process of its own, on a free port; yields it and its target."""
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, "serve", "--listen", "127.0.0.1:0", "--database-url", database_url,
        stderr=asyncio.subprocess.PIPE, cwd=cwd,
        env={**os.environ, "AUTHORITY_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY,
             "AUTHORITY_EXPLANATION_WAIT": f"{TEST_EXPLANATION_WAIT}s", **env},
    )
    try:
        assert process.stderr is not None
        target = None
        while target is None:
            line = (await asyncio.wait_for(process.stderr.readline(), timeout=30)).decode()
            assert line, "authority serve exited before listening"
            if match := re.search(r"listening on (\S+:\d+)", line):
                target = match.group(1)
        yield process, target
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
async def served(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``authority serve`` in a process of its own, on a free port; yields it and its target."""
    async with _serve(database_url, tmp_path) as running:
        yield running


async def test_demo_runs_the_seed_scenario_against_a_served_authority(
    served: tuple[asyncio.subprocess.Process, str],
) -> None:
    _, target = served

    code, out, _ = await _run("demo", env={"AUTHORITY_TARGET": target})  # as the admin commands read it

    assert code == 0, out
    assert "the single-device rule held" in out
    assert "BAD" not in out
    assert re.search(r"use the laptop's token again\s+INVALID_REASON_REVOKED", out)
    assert re.search(r"the laptop says why\s+signed out: signed in on the phone", out)
    assert re.search(r"sign in on the laptop with policy REJECT\s+FAILED_PRECONDITION", out)
    assert "eyJ" not in out  # no token is printed


async def test_demo_authenticates_with_an_api_key_when_callers_must(database_url: str, tmp_path: Path) -> None:
    key = new_api_key()
    entry = api_key_entry("demo", parse_roles("issuer+verifier"), key)
    async with _serve(database_url, tmp_path, AUTHORITY_API_KEYS=entry) as (_, target):
        refused = await _run("demo", "--target", target)
        admitted = await _run("demo", "--target", target, env={"AUTHORITY_API_KEY": key})

    assert refused[0] == 1 and "UNAUTHENTICATED" in refused[1]
    assert admitted[0] == 0 and "the single-device rule held" in admitted[1]
    assert key not in refused[1] + refused[2] + admitted[1] + admitted[2]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_serve_stops_gracefully_on_a_signal(
    served: tuple[asyncio.subprocess.Process, str], signum: signal.Signals
) -> None:
    process, _ = served
    assert process.stderr is not None

    process.send_signal(signum)
    code = await asyncio.wait_for(process.wait(), timeout=15)
    rest = (await process.stderr.read()).decode()

    assert code == 0
    assert "stopped" in rest
    assert "Traceback" not in rest


async def test_migrate_creates_the_schema_and_is_idempotent(database_url: str) -> None:
    first = await _run("migrate", "--database-url", database_url)
    second = await _run("migrate", "--database-url", database_url)

    assert first[0] == 0 and "migrated the schema" in first[1]
    assert second[0] == 0 and "up to date" in second[1]


async def test_migrate_renew_epoch_gives_the_log_a_new_epoch(database_url: str) -> None:
    await _run("migrate", "--database-url", database_url)
    store = Store.open(database_url)
    try:
        before = (await store.log_state()).epoch
        code, out, _ = await _run("migrate", "--renew-epoch", "--database-url", database_url)
        after = (await store.log_state()).epoch
    finally:
        await store.close()
    assert code == 0 and "epoch is now" in out
    assert after != before


@pytest.mark.parametrize(
    ("variable", "value", "option"),
    [
        ("AUTHORITY_ACCESS_TOKEN_TTL", "soon", "access_token_ttl"),
        ("AUTHORITY_MAX_SESSIONS_PER_SUBJECT", "-1", "max_sessions_per_subject"),
        ("AUTHORITY_DEFAULT_POLICY", "sometimes", "default_policy"),
        ("AUTHORITY_DATABASE_URL", "mysql://nope", "database_url"),
        ("AUTHORITY_LISTEN", "nowhere", "listen"),
    ],
)
async def test_an_invalid_setting_stops_serve_with_one_line_naming_it(variable: str, value: str, option: str) -> None:
    code, _, err = await _run("serve", env={variable: value})

    assert code == 2
    assert err.strip().splitlines() == [err.strip()]
    assert f": {option}:" in err


async def test_demo_refuses_a_target_that_is_not_host_port() -> None:
    code, _, err = await _run("demo", "--target", "127.0.0.1:103761")  # grpc would call port 38225

    assert code == 2
    assert err.strip() == "authority demo: --target: '127.0.0.1:103761' is not HOST:PORT"


async def test_demo_against_nothing_fails_with_a_clear_line() -> None:
    code, out, _ = await _run("demo", "--target", "127.0.0.1:1")

    assert code == 1
    assert 'no authority answering at 127.0.0.1:1 (is "authority serve" running?)' in out
    assert "Traceback" not in out
