"""Malformed and forged tokens: the local verifier refuses them for the reason the
authority gives."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from authority_client import AuthorityClient, Mode, ValidationSettings, Validator
from authority_client.verify import InvalidToken
from cryptography.hazmat.primitives.asymmetric import ed25519

from authority.testing import InProcessAuthority


def _segment(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _bad_tokens(authority: InProcessAuthority, foreign: InProcessAuthority, renamed: InProcessAuthority) -> dict[str, str]:
    good = authority.sign_in("alice", "laptop").access_token
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    kid = json.loads(base64.urlsafe_b64decode(header + "=="))["kid"]
    forged_key = ed25519.Ed25519PrivateKey.generate()
    return {
        "garbage": "not-a-token",
        "two segments": "abc.def",
        "oversized": "a" * 9000 + ".b.c",
        "tampered payload": f"{header}.{_segment({**claims, 'sub': 'mallory'})}.{signature}",
        "signed by another key under our kid": jwt.encode(
            claims, forged_key, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt"}
        ),
        "alg none": f"{_segment({'alg': 'none', 'kid': kid, 'typ': 'at+jwt'})}.{payload}.",
        "another authority's key": foreign.mint("alice"),
        "another issuer with our key": renamed.mint("alice"),
        "expired": authority.mint("alice", ttl=-60),
        "not yet valid": authority.mint("alice", not_before=600, ttl=900),
        "wrong audience": authority.mint("alice", audience="elsewhere"),
    }


def test_local_verifier_refuses_as_the_authority_does(authority: InProcessAuthority) -> None:
    with (
        InProcessAuthority() as foreign,
        InProcessAuthority(
database_url=authority.database_url, issuer="impostor") as renamed,
    ):
        tokens = _bad_tokens(authority, foreign, renamed)
        with AuthorityClient(authority.target) as client, Validator(
            client, ValidationSettings(mode=Mode.LOCAL)
        ) as local:
            assert local.wait_until_fresh(10)
            for name, token in tokens.items():
                remote = client.validate_token(token, "token-authority")
                assert not remote.valid, name
                with pytest.raises(InvalidToken) as refused:
                    local.validate(token, "token-authority")
                assert (name, refused.value.reason) == (name, remote.reason)
