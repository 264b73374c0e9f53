"""Extra claims keep their JSON types through the Struct that carries them (whose numbers
are doubles): an integer stays an integer in the token and in ``Claims.extra``, over the
RPC and from the command line, and an integer a double cannot carry exactly is refused."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from authority_client import AuthorityClient, Mode, ValidationSettings, Validator
from authority_client.jws import MAX_JSON_DEPTH
from authority_client.v1 import authority_pb2 as pb
from google.protobuf import struct_pb2

from authority.claims import MAX_CLAIM_DEPTH, NAME_SHOWN
from tests.conftest import Running
from tests.test_cli import _serve

AUTHORITY = str(Path(sys.executable).with_name("authority"))


def _payload_text(token: str) -> str:
    """The token's payload exactly as signed, before any JSON parser sees it."""
    part = token.split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


async def test_integral_numbers_become_json_integers_in_the_token(authority: Running) -> None:
    claims = {"n": 3, "negative": -7, "big": 2**53 - 1, "ratio": 1.5, "flag": True, "text": "3",
              "nested": {"level": 2, "list": [1, 2.5, {"deep": 4}]}}

    issued = await authority.stub.IssueToken(
        pb.IssueTokenRequest(subject="alice", device_id="laptop", claims=_struct(claims))
    )

    raw = _payload_text(issued.access_token)
    for fragment in ('"n":3,', '"negative":-7,', f'"big":{2**53 - 1},', '"ratio":1.5,', '"flag":true,',
                     '"text":"3"', '"level":2,', '"list":[1,2.5,{"deep":4}]'):
        assert fragment in raw, raw
    assert ".0," not in raw and ".0}" not in raw and ".0]" not in raw
    assert json.loads(raw)["nested"] == claims["nested"]


async def test_claims_come_back_as_integers_remote_and_local(authority: Running) -> None:
    # The blocking client runs in a thread: the server shares this test's event loop.
    await asyncio.to_thread(_claims_come_back_as_integers, authority.target)


def _claims_come_back_as_integers(target: str) -> None:
    with AuthorityClient(target) as client:
        token = client.issue_token("alice", "laptop", claims={"n": 3, "items": [1, 2], "ratio": 0.5}).access_token

        remote = client.validate_token(token).claims
        assert remote is not None
        assert remote.extra == {"n": 3, "items": [1, 2], "ratio": 0.5}
        assert type(remote.extra["n"]) is int and all(type(i) is int for i in remote.extra["items"])

        for mode in (Mode.REMOTE, Mode.LOCAL):
            validator = Validator(client, ValidationSettings(mode=mode)).start()
            try:
                assert validator.wait_until_fresh(10)
                extra = validator.validate(token, "token-authority").extra
            finally:
                validator.close()
            assert extra == {"n": 3, "items": [1, 2], "ratio": 0.5}, mode
            assert type(extra["n"]) is int, mode


async def test_refresh_keeps_integer_claims(authority: Running) -> None:
    issued = await authority.stub.IssueToken(
        pb.IssueTokenRequest(subject="alice", device_id="laptop", claims=_struct({"n": 3}))
    )
    refreshed = await authority.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=issued.refresh_token))

    assert '"n":3,' in _payload_text(refreshed.access_token)


@pytest.mark.parametrize(
    ("claims", "named"),
    [
        ({"big": 12345678901234567}, "claims.big"),
        ({"big": -(2**53)}, "claims.big"),
        ({"a": {"b": [1, 2**60]}}, "claims.a.b[1]"),
        # A long name is cut in the message, which must fit grpc-message's size limit.
        ({"x" * 20_000: 2**60}, "claims." + "x" * NAME_SHOWN + "…"),
    ],
    ids=["big", "negative", "nested", "long name"],
)
async def test_an_integer_a_double_cannot_carry_is_refused_naming_the_claim(
    authority: Running, claims: dict[str, Any], named: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await authority.stub.IssueToken(
            pb.IssueTokenRequest(subject="alice", device_id="laptop", claims=_struct(claims))
        )

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"{named}: ")
    sessions = await authority.stub.ListSessions(pb.ListSessionsRequest(subject="alice"))
    assert list(sessions.sessions) == []  # nothing changed


# The command line sees the text, so it keeps each type as written.


