"""Secrets stay secret: no token, refresh token, API key or private key in any log line,
and the database holds refresh tokens only as hashes.

A full scenario runs with every logger at DEBUG (the authority's, grpc's, SQLAlchemy's
and the drivers'), once in-process and once as ``authority serve`` with its own log
configuration; then every line is searched for every secret the test saw.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc
from cryptography.hazmat.primitives import serialization
from sqlalchemy.ext.asyncio import create_async_engine

from authority import credentials, keys
from authority.api.server import create_server
from authority.config import Settings
from authority.credentials import Role
from authority.errors import ConfigError
from authority.store import KeyRecord, Store
from authority.store.schema import metadata
from tests.conftest import StartServer
from tests.support.calls import Stub, new_subject

AUTHORITY = str(Path(sys.executable).with_name("authority"))
LOGGERS = ("", "authority", "grpc", "sqlalchemy", "sqlalchemy.engine", "sqlalchemy.pool", "asyncio", "aiosqlite",
           "asyncpg", "alembic")


@dataclasses.dataclass
class Seen:
    """Every secret the scenario handled, and every error detail it was answered with."""

    secrets: set[str] = dataclasses.field(default_factory=set)
    refresh_tokens: list[str] = dataclasses.field(default_factory=list)
    details: list[str] = dataclasses.field(default_factory=list)

    def token(self, token: str) -> str:
        self.secrets.add(token)
        signature = token.rsplit(".", 1)[-1]
        if len(signature) >= 16:
            self.secrets.add(signature)  # the signature alone, too
        return token

    def pair(self, answer: pb.IssueTokenResponse) -> pb.IssueTokenResponse:
        self.token(answer.access_token)
        self.secrets.add(answer.refresh_token)
        self.refresh_tokens.append(answer.refresh_token)
        return answer

    def private_key(self, pem: bytes) -> None:
        """The PEM, its base64 body, and the raw key in the usual encodings."""
        self.secrets.add(pem.decode())
        body = "".join(line for line in pem.decode().splitlines() if not line.startswith("-----"))
        self.secrets.add(body)
        self.secrets.update(line for line in pem.decode().splitlines() if len(line) >= 40)
        key = serialization.load_pem_private_key(pem, password=None)
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
        self.secrets.update({raw.hex(), base64.b64encode(raw).decode().rstrip("="),
                             base64.urlsafe_b64encode(raw).decode().rstrip("="), repr(raw)[2:-1]})

    async def refused(self, call: object) -> grpc.StatusCode:
        try:
            await call  # type: ignore[misc]
        except grpc.aio.AioRpcError as error:
            self.details.append(error.details() or "")
            return error.code()
        raise AssertionError("the call was expected to fail")


async def scenario(stub: Stub, issuer: str, verifier: str, seen: Seen) -> None:
    """Sign-in, validation, refresh, reuse detection, replacement, logout and bad input."""
    as_issuer, as_verifier = ((credentials.API_KEY_HEADER, issuer),), ((credentials.API_KEY_HEADER, verifier),)
    seen.secrets.update({issuer, verifier})
    subject = new_subject()

    laptop = seen.pair(await stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id="laptop"),
                                             metadata=as_issuer))
    assert (await stub.ValidateToken(pb.ValidateTokenRequest(token=laptop.access_token), metadata=as_verifier)).valid
    traded = seen.pair(await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=laptop.refresh_token),
                                               metadata=as_issuer))
    refreshed = seen.pair(await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=traded.refresh_token),
                                                  metadata=as_issuer))
    # Reuse of a refresh token whose new pair was used since: theft (even within the
    # reuse grace period), the session is revoked.
    reused = stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=laptop.refresh_token), metadata=as_issuer)
    assert await seen.refused(reused) is grpc.StatusCode.UNAUTHENTICATED
    revoked = await stub.ValidateToken(pb.ValidateTokenRequest(token=refreshed.access_token), metadata=as_verifier)
    assert not revoked.valid

    phone = seen.pair(await stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id="phone"),
                                            metadata=as_issuer))
    tablet = seen.pair(await stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id="tablet"),
                                             metadata=as_issuer))
    assert tablet.replaced_session_ids == [phone.session_id]
    await stub.RevokeToken(pb.RevokeTokenRequest(token=tablet.access_token), metadata=as_verifier)
    # Devices: a preview, a guarded sign-in that aborts, "sign out my other devices" by token.
    await stub.PreviewSignIn(pb.IssueTokenRequest(subject=subject, device_id="watch", device_name="a watch"),
                             metadata=as_issuer)
    watch = seen.pair(await stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id="watch"),
                                            metadata=as_issuer))
    guarded = stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id="car",
                                                   expected_replacements=pb.SessionIds()), metadata=as_issuer)
    assert await seen.refused(guarded) is grpc.StatusCode.ABORTED
    await stub.RevokeToken(pb.RevokeTokenRequest(other_sessions=pb.SessionRef(token=watch.access_token)),
                           metadata=as_issuer)
    foreign = stub.RevokeToken(pb.RevokeTokenRequest(other_sessions=pb.SessionRef(
        token=seen.token(watch.access_token[:-4] + "AAAA"))), metadata=as_issuer)
    assert await seen.refused(foreign) is grpc.StatusCode.INVALID_ARGUMENT

    # Bad tokens: tampered, truncated, made up; a refresh token where an access token goes.
    header, payload, signature = tablet.access_token.split(".")
    tampered = seen.token(f"{header}.{payload}.{signature[:-4]}AAAA")
    for bad in (tampered, seen.token(f"{header}.{payload}"), seen.token("eyJ" + secrets.token_urlsafe(40)),
                phone.refresh_token, seen.token(f"{header}.{payload}.")):
        answer = await stub.ValidateToken(pb.ValidateTokenRequest(token=bad), metadata=as_verifier)
        assert not answer.valid
    forged_refresh = "rt_" + secrets.token_urlsafe(32)
    seen.secrets.add(forged_refresh)
    assert await seen.refused(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=forged_refresh),
                                                metadata=as_issuer)) is grpc.StatusCode.UNAUTHENTICATED
    assert await seen.refused(stub.RevokeToken(pb.RevokeTokenRequest(token=tampered),
                                               metadata=as_issuer)) is grpc.StatusCode.INVALID_ARGUMENT

    # Callers with a wrong key, a key of the wrong role, and no key at all.
    guessed = credentials.new_api_key()
    seen.secrets.add(guessed)
    wrong_key = stub.ListSessions(pb.ListSessionsRequest(subject=subject),
                                  metadata=((credentials.API_KEY_HEADER, guessed),))
    assert await seen.refused(wrong_key) is grpc.StatusCode.UNAUTHENTICATED
    wrong_role = stub.ListSessions(pb.ListSessionsRequest(subject=subject), metadata=as_verifier)
    assert await seen.refused(wrong_role) is grpc.StatusCode.PERMISSION_DENIED
    assert await seen.refused(stub.GetSigningKeys(pb.GetSigningKeysRequest())) is grpc.StatusCode.UNAUTHENTICATED


async def ext_authz_checks(channel: grpc.aio.Channel, issuer: str, verifier: str, seen: Seen) -> None:
    """Envoy's external authorization with a good, a signed-out and a tampered token, and
    the denials' bodies kept as answered details."""
    from envoy.service.auth.v3 import external_auth_pb2_grpc
    from google.rpc import code_pb2

    from tests.support.checks import check_request

    stub, as_verifier = authority_pb2_grpc.TokenAuthorityStub(channel), ((credentials.API_KEY_HEADER, verifier),)
    authorization = external_auth_pb2_grpc.AuthorizationStub(channel)
    subject = new_subject()
    first = seen.pair(await stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id="laptop"),
                                            metadata=((credentials.API_KEY_HEADER, issuer),)))
    second = seen.pair(await stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id="phone"),
                                             metadata=((credentials.API_KEY_HEADER, issuer),)))
    allowed = await authorization.Check(check_request(f"Bearer {second.access_token}"), metadata=as_verifier)
    assert allowed.status.code == code_pb2.OK
    tampered = seen.token(second.access_token[:-4] + "AAAA")
    # Signed out, tampered, and a token in the query string.
    for token, path in ((first.access_token, "/"), (tampered, "/"), (tampered, f"/?access_token={tampered}")):
        denied = await authorization.Check(check_request(f"Bearer {token}", path=path), metadata=as_verifier)
        assert denied.status.code != code_pb2.OK
        seen.details.append(denied.denied_response.body)
        seen.details.extend(option.header.value for option in denied.denied_response.headers)


