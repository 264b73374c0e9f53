"""The signing keys' set version (migration 0011): raised by the database on every change to
the stored keys, whoever makes it, and published with the set, by GetSigningKeys and in the
stream's SIGNING_KEYS events, so that consumers can tell a newer set from an older one."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from authority_client.v1 import authority_pb2 as pb

from authority.keys import generate_key, retire_key, rotate_key, stored_private_key
from authority.store.schema import signing_keys
from tests.conftest import Running, StartServer

WITHIN = 10.0


async def _answer(running: Running) -> pb.GetSigningKeysResponse:
    answer: pb.GetSigningKeysResponse = await running.stub.GetSigningKeys(pb.GetSigningKeysRequest(), timeout=5)
    return answer


def _kids(jwks_json: str) -> set[str]:
    return {key["kid"] for key in json.loads(jwks_json)["keys"]}


async def _until(condition: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + WITHIN
    while not await condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def _rotate(running: Running) -> str:
    authority = running.server.authority
    key = await rotate_key(
        authority.store, authority.settings.signing_algorithm, time.time(), 0,
        authority.settings.key_encryption_key_bytes(),
    )
    return key.kid


async def test_every_change_to_the_keys_raises_the_published_version(start_server: StartServer) -> None:
    running = await start_server(revocation_poll_interval=0.2)
    first = await _answer(running)
    old_kid = next(iter(_kids(first.jwks_json)))

    new_kid = await _rotate(running)
    await _until(lambda: _published(running, new_kid))
    rotated = await _answer(running)
    await retire_key(running.server.authority.store, old_kid, time.time())
    await _until(lambda: _withdrawn(running, old_kid))
    retired = await _answer(running)

    assert first.key_set_version >= 1
    assert first.key_set_version < rotated.key_set_version < retired.key_set_version
    assert _kids(rotated.jwks_json) == {old_kid, new_kid}
    assert _kids(retired.jwks_json) == {new_kid}


async def _published(running: Running, kid: str) -> bool:
    return kid in _kids((await _answer(running)).jwks_json)


async def _withdrawn(running: Running, kid: str) -> bool:
    return kid not in _kids((await _answer(running)).jwks_json)


async def test_a_write_outside_the_authority_raises_the_version_too(start_server: StartServer) -> None:
    """An operator's SQL, or a replica of a revision that knows no version: the triggers count it."""
    running = await start_server(revocation_poll_interval=0.2)
    authority = running.server.authority
    before = await _answer(running)
    key = generate_key(authority.settings.signing_algorithm, time.time())
    private = stored_private_key(key, authority.settings.key_encryption_key_bytes())

    async with authority.store.transaction() as tx:
        await tx.conn.execute(sa.insert(signing_keys).values(
            kid=key.kid, algorithm=key.algorithm.value, private_key=private,
            created_at=key.created_at, activates_at=key.activates_at + 3600,
        ))
    # No notification was sent: the periodic reread picks the change up.
    await _until(lambda: _published(running, key.kid))
    inserted = await _answer(running)
    async with authority.store.transaction() as tx:
        await tx.conn.execute(sa.update(signing_keys).where(signing_keys.c.kid == key.kid).values(
            activates_at=key.activates_at + 7200,
        ))
    updated_version = (await authority.store.versioned_keys())[0]
    async with authority.store.transaction() as tx:
        await tx.conn.execute(sa.delete(signing_keys).where(signing_keys.c.kid == key.kid))
    await _until(lambda: _withdrawn(running, key.kid))
    deleted = await _answer(running)

    assert before.key_set_version < inserted.key_set_version < updated_version < deleted.key_set_version


async def test_the_stream_announces_the_set_with_its_version(start_server: StartServer) -> None:
    running = await start_server(revocation_poll_interval=0.2)
    stream = running.stub.WatchRevocations(pb.WatchRevocationsRequest())
    try:
        announced = await _next_keys(stream)
        assert (announced.jwks_json, announced.key_set_version) == _pair(await _answer(running))

        new_kid = await _rotate(running)
        changed = await _next_keys(stream)
        assert new_kid in _kids(changed.jwks_json)
        assert changed.key_set_version > announced.key_set_version
        assert (changed.jwks_json, changed.key_set_version) == _pair(await _answer(running))
    finally:
        stream.cancel()


def _pair(answer: pb.GetSigningKeysResponse) -> tuple[str, int]:
    return answer.jwks_json, answer.key_set_version


async def _next_keys(stream: object) -> pb.RevocationEvent:
    deadline = time.monotonic() + WITHIN
    while True:
        event: pb.RevocationEvent = await asyncio.wait_for(
            stream.read(), max(0.1, deadline - time.monotonic())  # type: ignore[attr-defined]
        )
        if event.kind == pb.REVOCATION_EVENT_KIND_SIGNING_KEYS:
            return event


async def test_concurrent_changes_each_raise_the_version(start_server: StartServer) -> None:
    running = await start_server(revocation_poll_interval=0.2)
    store = running.server.authority.store
    before = (await store.versioned_keys())[0]

    kids = await asyncio.gather(*(_rotate(running) for _ in range(4)))
    version, records = await store.versioned_keys()

    assert set(kids) <= {record.kid for record in records}
    assert version == before + 4

