"""What a database URL's query may say, checked at start so that no driver fails on it later.

On PostgreSQL every query parameter becomes a keyword of ``asyncpg.connect``, as text: a
name asyncpg does not take, or one whose value must be a number or a Python object, ended
in a traceback at the first connection, and ``timeout`` or ``command_timeout`` would be
silently overridden by the authority's own. ``host=`` and ``port=`` in the query (several
hosts, for a failover) must be a list SQLAlchemy can read, and :func:`postgres_hosts`
says which hosts they are; :func:`postgres_where` says, in words, where the driver will
try (a URL with no host at all connects as libpq does: PGHOST, else a Unix socket). On SQLite the store needs the file's path (to refuse a missing
file, and for the maintenance lock beside it), which SQLite's URI filenames hide, and it
sets the driver's options itself: a SQLite URL takes no query.

Every refusal names the parameter, never its value: the URL may hold a password.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping

from authority.errors import ConfigError

# asyncpg.connect's keywords whose value text can be: these a URL may give.
POSTGRES_PARAMETERS = frozenset({
    "host", "port", "user", "password", "database", "passfile", "ssl", "target_session_attrs", "krbsrvname",
    "gsslib", "prepared_statement_cache_size",
})
# What the authority sets itself, in authority/store/postgres.py: a URL's would be overridden.
_OWN_PARAMETERS = {
    "timeout": "the authority connects with a timeout of its own (5 s)",
    "command_timeout": "the authority bounds its statements itself (10 s, and lock and idle timeouts)",
    "server_settings": "the authority sets the session's settings itself",
}
# asyncpg.connect's keywords that take a number, a flag or a Python object, which a URL's text is not.
_NOT_TEXT_PARAMETERS = frozenset({
    "dsn", "loop", "statement_cache_size", "max_cached_statement_lifetime", "max_cacheable_statement_size",
    "direct_tls", "connection_class", "record_class", "prepared_statement_name_func", "async_creator_fn",
})
# asyncpg's sslmode values (asyncpg.connect_utils.SSLMode).
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# A name shown in an error is an identifier; anything else might be a value put in the wrong place.
_SHOWN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# HOST or HOST:PORT, as SQLAlchemy splits a query host (an IPv6 address goes in the URL's host).
_HOST_PORT = re.compile(r"([A-Za-z0-9.-]*)(?::(\d*))?")
_FALSE = ("false", "no", "off", "n", "f", "0")
# Where asyncpg looks for a server's Unix socket when neither the URL nor PGHOST names a
# host (asyncpg.connect_utils), before it tries localhost.
SOCKET_DIRECTORIES = ("/run/postgresql", "/var/run/postgresql", "/tmp")


def check_postgres_query(option: str, url: str) -> None:
    """Raises :class:`ConfigError` naming ``option`` and the parameter for a query asyncpg
    or SQLAlchemy would fail on, or one the authority would override without saying so."""
    query = urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)
    seen: set[str] = set()
    for name, value in query:
        if name in _OWN_PARAMETERS:
            raise ConfigError(option, f"{name} is not taken from the URL: {_OWN_PARAMETERS[name]}")
        if name in _NOT_TEXT_PARAMETERS:
            raise ConfigError(option, f"{name} cannot be given in the URL: asyncpg takes it as a value, not text")
        if name not in POSTGRES_PARAMETERS:
            shown = f"{name} is not" if _SHOWN_NAME.fullmatch(name) else "has a query parameter that is not"
            raise ConfigError(option, f"{shown} a connection parameter asyncpg takes (a URL may give "
                              f"{', '.join(sorted(POSTGRES_PARAMETERS))})")
        if name in seen and name not in ("host", "port"):
            raise ConfigError(option, f"gives {name} more than once")
        seen.add(name)
        if name == "ssl" and value not in SSL_MODES:
            raise ConfigError(option, f"ssl must be one of {', '.join(SSL_MODES)}")
        if name == "gsslib" and value not in ("gssapi", "sspi"):
            raise ConfigError(option, "gsslib must be gssapi or sspi")
        if name == "prepared_statement_cache_size" and not value.isdigit():
            raise ConfigError(option, "prepared_statement_cache_size must be a whole number, 0 or more")
    try:
        postgres_hosts(url)
    except ValueError as problem:
        raise ConfigError(option, str(problem)) from None


def postgres_hosts(url: str) -> list[tuple[str, int]]:
    """The hosts and ports a PostgreSQL URL has the driver try, in order: the query's
    ``host=`` (with ``port=``, or as ``HOST:PORT``) when it gives one, else the URL's own.
    Raises ValueError saying why for a query host list SQLAlchemy could not read."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    given = [value for name, value in query if name == "host"]
    port_values = [value for name, value in query if name == "port"]
    ports_text = (port_values if len(port_values) > 1 else port_values[0].split(",")) if port_values else []
    default_host, default_port = parts.hostname or "localhost", parts.port or 5432
    if not given:
        if len(ports_text) > 1:
            raise ValueError("gives several ports in port= but no host= to go with them")
        return [(default_host, _port(ports_text[0]) if ports_text else default_port)]
    names = given if len(given) > 1 else given[0].split(",")
    if len(given) > 1 or (len(names) == 1 and not port_values and _HOST_PORT.fullmatch(names[0])):
        if port_values:
            raise ValueError("gives ports both as host=HOST:PORT and in port=: give them one way")
        matches = [_HOST_PORT.fullmatch(name) for name in names]
        if not all(matches):
            raise ValueError("has a host= entry that is not HOST or HOST:PORT (an IPv6 address goes in the URL's "
                             "host, in brackets)")
        names = [match[1] for match in matches if match]
        ports_text = [match[2] or "" for match in matches if match]
    elif any(":" in name for name in names):
        # SQLAlchemy would take "a:5432" for a host name here, and the connection would fail.
        raise ValueError("has a port inside a host= list, or beside port=: give host=a:5432&host=b:5432, or "
                         "host=a,b&port=5432,5432 (an IPv6 address goes in the URL's host, in brackets)")
    if ports_text and len(ports_text) != len(names) and (len(names) > 1 or len(ports_text) > 1):
        raise ValueError(
            f"names {len(names)} hosts in host= and {len(ports_text)} ports in port=: give one port per host"
        )
    if len(names) > 1 and not all(names):
        raise ValueError("has an empty host in its host= list")
    ports = [_port(text) if text else None for text in ports_text] or [None] * len(names)
    if len(names) > 1 and None in ports:
        raise ValueError("needs a port for every host when host= names several (host=a:5432&host=b:5432, or "
                         "host=a,b&port=5432,5432)")
    return [(name or default_host, port or default_port) for name, port in zip(names, ports, strict=True)]


