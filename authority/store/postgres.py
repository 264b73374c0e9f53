"""The PostgreSQL engine: always on the primary, directly or through a transaction pooler.

Every connection insists on a server that takes writes (``target_session_attrs`` is
``read-write`` unless the URL asks for ``primary``): a URL with several hosts finds the
primary, and a replica pointed at a standby by mistake, or left with no primary during a
failover, gets "no host matches" (unavailable) instead of reading a log that has stopped
moving and believing it current.

With ``transaction_pooling`` (PgBouncer ``pool_mode = transaction``) a server connection
is ours for one transaction only, so what asyncpg normally does per connection breaks:
startup parameters are refused, and prepared statements outlive the transaction they
were made in (PgBouncer 1.18 does not track them). So the statement caches are off,
each statement gets a name of its own, and the timeouts are set in every transaction.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# The server settings every session needs, and why. A replica cut off mid-transaction
# must not hold its locks (a subject's, the revocation log's) until PostgreSQL notices
# the dead connection, hours later: the server ends a transaction left idle for 3 s
# (ours idle for microseconds between statements), and no caller waits on a lock for
# more than 5 s.
TRANSACTION_SETTINGS = {"idle_in_transaction_session_timeout": "3s", "lock_timeout": "5s"}
# Keepalives find a silent peer in about a minute, which frees the session-level
# maintenance lock of a replica that vanished. (Behind a pooler, the pooler's own.) The
# sign-ins' functions need READ COMMITTED whatever the database's default (behind a
# pooler, which refuses these settings, the start checks it: authority/store/migrate.py).
_SESSION_SETTINGS = {
    "tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3",
    "default_transaction_isolation": "read committed",
}
_SET_PER_TRANSACTION = "SELECT " + ", ".join(
    f"set_config('{name}', '{value}', true)" for name, value in TRANSACTION_SETTINGS.items()
)


def session_attrs(url: str) -> str | None:
    """The ``target_session_attrs`` a URL asks for, or None."""
    value = make_url(url).query.get("target_session_attrs")
    return value if isinstance(value, str) or value is None else value[-1]


def create_postgres_engine(url: str, *, connections: int | None = None, transaction_pooling: bool = False) -> AsyncEngine:
    """An engine whose every connection is to the primary (see the module docstring);
    ``connections`` fixes the size of the pool."""
    connect_args: dict[str, Any] = {"timeout": 5, "command_timeout": 10}
    if session_attrs(url) is None:
        connect_args["target_session_attrs"] = "read-write"
    if transaction_pooling:
        connect_args.update(
            statement_cache_size=0,
            prepared_statement_cache_size=0,
            # Two clients' "stmt_1" must never meet on one server connection.
            prepared_statement_name_func=lambda: f"__authority_{uuid.uuid4().hex}__",
        )
    else:
        connect_args["server_settings"] = {**TRANSACTION_SETTINGS, **_SESSION_SETTINGS}
    engine = create_async_engine(
        url,
        # Up to 20 connections, each opened when first needed and then kept: an overflow
        # connection would be closed as soon as it is returned and opened again for the
        # next burst (a new server process each time), which under a steady load of more
        # than the pool size costs more than the statements it runs.
        pool_size=connections or 20,
        max_overflow=0,
        pool_timeout=5,
        # No ping per checkout (on asyncpg three round trips: BEGIN, a query, ROLLBACK):
        # _refuse_closed finds a lost connection without one.
        pool_pre_ping=False,
        # Parameters hold subjects and claims; keep them out of error messages and logs.
        hide_parameters=True,
        connect_args=connect_args,
    )
    event.listen(engine.sync_engine, "checkout", _refuse_closed)
    if transaction_pooling:
        event.listen(engine.sync_engine, "begin", _set_per_transaction)
    return engine


def _refuse_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    # asyncpg marks a connection closed as soon as its socket is: the server ending it
    # (a restart, a failover, an administrator) or the network dropping it. The pool then
    # opens a fresh connection instead of handing out the dead one, as a ping would, but
    # in no round trip. A query on a connection lost since is UNAVAILABLE, as it was with
    # the ping: no check before a query can see the future.
    if dbapi_connection.driver_connection.is_closed():
        raise exc.DisconnectionError("the pooled connection was closed")


def _set_per_transaction(connection: Any) -> None:
    # Local to the transaction: the server connection goes back to the pooler clean. A
    # statement on its own (AUTOCOMMIT) has no transaction to set them in: the reads of
    # one statement wait on no lock, and authority_sign_in sets its lock_timeout itself.
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return
    connection.exec_driver_sql(_SET_PER_TRANSACTION)


# One round trip that says which log this is and where it lives: the epoch row, the
# timeline (the first 8 hex digits of the current WAL file; a standby has none), and
# the server's address as the server itself sees it (through a pooler too).
LOG_STATE_QUERY = """
SELECT (SELECT epoch FROM log_epoch WHERE id = 1) AS epoch,
       pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END
           AS timeline,
       coalesce(host(inet_server_addr()), 'local') || ':' || coalesce(inet_server_port(), 0) AS host
"""
