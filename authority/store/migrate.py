"""Bring the database schema to the revision this version of the authority runs on.

Migrations are Alembic revisions under ``migrations/versions``. On PostgreSQL the check
and the upgrade run under an advisory lock, so replicas that start together migrate
once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection

from authority.errors import SchemaError
from authority.store.store import MIGRATIONS_LOCK, Store

MIGRATIONS = Path(__file__).with_name("migrations")


def _config(connection: Any = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def prepare_schema(store: Store, *, upgrade: bool, create: bool = True) -> str | None:
    """Checks the schema, migrating an empty database (or any older one when ``upgrade``).

    Returns the revision it upgraded from when it migrated, else None. Raises
    :class:`SchemaError` for a schema newer than this version knows, an older one when
    ``upgrade`` is False, and none at all when ``create`` is False (a command that only
    reads never creates the schema).
    """
    async with store.transaction() as tx:
        if store.is_postgres:
            await _check_isolation(tx.conn)
            await tx.conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATIONS_LOCK)))
        return await tx.conn.run_sync(_prepare, upgrade, create)


async def _check_isolation(conn: AsyncConnection) -> None:
    """Refuses to run where the authority's transactions would not run at READ COMMITTED.

    The sign-in's functions (revisions 0007 and 0008) rely on each of their statements
    seeing what committed before it, after the subject's lock is granted: at REPEATABLE
    READ or SERIALIZABLE every statement shares the snapshot taken before the lock, and
    two concurrent sign-ins could each keep a session live. The authority's own
    connections ask for READ COMMITTED (authority/store/postgres.py); through a
    transaction pooler they cannot, and the database's default decides."""
    level = await conn.scalar(sa.text("SELECT current_setting('transaction_isolation')"))
    if level != "read committed":
        raise SchemaError(
            f"the database's transactions run at {str(level).upper()} by default (default_transaction_isolation); "
            "the authority needs READ COMMITTED: reset it for this database and role, or in the pooler"
        )


def _prepare(connection: sa.Connection, upgrade: bool, create: bool) -> str | None:
    current = MigrationContext.configure(connection).get_current_revision()
    script = ScriptDirectory.from_config(_config())
    newest = script.get_current_head()
    if current == newest:
        return None
    if current is None and not create:
        raise SchemaError("the database has no schema yet: `authority serve` or `authority migrate` creates it")
    if current is not None and current not in {rev.revision for rev in script.walk_revisions()}:
        raise SchemaError(
            f"the database schema is at revision {current}, newer than this authority knows "
            f"(its newest is {newest}); run a newer authority"
        )
    if current is not None and not upgrade:
        raise SchemaError(
            f"the database schema is at revision {current}, older than this authority's {newest}; "
            "run `authority migrate` first"
        )
    command.upgrade(_config(connection), "head")
    return current or "empty"


async def renew_epoch(url: str) -> str:
    """``authority migrate --renew-epoch``: a new random epoch for the revocation log."""
    store = Store.open(url)
    try:
        return await store.renew_epoch()
    finally:
        await store.close()


async def migrate(url: str) -> str | None:
    """``authority migrate``: upgrades the schema to the newest revision; safe to repeat."""
    store = Store.open(url)
    try:
        return await prepare_schema(store, upgrade=True)
    finally:
        await store.close()
