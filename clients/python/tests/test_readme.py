"""The client README as a newcomer follows it: its install lines work from a clone, its
quick start runs against a default authority and shuts down without a warning, and what
the package does on the side (warnings about keys in the clear, a quiet in-process
authority) is what the README says."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import tomllib
import warnings
from pathlib import Path
from typing import Any

import grpc
import pytest
from authority_client import (
    AsyncAuthorityClient,
    AsyncValidator,
    AuthorityClient,
    Mode,
    PlaintextApiKeyWarning,
    ValidationSettings,
    Validator,
)

from authority.testing import AsyncInProcessAuthority, InProcessAuthority

CLIENT = Path(__file__).resolve().parents[1]
REPOSITORY = CLIENT.parents[1]
README = (CLIENT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _install_lines() -> list[list[str]]:
    lines = [line for block in _blocks("sh") for line in block.splitlines() if line.startswith("pip install")]
    return [shlex.split(line.replace("PATH/TO/token-authority", str(REPOSITORY)))[2:] for line in lines]


def test_every_install_line_names_a_project_folder_and_only_extras_it_has() -> None:
    lines = _install_lines()
    assert lines, "the README shows no pip install line"
    assert all("token-authority-client" not in words for words in lines)  # not on an index yet
    for words in lines:
        for word in words:
            if word.startswith("-"):
                continue
            folder, _, extras = word.partition("[")
            project = tomllib.loads((Path(folder) / "pyproject.toml").read_text())["project"]
            for extra in filter(None, extras.rstrip("]").split(",")):
                assert extra in project.get("optional-dependencies", {}), f"{word}: no extra {extra!r}"


def test_the_testing_install_line_works_as_written(tmp_path: Path) -> None:
    """Installs what the README's test-environment line names (without dependencies,
    which this environment has) into a folder of its own, and runs the in-process
    authority from that copy: the packaged server must carry its migrations too."""
    line = next(words for words in _install_lines() if len(words) == 2)
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--target", str(target), *line],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr
    metadata = next(target.glob("token_authority_client-*.dist-info")) / "METADATA"
    # No extra pulls the server in (it used to be the broken "testing" extra).
    assert "token-authority;" not in metadata.read_text() and "Provides-Extra: testing" not in metadata.read_text()

    script = (
        "import authority, authority_client\n"
        f"assert authority.__file__.startswith({str(target)!r}), authority.__file__\n"
        f"assert authority_client.__file__.startswith({str(target)!r}), authority_client.__file__\n"
        "from authority.testing import InProcessAuthority\n"
        "with InProcessAuthority() as running:\n"
        "    token = running.sign_in('alice', 'laptop').access_token\n"
        "    assert running.client.validate_token(token).valid\n"
        "print('ran')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "ran"


def _quick_start() -> tuple[str, str]:
    """The grpc quick start, split where it says to add your servicers."""
    section = README.split("## Quick start: a grpc server", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert code is not None
    setup, marker, shutdown = code.group(1).partition("# ... add your servicers")
    assert marker, "the quick start no longer says where servicers go"
    return setup, shutdown.split("\n", 1)[1]


def test_the_quick_start_runs_against_a_default_authority(caplog: pytest.LogCaptureFixture) -> None:
    setup, shutdown = _quick_start()
    with InProcessAuthority() as authority, caplog.at_level(logging.WARNING):
        assert "127.0.0.1:50051" in setup  # the address of a default scripts/serve
        namespace: dict[str, Any] = {}
        exec(setup.replace("127.0.0.1:50051", authority.target), namespace)

        server: grpc.Server = namespace["server"]
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("greeter.v1.Greeter", {
            "SayHello": grpc.unary_unary_rpc_method_handler(
                namespace["say_hello"], request_deserializer=bytes.decode, response_serializer=str.encode
            ),
        })])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        token = authority.sign_in("alice", "laptop").access_token  # the authority's default audience
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            say_hello = channel.unary_unary("/greeter.v1.Greeter/SayHello", request_serializer=str.encode,
                                            response_deserializer=bytes.decode)
            assert namespace["validator"].wait_until_fresh(10)
            assert say_hello("hi", metadata=(("authorization", f"Bearer {token}"),), timeout=5) == "hello alice"

        exec(shutdown, namespace)

    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def _follower_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "authority-revocations" and t.is_alive()]


def test_closing_the_client_before_the_validator_logs_no_lost_stream(caplog: pytest.LogCaptureFixture) -> None:
    """Regression: closing in the wrong order logged "revocation stream lost (CANCELLED)"
    and the follower kept reconnecting on the closed channel."""
    with InProcessAuthority() as authority, caplog.at_level(logging.DEBUG, logger="authority_client"):
        client = AuthorityClient(authority.target)
        validator = Validator(client, ValidationSettings(mode=Mode.LOCAL)).start()
        assert validator.wait_until_fresh(10)
        before = set(_follower_threads())
        assert before

        client.close()
        deadline = time.monotonic() + 10
        while before & set(_follower_threads()):
            assert time.monotonic() < deadline, "the follower still follows a closed client"
            time.sleep(0.01)
        validator.close()

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "the client was closed" in caplog.text


def test_closing_the_async_client_first_logs_no_lost_stream(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with AsyncInProcessAuthority() as authority:
            client = AsyncAuthorityClient(authority.target)
            validator = await AsyncValidator(client, ValidationSettings(mode=Mode.LOCAL)).start()
            follower = next(t for t in asyncio.all_tasks() if t.get_name() == "authority-revocations")
            await client.close()
            await asyncio.wait_for(asyncio.shield(follower), timeout=10)
            await validator.close()

    with caplog.at_level(logging.DEBUG, logger="authority_client"):
        asyncio.run(scenario())

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "the client was closed" in caplog.text


@pytest.mark.parametrize("target", ["dns:///authority.internal:50051", "10.1.2.3:50051", "[2001:db8::1]:50051"])
def test_an_api_key_in_the_clear_to_another_machine_warns(target: str) -> None:
    with pytest.warns(PlaintextApiKeyWarning, match="unencrypted"):
        AuthorityClient(target, api_key="k").close()

    async def make() -> None:
        await AsyncAuthorityClient(target, api_key="k").close()

    with pytest.warns(PlaintextApiKeyWarning):
        asyncio.run(make())


@pytest.mark.parametrize("target", ["127.0.0.1:50051", "localhost:50051", "[::1]:50051", "dns:///localhost:1"])
def test_an_api_key_to_loopback_or_over_tls_does_not_warn(target: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PlaintextApiKeyWarning)
        AuthorityClient(target, api_key="k").close()
        AuthorityClient("authority.internal:50051", api_key="k", credentials=grpc.ssl_channel_credentials()).close()
        AuthorityClient("authority.internal:50051").close()  # no key, nothing to leak


def test_the_in_process_authority_prints_no_warnings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), InProcessAuthority() as authority:
        authority.sign_in("alice", "laptop")
        authority.stop()
        authority.start()

    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []



@pytest.mark.parametrize("path", ["clients/python/build/lib/x.py", "build/lib/x.py", "clients/python/dist/x.whl"])
def test_build_output_is_ignored_wherever_an_install_leaves_it(path: str) -> None:
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=REPOSITORY, timeout=30)
    assert ignored.returncode == 0, f"{path} is not ignored"
