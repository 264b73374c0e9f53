"""Migrations: Alembic revisions, idempotent, safe to run from several replicas at once."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from authority.errors import SchemaError
from authority.store.migrate import migrate
from tests.conftest import StartServer

HEAD = "0011_key_set_version"


async def _revision(url: str) -> str:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return str((await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar_one())
    finally:
        await engine.dispose()


async def test_migrate_creates_the_schema_once_and_then_does_nothing(database_url: str) -> None:
    assert await migrate(database_url) == "empty"
    assert await migrate(database_url) is None
    assert await _revision(database_url) == HEAD


async def test_migrations_started_together_apply_once(database_url: str) -> None:
    results = await asyncio.gather(*(migrate(database_url) for _ in range(3)))

    assert results.count("empty") == 1
    assert results.count(None) == 2
    assert await _revision(database_url) == HEAD


async def test_serve_creates_the_schema_on_an_empty_database(start_server: StartServer, database_url: str) -> None:
    await start_server()

    assert await _revision(database_url) == HEAD


async def test_serve_refuses_a_schema_newer_than_it_knows(start_server: StartServer, database_url: str) -> None:
    await migrate(database_url)
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff'"))
    await engine.dispose()

    with pytest.raises(SchemaError, match="newer than this authority knows"):
        await start_server()


async def _default_isolation(database_url: str, level: str) -> None:
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        database = (await conn.execute(sa.text("SELECT current_database()"))).scalar_one()
        await conn.execute(sa.text(f"ALTER DATABASE \"{database}\" SET default_transaction_isolation = '{level}'"))
    await engine.dispose()


@pytest.mark.parametrize("store", ["postgres"])
async def test_the_authority_runs_at_read_committed_whatever_the_database_default(
    start_server: StartServer, database_url: str
) -> None:
    # The sign-in's functions need each statement to see what committed before it.
    await _default_isolation(database_url, "repeatable read")

    running = await start_server()
    async with running.server.authority.store.driver(writes=False) as driver:
        level = await driver.fetchval("SELECT current_setting('transaction_isolation')")

    assert level == "read committed"


@pytest.mark.parametrize("store", ["postgres"])
async def test_through_a_pooler_a_database_not_at_read_committed_is_refused(
    start_server: StartServer, database_url: str
) -> None:
    # A transaction pooler refuses the setting the authority's connections ask for.
    await _default_isolation(database_url, "repeatable read")

    with pytest.raises(SchemaError, match="REPEATABLE READ by default .* needs READ COMMITTED"):
        await start_server(database_transaction_pooling=True, listen_database_url=database_url)


async def test_an_older_schema_is_refused_until_migrated_and_keeps_its_keys(
    start_server: StartServer, database_url: str
) -> None:
    first = await start_server()
    kid = first.server.authority.codec.keyring.signing_key_at(time.time()).kid
    await first.server.stop(None)
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:  # back to how revision 0001 left the table
        await conn.run_sync(lambda sync: _downgrade_to_0001(sync))
    await engine.dispose()

    with pytest.raises(SchemaError, match="run `authority migrate` first"):
        await start_server()
    assert await migrate(database_url) == "0001"
    second = await start_server()

    assert second.server.authority.codec.keyring.signing_key_at(time.time()).kid == kid
    assert await _revision(database_url) == HEAD


def _downgrade_to_0001(connection: sa.Connection) -> None:
    from alembic import command

    from authority.store.migrate import _config

    command.downgrade(_config(connection), "0001")
