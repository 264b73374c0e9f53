"""Which database errors mean "not available now", judged by meaning, not by class name.

A caller retries UNAVAILABLE and reads INTERNAL as "this server is broken", so an error
that only says the database cannot serve right now must never pass for a bug. Drivers
report the same state under many classes: asyncpg raises ``CannotConnectNowError`` for
a server starting up, ``InternalClientError`` when no host of a multi-host URL is a
primary, and SQLAlchemy wraps each in a DBAPI class of its own. So the judgement reads
what the error says:

- its SQLSTATE, when the server sent one: a connection failure (class 08), a connection
  refused for its credentials or database (28, 3D), too few
  resources such as too many connections (53), the server shutting down, crashed or not
  accepting connections yet (57P01 to 57P03), a read-only transaction refusing a write
  (25006: a primary set read-only, or a standby), and work the server gave up on
  (lock_timeout, a cancelled statement, an idle transaction ended);
- the client side of a connection that failed or was lost: a socket error, a timeout,
  a host that does not match ``target_session_attrs`` (a standby, or no primary yet),
  a connection closed under a query, and a connection whose protocol state asyncpg
  cannot leave (``_protocol_broken``). A server ending an idle connection sends a
  FATAL error before it closes it; asyncpg, which expected nothing, is left in a failed
  state, and until the close arrives the connection looks open and refuses its next
  statement ("another operation is in progress", asyncpg issue 1069). asyncpg's other
  ``InternalClientError`` cases (a value no codec can encode, say) stay faults.

:func:`means_unavailable` follows the whole chain of causes, so a wrapped error is
judged by what it wraps, and :func:`translated` turns such an error into the domain's
:class:`~authority.errors.StoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import exc

from authority.errors import StoreUnavailable

# Errors that mean "the database is not there", as opposed to a bug in a query; the
# rest are judged by what they say (means_unavailable).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.TimeoutError,
    OSError,
)
# What asyncpg raises itself where it is called directly (LISTEN, the start-up load).
RAW_DRIVER_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError)
RAW_UNAVAILABLE = UNAVAILABLE + RAW_DRIVER_ERRORS
# Everything a statement sent straight to asyncpg raises that comes from the database or
# the driver, as opposed to the code around it.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (*RAW_UNAVAILABLE, asyncpg.InternalClientError)
UNAVAILABLE_OR_FAILED: tuple[type[BaseException], ...] = (*UNAVAILABLE, exc.DBAPIError)

# SQLSTATE classes (first two characters) that mean the server cannot serve right now.
# 28 (authentication failed) and 3D (no such database) refuse the connection itself: a
# start against the wrong database says so (authority.store.reach), a call answers
# UNAVAILABLE, never INTERNAL.
_UNAVAILABLE_CLASSES = frozenset({"08", "28", "3D", "53"})
_UNAVAILABLE_STATES = frozenset(
    {
        "57P01",  # admin_shutdown: the server is shutting down (or a standby being promoted)
        "57P02",  # crash_shutdown: another backend crashed, every session is ended
        "57P03",  # cannot_connect_now: starting up, shutting down, or in recovery
        "25006",  # read_only_sql_transaction: a write on a read-only server
        "55P03",  # lock_not_available: lock_timeout, nothing committed
        "57014",  # query_canceled: statement cancelled, nothing committed
        "25P03",  # idle_in_transaction_session_timeout
    }
)
# Client-side failures of the connection itself (asyncpg's own classes, not server errors).
_CLIENT_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.TargetServerAttributeNotMatched,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    exc.TimeoutError,  # no pooled connection free within pool_timeout
)


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if isinstance(current, exc.DBAPIError) and current.orig is not None:
            current = current.orig
        else:
            current = current.__cause__ or current.__context__


# How asyncpg's protocol says that it cannot leave the state a connection is in.
_BROKEN_PROTOCOL = ("cannot switch to state", "cannot process message")


def _protocol_broken(error: BaseException) -> bool:
    """Whether ``error`` is asyncpg refusing a statement because its protocol is stuck in
    another state on that connection: the connection is lost for good, whatever its
    socket says. Judged by the words of asyncpg's own messages (it has no class for it)."""
    return type(error) is asyncpg.InternalClientError and str(error).startswith(_BROKEN_PROTOCOL)


def means_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot serve now (retry later), rather than a fault."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    for cause in _causes(error):
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str) and (state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES):
            return True
        if isinstance(cause, _CLIENT_UNAVAILABLE) and not isinstance(cause, asyncpg.ClientConfigurationError):
            return True
        if _protocol_broken(cause):
            return True
    return False


# SQLSTATEs of a connection ended by the server: class 08 and these.
_ENDED_STATES = frozenset({"57P01", "57P02", "57P03"})
# A timeout is a statement given up, whatever became of its connection: not one of these.
_CONNECTION_FAILED: tuple[type[BaseException], ...] = (
    OSError, asyncpg.ConnectionDoesNotExistError, asyncpg.TargetServerAttributeNotMatched,
)


def connection_lost(error: BaseException) -> bool:
    """Whether ``error`` says the connection failed or could not be made, as SQLAlchemy's
    ``is_disconnect`` says of the errors it sees (not a statement given up, nor a fault of
    the code, such as a wrong number of arguments, that asyncpg also reports as an
    ``InterfaceError``)."""
    for cause in _causes(error):
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str) and (state[:2] == "08" or state in _ENDED_STATES):
            return True
        if isinstance(cause, _CONNECTION_FAILED) and not isinstance(cause, TimeoutError):
            return True
        if _protocol_broken(cause):
            return True
    return False


def translated(error: BaseException) -> StoreUnavailable | None:
    """The domain error for a driver error that means "not available now", else None."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return StoreUnavailable("the database connection was lost")
    if isinstance(error, UNAVAILABLE) or means_unavailable(error):
        return StoreUnavailable("the database is unavailable; try again")
    return None
