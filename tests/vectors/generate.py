"""Writes the conformance corpus, ``tests/vectors/tokens.json``: every token of the attack
catalogue (tests/test_attacks.py) and its controls, for each signing algorithm, with the
outcome every verifier must reach (``VALID`` or the reason's name), the reason's text from
``authority_client.reasons``, and the JWK Set that verifies them; and the rest of that one
table of texts: the revocation causes' texts, and what a refused call and a signed-out
device are told for each reason and cause (``refusals``, ``signed_out``), so that every
surface composes them alike.

The authority's validator, the Python ``TokenVerifier`` and the Node.js verifier
(clients/node) all run it (tests/test_vectors.py, clients/node/test/vectors.test.js), so
they refuse the same tokens for the same reasons. The output is deterministic: fixed test
keys (``keys.json``, made once, signing nothing real), a fixed ``now``, seeded identifiers
and deterministic signatures, so tests/test_vectors.py can tell a stale file.

Run ``scripts/gen-vectors`` after changing the catalogue or the reason texts.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

from authority_client.reasons import (
    CAUSE_TEXTS,
    MISSING_TEXT,
    REASON_TEXTS,
    REPLACED_BY_DEVICE_TEXT,
    refusal_text,
    signed_out_text,
)
from authority_client.v1 import authority_pb2 as pb
from authority_client.verify import InvalidReason, RevocationCause
from cryptography.hazmat.primitives import serialization

from authority.config import Algorithm
from authority.keys import KeyRing, SigningKey, generate_key, thumbprint
from tests import test_attacks
from tests.support import forge

HERE = Path(__file__).parent
CORPUS = HERE / "tokens.json"
KEYS = HERE / "keys.json"
# 2027-01-15T08:00:00Z: every case's times are relative to it.
NOW = 1_800_000_000
ROLES = ("own", "foreign", "stranger")
# Tokens this long are stored as runs, [text, count] pairs, to keep the file small.
_LONG_TOKEN = 16 * 1024
_RUN = re.compile(r"(.)\1{1023,}", re.DOTALL)


@functools.cache
def load_keys() -> dict[str, dict[str, SigningKey]]:
    """The test keys by algorithm and role; made once and committed."""
    if not KEYS.exists():
        pems = {
            algorithm.value: {role: generate_key(algorithm, NOW).private_pem().decode() for role in ROLES}
            for algorithm in Algorithm
        }
        KEYS.write_text(json.dumps({"note": "test keys of the token corpus; they sign nothing real", "keys": pems},
                                   indent=1, sort_keys=True) + "\n")
    stored = json.loads(KEYS.read_text())["keys"]
    return {
        algorithm.value: {role: _signing_key(algorithm, stored[algorithm.value][role]) for role in ROLES}
        for algorithm in Algorithm
    }


def _signing_key(algorithm: Algorithm, pem: str) -> SigningKey:
    private_key = serialization.load_pem_private_key(pem.encode(), password=None)
    unnamed = SigningKey("", algorithm, private_key, NOW, NOW)  # type: ignore[arg-type]
    return dataclasses.replace(unnamed, kid=thumbprint(unnamed.public_jwk()))


def _issued(target: test_attacks.Target, audience: str) -> pb.IssueTokenResponse:
    """What a sign-in answers, with claims in the order the authority writes them."""
    session_id = target.new_id()
    payload = {
        "iss": test_attacks.ISSUER, "sub": "alice", "aud": audience, "iat": NOW, "nbf": NOW, "exp": NOW + 900,
        "jti": target.new_id(), "sid": session_id, "device_id": "laptop",
    }
    return pb.IssueTokenResponse(
        access_token=forge.sign(target.key, payload), refresh_token=target.new_id() + target.new_id(),
        session_id=session_id,
    )


def _target(algorithm: Algorithm, keys: dict[str, dict[str, SigningKey]]) -> test_attacks.Target:
    ids = random.Random(f"token-corpus-{algorithm.value}")

    def new_id() -> str:
        return base64.urlsafe_b64encode(ids.randbytes(16)).rstrip(b"=").decode()

    mine = keys[algorithm.value]
    target = test_attacks.Target(
        algorithm=algorithm, stub=None, key=mine["own"], foreign=mine["foreign"], verifier=None,
        issued=pb.IssueTokenResponse(), issued_elsewhere=pb.IssueTokenResponse(), fixed_now=NOW, new_id=new_id,
        strangers={other: keys[other.value]["stranger"] for other in Algorithm},
    )
    target.issued = _issued(target, test_attacks.AUDIENCE)
    target.issued_elsewhere = _issued(target, test_attacks.OTHER_AUDIENCE)
    return target


def _stored_token(token: str) -> str | list[list[Any]]:
    if len(token) <= _LONG_TOKEN:
        return token
    parts: list[list[Any]] = []
    position = 0
    for run in _RUN.finditer(token):
        if run.start() > position:
            parts.append([token[position:run.start()], 1])
        parts.append([run.group(1), len(run.group())])
        position = run.end()
    if position < len(token):
        parts.append([token[position:], 1])
    return parts


def _case(algorithm: Algorithm, name: str, token: str, audience: str, expected: str) -> dict[str, Any]:
    return {
        "name": f"{algorithm.value}/{name}",
        "algorithm": algorithm.value,
        "token": _stored_token(token),
        "audience": audience,
        "expected": expected,
        "text": None if expected == "VALID" else REASON_TEXTS[InvalidReason[expected]],
    }


def corpus() -> dict[str, Any]:
    """The whole corpus, as it is written."""
    keys = load_keys()
    cases: list[dict[str, Any]] = []
    jwks: dict[str, Any] = {}
    for algorithm in Algorithm:
        target = _target(algorithm, keys)
        jwks[algorithm.value] = KeyRing([target.key], algorithm).jwks_json
        for attack in test_attacks.ATTACKS:
            if attack.only in (None, algorithm):
                cases.append(_case(algorithm, attack.name, attack.build(target), attack.audience, attack.expected))
        for name, (token, audience) in test_attacks.controls(target).items():
            cases.append(_case(algorithm, f"valid-{name}", token, audience, "VALID"))
    return {
        "about": "Generated by scripts/gen-vectors (tests/vectors/generate.py); do not edit. "
                 "Verify each token for its audience with the algorithm's JWK set, issuer and leeway, at now "
                 "(seconds); a token given as a list is the concatenation of text * count.",
        "issuer": test_attacks.ISSUER,
        "leeway": 0,
        "now": NOW,
        "jwks": jwks,
        "reasons": {reason.name: text for reason, text in REASON_TEXTS.items()},
        "missing_text": MISSING_TEXT,
        "causes": {cause.name: text for cause, text in CAUSE_TEXTS.items()},
        "replaced_by_device_text": REPLACED_BY_DEVICE_TEXT,
        "refusals": _refusals(),
        "signed_out": _signed_out(),
        "cases": cases,
    }


# A replacing device's name as a login service may send it: a user agent's, not ASCII.
_DEVICE_NAMES = ("", "the phone", "Firefox 128 on Ubuntu — Ärger")


def _refusals() -> list[dict[str, str | None]]:
    """What a refused call is told, for every reason with no cause and REVOKED with each."""
    out: list[dict[str, str | None]] = [
        {"reason": reason.name, "cause": None, "device_name": "", "text": refusal_text(reason)}
        for reason in InvalidReason
    ]
    for cause in RevocationCause:
        for name in _DEVICE_NAMES:
            text = refusal_text(InvalidReason.REVOKED, cause, name)
            out.append({"reason": InvalidReason.REVOKED.name, "cause": cause.name, "device_name": name, "text": text})
    return out


def _signed_out() -> list[dict[str, str | None]]:
    """What a signed-out device shows its user, for each cause (and none)."""
    out: list[dict[str, str | None]] = []
    for cause in (None, *RevocationCause):
        for name in _DEVICE_NAMES:
            text = signed_out_text(cause, name)
            out.append({"cause": None if cause is None else cause.name, "device_name": name, "text": text})
    return out


def corpus_text() -> str:
    """The corpus as the file holds it."""
    return json.dumps(corpus(), indent=1, sort_keys=True) + "\n"


def token_of(case: dict[str, Any]) -> str:
    """A case's token, runs expanded."""
    token = case["token"]
    return token if isinstance(token, str) else "".join(text * count for text, count in token)


if __name__ == "__main__":
    CORPUS.write_text(corpus_text())
    print(f"wrote {CORPUS.relative_to(Path.cwd()) if CORPUS.is_relative_to(Path.cwd()) else CORPUS}", file=sys.stderr)