def postgres_where(url: str, environ: Mapping[str, str] = os.environ) -> str:
    """Where the driver will try to connect, in words: ``db.internal:5432``, ``a:5432,
    b:6432`` for a query's host list; for a URL that names no host, asyncpg's own choice:
    PGHOST's value when it is set, else the default PostgreSQL socket, then localhost. Never
    a password: only hosts and ports are read."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    try:
        hosts = postgres_hosts(url)
    except ValueError:  # refused at start (check_postgres_query)
        hosts = [(parts.hostname or "localhost", 5432)]
    if parts.hostname or any(value for name, value in query if name == "host"):
        return ", ".join(f"{host}:{port}" for host, port in hosts)
    explicit = parts.port or any(value for name, value in query if name == "port")
    port = hosts[0][1] if explicit else environ.get("PGPORT") or 5432
    if environ.get("PGHOST"):
        return f"{environ['PGHOST']} (PGHOST), port {port}"
    return f"the default PostgreSQL socket ({', '.join(SOCKET_DIRECTORIES)}) or localhost:{port}"


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError("has a port in its query that is not a number from 1 to 65535")
    return int(text)


def check_sqlite_query(option: str, url: str) -> None:
    """Raises :class:`ConfigError` naming ``option`` for any query on a SQLite URL: SQLite's
    URI filenames hide the file's path from the store, and the options pysqlite would take
    (timeout, isolation_level, ...) the store sets itself, so they would be overridden
    without a word."""
    query = urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True)
    if any(name == "uri" and value.lower() not in _FALSE for name, value in query):
        raise ConfigError(option, "uri (SQLite's URI filenames) is not supported: the store needs the file's "
                          "path, to refuse a missing file and to lock beside it; give sqlite+aiosqlite:///PATH")
    for name, _ in query:
        if name == "uri":
            continue
        shown = name if _SHOWN_NAME.fullmatch(name) else "a parameter"
        raise ConfigError(option, f"{shown} is not taken in a SQLite URL: the store sets SQLite's options itself "
                          "(a 10 s wait for a lock, WAL, full sync); give sqlite+aiosqlite:///PATH")
