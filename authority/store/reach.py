"""Which database a URL names, and why it cannot be reached, said so an operator can act.

Every command that opens the store names it (:func:`describe`), a command that only reads
refuses a SQLite file that is not there rather than create one (:func:`require_existing`),
and a failure to connect says its cause (:func:`why_unavailable`): a missing directory,
permission denied, connection refused, authentication failed, no such database. Neither
ever shows a password.
"""

from __future__ import annotations

import errno
import os
import socket
import sqlite3
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import make_url

from authority.config.database_urls import postgres_where
from authority.errors import NoDatabase


def sqlite_path(url: str) -> Path | None:
    """The absolute path of the SQLite file ``url`` names; None for PostgreSQL or memory."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    args, options = SQLiteDialect_aiosqlite().create_connect_args(parsed)
    name = str(args[0]) if args else ""
    if not name or name == ":memory:" or options.get("uri"):
        return None
    return Path(os.path.abspath(name))


def describe(url: str) -> str:
    """The database ``url`` names, in words: ``SQLite file /srv/authority.db`` or
    ``PostgreSQL database "authority" on db.internal:5432 as user authority`` (on
    ``a:5432, b:5432`` for a URL whose query names several hosts, on the default
    PostgreSQL socket or localhost for one that names none)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        return f"SQLite file {path}" if path is not None else f"SQLite database {parsed.database or ':memory:'}"
    where = postgres_where(url)
    user = f" as user {parsed.username}" if parsed.username else ""
    return f'PostgreSQL database "{parsed.database or parsed.username or "postgres"}" on {where}{user}'


def require_existing(url: str) -> None:
    """Raises :class:`NoDatabase` when ``url`` names a SQLite file that does not exist, so
    that a command that only reads never leaves an empty database behind."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise NoDatabase(f"no database at {path}")


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _sqlite_cause(path: Path, error: sqlite3.Error) -> str | None:
    text = str(error).lower()
    if "readonly" in text or "read-only" in text:
        return "permission denied (the file or its directory is read-only)"
    if "unable to open" not in text:
        return None
    if not path.parent.is_dir():
        return f"the directory {path.parent} does not exist"
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.R_OK | os.W_OK)):
        return "permission denied"
    if path.is_dir():
        return "it is a directory"
    return None


def why_unavailable(url: str, error: BaseException) -> str:
    """The cause of a failure to reach ``url``'s database, from the error and its chain."""
    path = sqlite_path(url)
    for cause in _chain(error):
        if isinstance(cause, asyncpg.InvalidPasswordError):
            return "authentication failed (wrong password)"
        if isinstance(cause, asyncpg.InvalidAuthorizationSpecificationError):
            return f"authentication failed ({cause.args[0] if cause.args else 'the role is not allowed'})"
        if isinstance(cause, asyncpg.InvalidCatalogNameError):
            return "the database does not exist"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is PostgreSQL running there?)"
        if isinstance(cause, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(cause, TimeoutError):
            return "no answer in time"
        if isinstance(cause, PermissionError):
            return "permission denied"
        if isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "the host is unreachable"
        if isinstance(cause, sqlite3.Error) and path is not None and (said := _sqlite_cause(path, cause)):
            return said
    deepest = _chain(error)[-1]
    # Driver messages name hosts, users and databases, never a password.
    first_line = (str(deepest).strip().splitlines() or [""])[0]
    return f"{type(deepest).__name__}: {first_line}" if first_line else type(deepest).__name__