def leaks(lines: list[str], seen: Seen) -> list[tuple[str, str]]:
    """(secret, line) for every line holding a secret, the secret shortened."""
    assert all(len(secret) >= 16 for secret in seen.secrets)
    return [(secret[:12] + "...", line[:200]) for line in lines for secret in seen.secrets if secret in line]


class Capture(logging.Handler):
    """Keeps every record as the text a log line would carry: message, arguments, traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []
        self.loggers: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.loggers.add(record.name)
        self.lines.append(f"{self.format(record)} {record.msg!r} {record.args!r}")


@contextlib.contextmanager
def everything_at_debug() -> Iterator[Capture]:
    capture = Capture()
    previous = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    logging.getLogger().addHandler(capture)
    try:
        yield capture
    finally:
        logging.getLogger().removeHandler(capture)
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)


async def test_no_secret_reaches_a_log_record_at_debug(
    start_server: StartServer, settings: Settings, tmp_path: Path
) -> None:
    issuer, verifier = credentials.new_api_key(), credentials.new_api_key()
    api_keys = (credentials.api_key_entry("login", [Role.ISSUER], issuer),
                credentials.api_key_entry("billing", [Role.VERIFIER], verifier))
    seen = Seen(secrets={settings.key_encryption_key})
    wrong_kek = base64.b64encode(secrets.token_bytes(32)).decode()
    seen.secrets.add(wrong_kek)

    with everything_at_debug() as capture:
        running = await start_server(api_keys=api_keys)
        await scenario(running.stub, issuer, verifier, seen)
        await ext_authz_checks(running.channel, issuer, verifier, seen)
        await running.server.stop(None)
        # Configuration errors: a wrong KEK, and an API key pasted where its hash belongs.
        with pytest.raises(ConfigError) as wrong:
            await create_server(dataclasses.replace(settings, key_encryption_key=wrong_kek, api_keys=api_keys))
        with pytest.raises(ConfigError) as pasted:
            dataclasses.replace(settings, api_keys=(f"login:issuer:{issuer}",))
        logging.getLogger("authority").error("start failed: %s; %s", wrong.value, pasted.value)

    kek = settings.key_encryption_key_bytes()
    for record in await _keys(settings.database_url):
        seen.private_key(keys.open_private_key(record.private_key, record.kid, kek))
    # The capture really saw the libraries' debug output, and the errors were logged.
    assert {"authority.app", "authority.api.callers", "sqlalchemy.engine.Engine"} <= capture.loggers
    assert any("does not open signing key" in line for line in capture.lines)
    assert leaks(capture.lines + seen.details, seen) == []


async def _keys(database_url: str) -> list[KeyRecord]:
    store = Store.open(database_url)
    try:
        return await store.keys()
    finally:
        await store.close()


@pytest.mark.parametrize("store", ["sqlite"])
async def test_serve_at_debug_logs_no_secret(database_url: str, tmp_path: Path) -> None:
    """The operator's view: ``authority serve`` at DEBUG, plaintext keys on SQLite, every stderr line."""
    issuer, verifier = credentials.new_api_key(), credentials.new_api_key()
    entries = ",".join((credentials.api_key_entry("login", [Role.ISSUER], issuer),
                        credentials.api_key_entry("billing", [Role.VERIFIER], verifier)))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AUTHORITY_")},
           "AUTHORITY_LOG_LEVEL": "DEBUG", "AUTHORITY_API_KEYS": entries, "GRPC_VERBOSITY": "DEBUG"}
    seen = Seen()

    async with _served(database_url, env, tmp_path) as (target, stderr):
        async with grpc.aio.insecure_channel(target) as channel:
            await scenario(authority_pb2_grpc.TokenAuthorityStub(channel), issuer, verifier, seen)
    for record in await _keys(database_url):
        seen.private_key(record.private_key)

    lines = bytes(stderr).decode(errors="replace").splitlines()
    assert any("DEBUG" in line for line in lines)
    assert any("refused ListSessions" in line for line in lines)
    assert leaks(lines + seen.details, seen) == []


