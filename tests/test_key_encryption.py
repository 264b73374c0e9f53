"""Private signing keys at rest: sealed under the key-encryption key, never PEM in the store."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import os
import secrets
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from authority_client.v1 import authority_pb2 as pb

from authority import keys
from authority.api.server import create_server
from authority.config import Algorithm, Settings, load_settings
from authority.errors import ConfigError
from authority.store import Store
from tests.conftest import StartServer
from tests.support.calls import new_subject, reason, sign_in

AUTHORITY = str(Path(sys.executable).with_name("authority"))


def new_kek() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


async def _stored(database_url: str) -> list[bytes]:
    store = Store.open(database_url)
    try:
        return [record.private_key for record in await store.keys()]
    finally:
        await store.close()


async def _has_schema(database_url: str) -> bool:
    store = Store.open(database_url)
    try:
        async with store.transaction(read_only=True) as tx:
            return bool(await tx.conn.run_sync(lambda connection: sa.inspect(connection).get_table_names()))
    finally:
        await store.close()


async def test_keys_are_stored_sealed_and_load_again_with_the_same_kek(
    start_server: StartServer, settings: Settings
) -> None:
    first = await start_server()
    signed_in = await sign_in(first.stub, new_subject(), "laptop")
    await first.server.stop(None)

    stored = await _stored(settings.database_url)
    second = await start_server()

    assert stored and all(keys.is_sealed(blob) for blob in stored)
    assert not any(b"PRIVATE KEY" in blob for blob in stored)
    assert await reason(second.stub, signed_in.access_token) == "VALID"


async def test_a_wrong_kek_stops_the_server_at_start(start_server: StartServer, settings: Settings) -> None:
    await (await start_server()).server.stop(None)
    wrong = new_kek()

    with pytest.raises(ConfigError) as caught:
        await create_server(dataclasses.replace(settings, key_encryption_key=wrong))

    assert caught.value.option == "key_encryption_key"
    assert "does not open signing key" in str(caught.value)
    assert wrong not in str(caught.value) and settings.key_encryption_key not in str(caught.value)


async def test_sealed_keys_without_a_kek_stop_the_server_at_start(
    start_server: StartServer, settings: Settings
) -> None:
    await (await start_server()).server.stop(None)

    with pytest.raises(ConfigError) as caught:
        await create_server(dataclasses.replace(settings, key_encryption_key="", allow_plaintext_keys=True))

    assert caught.value.option == "key_encryption_key"
    assert "stored encrypted" in str(caught.value)


async def test_keys_stored_before_a_kek_was_configured_keep_loading(
    start_server: StartServer, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    plaintext = await start_server(key_encryption_key="", allow_plaintext_keys=True)
    signed_in = await sign_in(plaintext.stub, new_subject(), "laptop")
    await plaintext.server.stop(None)
    before = await _stored(settings.database_url)

    with caplog.at_level(logging.WARNING, logger="authority.keys"):
        sealed = await start_server()  # the fixture's settings carry a KEK
    await sign_in(sealed.stub, new_subject(), "phone")

    assert [b"PRIVATE KEY" in blob for blob in before] == [True]
    assert await reason(sealed.stub, signed_in.access_token) == "VALID"
    assert "stored unencrypted (it predates the key-encryption key)" in caplog.text


async def test_a_new_algorithm_key_is_sealed_beside_an_old_plaintext_one(
    start_server: StartServer, settings: Settings
) -> None:
    await (await start_server(key_encryption_key="", allow_plaintext_keys=True)).server.stop(None)

    await (await start_server(signing_algorithm=Algorithm.ES256)).server.stop(None)
    stored = await _stored(settings.database_url)

    assert sorted(keys.is_sealed(blob) for blob in stored) == [False, True]


@pytest.mark.parametrize("store", ["postgres"])
async def test_postgres_without_a_kek_needs_the_flag(
    start_server: StartServer, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConfigError) as caught:
        await create_server(dataclasses.replace(settings, key_encryption_key=""))
    assert caught.value.option == "key_encryption_key"
    assert "allow_plaintext_keys" in str(caught.value)
    assert not await _has_schema(settings.database_url)  # refused before the schema, let alone a key

    with caplog.at_level(logging.WARNING, logger="authority.keys"):
        running = await start_server(key_encryption_key="", allow_plaintext_keys=True)

    assert "stored unencrypted" in caplog.text
    assert (await running.stub.GetSigningKeys(pb.GetSigningKeysRequest())).jwks_json


@pytest.mark.parametrize("store", ["sqlite"])
async def test_sqlite_without_a_kek_runs_with_a_warning(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="authority.keys"):
        running = await start_server(key_encryption_key="")

    assert "stored unencrypted" in caplog.text
    assert (await running.stub.GetSigningKeys(pb.GetSigningKeysRequest())).jwks_json


@pytest.mark.parametrize("store", ["sqlite"])
async def test_the_kek_can_come_from_a_file(start_server: StartServer, settings: Settings, tmp_path: Path) -> None:
    kek_file = tmp_path / "kek"
    kek_file.write_text(new_kek() + "\n")

    running = await start_server(key_encryption_key="", key_encryption_key_file=str(kek_file))
    await sign_in(running.stub, new_subject(), "laptop")

    assert all(keys.is_sealed(blob) for blob in await _stored(settings.database_url))


@pytest.mark.parametrize(
    "environ",
    [
        {"AUTHORITY_KEY_ENCRYPTION_KEY": base64.b64encode(b"k" * 16).decode()},  # 128 bits
        {"AUTHORITY_KEY_ENCRYPTION_KEY": "not base64 at all!"},
        {"AUTHORITY_KEY_ENCRYPTION_KEY": "x" * 44},
    ],
)
def test_a_kek_that_is_not_32_bytes_of_base64_is_refused_without_echoing_it(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)

    assert caught.value.option == "key_encryption_key"
    assert environ["AUTHORITY_KEY_ENCRYPTION_KEY"] not in str(caught.value)


def test_kek_options_are_exclusive_and_files_must_exist(tmp_path: Path) -> None:
    kek_file = tmp_path / "kek"
    kek_file.write_text(new_kek())

    with pytest.raises(ConfigError) as both:
        load_settings({"AUTHORITY_KEY_ENCRYPTION_KEY": new_kek(), "AUTHORITY_KEY_ENCRYPTION_KEY_FILE": str(kek_file)})
    with pytest.raises(ConfigError) as missing:
        load_settings({"AUTHORITY_KEY_ENCRYPTION_KEY_FILE": str(tmp_path / "nothing")})

    assert both.value.option == missing.value.option == "key_encryption_key_file"


def test_urlsafe_and_standard_base64_both_work() -> None:
    raw = bytes(range(250, 256)) + secrets.token_bytes(26)  # bytes that encode to + and /
    standard, urlsafe = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")

    assert load_settings({"AUTHORITY_KEY_ENCRYPTION_KEY": standard}).key_encryption_key_bytes() == raw
    assert load_settings({"AUTHORITY_KEY_ENCRYPTION_KEY": urlsafe}).key_encryption_key_bytes() == raw


def test_the_kek_is_not_in_the_settings_repr() -> None:
    kek = new_kek()

    assert kek not in repr(load_settings({"AUTHORITY_KEY_ENCRYPTION_KEY": kek}))


def test_a_sealed_key_opens_only_under_its_own_kid_and_kek() -> None:
    key = keys.generate_key(Algorithm.EDDSA, 0)
    kek = secrets.token_bytes(32)
    sealed = keys.seal_private_key(key.private_pem(), key.kid, kek)

    assert keys.open_private_key(sealed, key.kid, kek) == key.private_pem()
    assert sealed != keys.seal_private_key(key.private_pem(), key.kid, kek)  # a fresh nonce each time
    with pytest.raises(ConfigError):  # moved to another key's row
        keys.open_private_key(sealed, "another-kid", kek)
    with pytest.raises(ConfigError):
        keys.open_private_key(sealed, key.kid, secrets.token_bytes(32))
    with pytest.raises(ConfigError):  # one bit flipped
        keys.open_private_key(sealed[:-1] + bytes([sealed[-1] ^ 1]), key.kid, kek)
    assert keys.open_private_key(key.private_pem(), key.kid, kek) == key.private_pem()  # plaintext passes


@pytest.mark.parametrize("store", ["postgres"])
async def test_serve_on_postgres_without_a_kek_exits_naming_the_option(database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHORITY_")}
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, "serve", "--listen", "127.0.0.1:0", "--database-url", database_url,
        stderr=asyncio.subprocess.PIPE, env=env,
    )
    _, err = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode == 2
    assert "authority serve: key_encryption_key:" in err.decode()
    assert "Traceback" not in err.decode()


@pytest.mark.parametrize("store", ["postgres"])
async def test_serve_on_postgres_with_the_flag_starts_and_warns(database_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHORITY_")}
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, "serve", "--listen", "127.0.0.1:0", "--database-url", database_url, "--allow-plaintext-keys",
        stderr=asyncio.subprocess.PIPE, env=env, cwd=tmp_path,
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        while not any("listening on" in line for line in lines):
            line = (await asyncio.wait_for(process.stderr.readline(), timeout=30)).decode()
            assert line, "authority serve exited: " + "".join(lines)
            lines.append(line)
    finally:
        process.terminate()
        await process.wait()

    assert any("private signing keys are stored unencrypted" in line for line in lines)


@pytest.mark.parametrize("content", ["", "\n", "\ufeff\r\n"])
def test_a_kek_file_that_reads_empty_is_refused_never_taken_for_no_key(tmp_path: Path, content: str) -> None:
    kek_file = tmp_path / "kek"
    kek_file.write_text(content, encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_settings({"AUTHORITY_KEY_ENCRYPTION_KEY_FILE": str(kek_file)})

    assert caught.value.option == "key_encryption_key_file"
    assert str(caught.value).endswith(f"{kek_file} is empty: it must hold the key")


def test_a_kek_with_a_byte_order_mark_or_line_ends_is_read_without_them(tmp_path: Path) -> None:
    raw = secrets.token_bytes(32)
    kek_file = tmp_path / "kek"
    kek_file.write_text("\ufeff" + base64.b64encode(raw).decode() + "\r\n", encoding="utf-8")

    assert load_settings({"AUTHORITY_KEY_ENCRYPTION_KEY_FILE": str(kek_file)}).key_encryption_key_bytes() == raw
    assert load_settings({"AUTHORITY_KEY_ENCRYPTION_KEY": base64.b64encode(raw).decode() + "\n"}
                         ).key_encryption_key_bytes() == raw


@pytest.mark.parametrize("given", ["another key", "no key"])
async def test_keys_rotate_with_a_kek_that_does_not_open_the_stored_keys_changes_nothing(
    start_server: StartServer, settings: Settings, given: str
) -> None:
    await (await start_server()).server.stop(None)
    before = await _stored(settings.database_url)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AUTHORITY_")},
           "AUTHORITY_DATABASE_URL": settings.database_url, "AUTHORITY_ALLOW_PLAINTEXT_KEYS": "true"}
    if given == "another key":
        env["AUTHORITY_KEY_ENCRYPTION_KEY"] = new_kek()
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, "keys", "rotate", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode == 2, (out, err)
    assert err.decode().strip().splitlines()[-1].startswith("authority keys: key_encryption_key: ")
    assert "Traceback" not in err.decode()
    assert await _stored(settings.database_url) == before  # no key stored beside the sealed ones
    await (await start_server()).server.stop(None)  # and the next start, with the right key, still opens them


@pytest.mark.parametrize("option", ["key_encryption_key_file", "api_keys_file", "tls_cert_file"])
def test_an_option_file_that_never_ends_is_refused_not_read_into_memory(option: str) -> None:
    environ = {f"AUTHORITY_{option.upper()}": "/dev/zero"}
    if option == "tls_cert_file":
        environ["AUTHORITY_TLS_KEY_FILE"] = "/dev/zero"

    with pytest.raises(ConfigError) as caught:
        load_settings(environ)

    assert caught.value.option == option and str(caught.value).endswith("/dev/zero is larger than 1024 KiB")
