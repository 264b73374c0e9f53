"""Signing-key rotation: published ahead, picked up by running servers without a restart,
old keys verifying until their last token expired, then deleted."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import jwt
import pytest
from authority_client.v1 import authority_pb2 as pb

from authority.config import Algorithm
from authority.errors import InvalidArgument
from authority.keys import KeyRecord, key_statuses, retire_key, retired_keys, rotate_key
from tests.conftest import TEST_KEY_ENCRYPTION_KEY, Clock, Running, StartServer
from tests.support.calls import new_subject, reason, sign_in

AUTHORITY = str(Path(sys.executable).with_name("authority"))


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def _published(running: Running) -> set[str]:
    answer = await running.stub.GetSigningKeys(pb.GetSigningKeysRequest())
    return {key["kid"] for key in json.loads(answer.jwks_json)["keys"]}


async def _until(condition: object, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_a_rotated_key_is_published_at_once_and_signs_only_once_active(start_server: StartServer) -> None:
    running = await start_server(revocation_poll_interval=0.2)
    before = await sign_in(running.stub, new_subject(), "laptop")
    settings = running.server.authority.settings

    # Published 5 s ahead: on SQLite, which has no notifications, the keys are re-read
    # every fifth poll (about 1 s), so the early sign-in comes well before activation.
    key = await rotate_key(
        running.server.authority.store, settings.signing_algorithm, time.time(), 5, settings.key_encryption_key_bytes()
    )
    await _until(lambda: _has(running, key.kid))
    published_early = await sign_in(running.stub, new_subject(), "laptop")
    await asyncio.sleep(max(0.0, key.activates_at - time.time()) + 0.05)
    after = await sign_in(running.stub, new_subject(), "laptop")

    assert _kid(published_early.access_token) == _kid(before.access_token) != key.kid
    assert _kid(after.access_token) == key.kid
    for token in (before, published_early, after):
        assert await reason(running.stub, token.access_token) == "VALID"


async def _has(running: Running, kid: str) -> bool:
    return kid in await _published(running)


async def test_every_running_server_picks_up_a_rotation_without_a_restart(start_server: StartServer) -> None:
    servers = [await start_server(revocation_poll_interval=0.2) for _ in range(2)]
    settings = servers[0].server.authority.settings

    key = await rotate_key(
        servers[0].server.authority.store, settings.signing_algorithm, time.time(), 0, settings.key_encryption_key_bytes()
    )
    for running in servers:
        await _until(lambda: _has(running, key.kid))
    signed = await sign_in(servers[1].stub, new_subject(), "laptop")

    assert _kid(signed.access_token) == key.kid
    assert await reason(servers[0].stub, signed.access_token) == "VALID"


async def test_a_replaced_key_verifies_until_its_tokens_expired_then_the_purge_deletes_it(
    start_server: StartServer,
) -> None:
    clock = Clock()
    running = await start_server(clock=clock, revocation_poll_interval=0.2)
    old = await sign_in(running.stub, new_subject(), "laptop")
    authority = running.server.authority
    old_kid = _kid(old.access_token)
    clock.advance(1)  # the test clock stands still otherwise: the new key is a second younger
    new_key = await rotate_key(
        authority.store, authority.settings.signing_algorithm, clock(), 0, authority.settings.key_encryption_key_bytes()
    )
    await _until(lambda: _has(running, new_key.kid))

    clock.advance(authority.settings.max_access_token_ttl - 60)
    await authority.purge()
    kept = await _published(running)
    clock.advance(120 + authority.settings.leeway)
    await authority.purge()
    await _until(lambda: _lacks(running, old_kid))

    assert old_kid in kept
    assert await reason(running.stub, old.access_token) in ("EXPIRED", "UNKNOWN_KEY")


async def _lacks(running: Running, kid: str) -> bool:
    return kid not in await _published(running)


def test_key_states_follow_a_keys_life() -> None:
    now = 10_000.0
    records = [
        KeyRecord("old", "EdDSA", b"", 0, 0),
        KeyRecord("current", "EdDSA", b"", 9_000, 9_000),
        KeyRecord("next", "EdDSA", b"", 9_990, 10_060),
        KeyRecord("es", "ES256", b"", 5, 5),
    ]

    states = {s.kid: (s.state, s.deletable_after) for s in key_statuses(records, Algorithm.EDDSA, now, 3630)}
    retired = [r.kid for r in retired_keys(records, now, 3630)]
    retired_later = [r.kid for r in retired_keys(records, 9_000 + 3631, 3630)]

    assert states == {
        "old": ("verifying", 9_000 + 3630),
        "current": ("signing", 10_060 + 3630),
        "next": ("published", None),
        "es": ("idle", None),
    }
    assert retired == []
    assert retired_later == ["old"]


async def test_keys_rotate_and_list_from_the_command_line(database_url: str, start_server: StartServer) -> None:
    running = await start_server(revocation_poll_interval=0.2)
    env = {**os.environ, "AUTHORITY_DATABASE_URL": database_url, "AUTHORITY_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY}

    rotated = await _run(env, "keys", "rotate", "--publish-ahead", "10m", "--json")
    listed = await _run(env, "keys", "list", "--json")
    table = await _run(env, "keys", "list")
    await _until(lambda: _has(running, json.loads(rotated)["kid"]))

    new_kid = json.loads(rotated)["kid"]
    states = {entry["kid"]: entry["state"] for entry in json.loads(listed)}
    assert states[new_kid] == "published"
    assert sorted(states.values()) == ["published", "signing"]
    assert new_kid in table and "published" in table


async def test_a_retired_key_stops_validating_its_tokens_at_once(start_server: StartServer) -> None:
    running = await start_server(revocation_poll_interval=0.2)
    authority = running.server.authority
    old = await sign_in(running.stub, new_subject(), "laptop")
    old_kid = _kid(old.access_token)

    with pytest.raises(InvalidArgument, match="only active key"):
        await retire_key(authority.store, old_kid, time.time())
    await rotate_key(authority.store, authority.settings.signing_algorithm, time.time(), 0,
                     authority.settings.key_encryption_key_bytes())
    await retire_key(authority.store, old_kid, time.time())
    await _until(lambda: _lacks(running, old_kid))
    new = await sign_in(running.stub, new_subject(), "laptop")

    assert await reason(running.stub, old.access_token) == "UNKNOWN_KEY"
    assert await reason(running.stub, new.access_token) == "VALID"
    with pytest.raises(InvalidArgument, match="names no stored"):
        await retire_key(authority.store, old_kid, time.time())


async def _run(env: dict[str, str], *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    return out.decode()