async def _cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("store", ["sqlite"])
async def test_the_command_line_keeps_claim_types_and_refuses_inexact_numbers(
    database_url: str, tmp_path: Path
) -> None:
    async with _serve(database_url, tmp_path) as (_, target):
        code, out, err = await _cli(
            "token", "issue", "alice", "laptop", "--target", target, "--json",
            "--claim", "n=3", "--claim", "flag=true", "--claim", 'x="3"', "--claim", "name=alice",
            "--claim", "ratio=0.1", "--claim", "tags=[1,\"a\"]",
        )
        assert code == 0, err
        raw = _payload_text(json.loads(out)["access_token"])
        for fragment in ('"n":3,', '"flag":true,', '"x":"3"', '"name":"alice"', '"ratio":0.1,', '"tags":[1,"a"]'):
            assert fragment in raw, raw

        code, out, _ = await _cli("token", "validate", json.loads(out)["access_token"], "--target", target)
        assert code == 0
        assert re.search(r'extra\s+\{"flag": true, "n": 3, "name": "alice", "ratio": 0.1, "tags": \[1, "a"\], '
                         r'"x": "3"\}', out), out

        for inexact in ("12345678901234567", "0.10000000000000000001", "1e400", "NaN", "[9007199254740993]"):
            code, _, err = await _cli("token", "issue", "bob", "phone", "--target", target, "--claim", f"v={inexact}")
            assert code == 2, inexact
            assert err.startswith("authority token issue: --claim v: "), err
            assert "cannot be carried exactly" in err

        code, out, _ = await _cli("sessions", "list", "bob", "--target", target)
        assert out.strip() == "no live sessions"  # nothing was signed in by a refused issue


def test_a_claim_nests_one_level_less_than_the_payload_that_holds_it() -> None:
    # The command line checks MAX_CLAIM_DEPTH without loading the verifier: the two must agree.
    assert MAX_CLAIM_DEPTH + 1 == MAX_JSON_DEPTH


def _lists(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def _objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("store", ["sqlite"])
async def test_the_command_line_refuses_a_claim_nested_too_deep_before_it_recurses(
    database_url: str, tmp_path: Path
) -> None:
    # Regression: '[' * 100000 ended in json's RecursionError, and 500 levels of valid JSON
    # in the Struct's, each a traceback.
    async with _serve(database_url, tmp_path) as (_, target):
        for deep in ("[" * 100_000, _lists(500), _lists(MAX_CLAIM_DEPTH + 1), _objects(MAX_CLAIM_DEPTH + 1),
                     ' [["]]]]",' + _lists(MAX_CLAIM_DEPTH) + "]]"):
            code, _, err = await _cli("token", "issue", "bob", "phone", "--target", target, "--claim", f"v={deep}")
            assert code == 2, deep[:40]
            assert err.strip() == (f"authority token issue: --claim v: nests lists or objects more than "
                                   f"{MAX_CLAIM_DEPTH} levels deep, more than a token's claims may"), err[-400:]

        code, out, _ = await _cli("sessions", "list", "bob", "--target", target)
        assert out.strip() == "no live sessions"  # nothing was signed in by a refused issue

        for deepest in (_lists(MAX_CLAIM_DEPTH), _objects(MAX_CLAIM_DEPTH), '["[[[[' + "[" * 40 + '"]'):
            code, out, err = await _cli("token", "issue", "bob", "phone", "--target", target, "--json",
                                        "--claim", f"v={deepest}")
            assert code == 0, err
            assert json.loads(_payload_text(json.loads(out)["access_token"]))["v"] == json.loads(deepest)


@pytest.mark.parametrize("store", ["sqlite"])
async def test_the_command_line_cannot_sign_in_a_nul_in_a_nested_claim_name(database_url: str, tmp_path: Path) -> None:
    # A command line cannot carry NUL, but a JSON VALUE can spell it: the authority refuses
    # it as it refuses a top-level one. Regression: such a token was issued.
    async with _serve(database_url, tmp_path) as (_, target):
        for claim in ('profile={"a\\u0000b":1}', 'groups=[{"ro\\u0000le":"admin"}]'):
            code, out, err = await _cli("token", "issue", "bob", "phone", "--target", target, "--claim", claim)
            assert code == 1, out
            assert err.startswith("authority token issue: "), err
            assert err.rstrip().endswith("claims: names must not contain NUL characters"), err
            assert "admin" not in err

        code, out, _ = await _cli("sessions", "list", "bob", "--target", target)
        assert out.strip() == "no live sessions"


@pytest.mark.parametrize("store", ["sqlite"])
async def test_a_capped_ttl_is_said(database_url: str, tmp_path: Path) -> None:
    async with _serve(database_url, tmp_path) as (_, target):
        code, out, err = await _cli("token", "issue", "alice", "laptop", "--target", target, "--ttl", "5h")
        assert code == 0
        assert "the ttl was capped to 1h (asked for 5h) by the authority's max_access_token_ttl" in err

        code, _, err = await _cli("token", "issue", "alice", "laptop", "--target", target, "--ttl", "10m")
        assert code == 0
        assert "capped" not in err


async def test_claim_help_documents_the_typing_rule() -> None:
    _, out, _ = await _cli("token", "issue", "--help")

    text = " ".join(out.split())
    assert "n=3 is the integer 3" in text and "flag=true a boolean" in text and "the string \"3\"" in text


async def test_a_reserved_claim_is_named_in_the_singular(authority: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await authority.stub.IssueToken(
            pb.IssueTokenRequest(subject="alice", device_id="laptop", claims=_struct({"exp": 1}))
        )
    assert caught.value.details() == "claims: exp is set by the authority and may not be given"