@contextlib.asynccontextmanager
async def _served(database_url: str, env: dict[str, str], cwd: Path) -> AsyncIterator[tuple[str, bytearray]]:
    """``authority serve`` until the block ends; yields its target and a buffer that holds
    all of its stderr once the block has ended (it is read all along, so the pipe never fills)."""
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, "serve", "--listen", "127.0.0.1:0", "--database-url", database_url,
        stderr=asyncio.subprocess.PIPE, cwd=cwd, env=env,
    )
    assert process.stderr is not None
    output = bytearray()
    target = None
    while target is None:
        line = await asyncio.wait_for(process.stderr.readline(), timeout=30)
        assert line, "authority serve exited before listening: " + output.decode(errors="replace")
        output += line
        if match := re.search(rb"listening on (\S+:\d+)", line):
            target = match.group(1).decode()

    async def drain(stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            output.extend(chunk)

    draining = asyncio.create_task(drain(process.stderr))
    try:
        yield target, output
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=30)
        await asyncio.wait_for(draining, timeout=30)


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_refresh_tokens_are_stored_only_as_hashes(start_server: StartServer, settings: Settings) -> None:
    running = await start_server()
    subject = new_subject()
    first = await running.stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id="laptop"))
    second = await running.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=first.refresh_token))
    issued = [first, second]

    rows = await _every_row(settings.database_url)
    hashes = {row["token_hash"] for table, row in rows if table == "refresh_tokens"}

    assert hashes == {hashlib.sha256(pair.refresh_token.encode()).hexdigest() for pair in issued}
    for pair in issued:
        for secret in (pair.refresh_token, pair.access_token):
            assert not [table for table, row in rows if any(secret in str(value) for value in row.values())]


async def _every_row(database_url: str) -> list[tuple[str, dict[str, object]]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = []
            for table in metadata.sorted_tables:
                for row in await conn.execute(sa.select(table)):
                    rows.append((table.name, dict(row._mapping)))
            return rows
    finally:
        await engine.dispose()
