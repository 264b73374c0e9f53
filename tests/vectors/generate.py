"""Writes the conformance corpus, ``tests/vectors/tokens.json``: every token of the attack
catalogue (tests/test_attacks.py) and its controls, for each signing algorithm, with the
outcome every verifier must reach (``VALID`` or the reason's name), the reason's text from
``authority_client.reasons``, and the JWK Set that verifies them; and the rest of that one
table of texts: the revocation causes' texts, what a refused call and a signed-out
device are told for each reason and cause (``refusals``, ``signed_out``), so that every
surface composes them alike, and the text of each way an HTTP request can present its
token wrongly (``request_problems``: ``RequestProblem``, answered 400 invalid_request).

The authority's validator, the Python ``TokenVerifier`` and the Node.js verifier
(clients/node) all run it (tests/test_vectors.py, clients/node/test/vectors.test.js), so
they refuse the same tokens for the same reasons. The output is deterministic: fixed test
keys (``keys.json``, made once, signing nothing real), a fixed ``now``, seeded identifiers
and deterministic signatures, so tests/test_vectors.py can tell a stale file.

Device-bound tokens (RFC 9449) have cases of their own, ``proof_cases``, written from the
proof attacks (tests/support/proof_attacks.py). A proof case is stateful: it holds a token,
its audience and an ordered list of ``presentations``, each a DPoP proof (or ``null``: no
proof) with the request's ``http_method`` and ``http_uri``. Run every presentation of a
case, in order, through ONE fresh verifier (issuer, leeway, now and JWK set as for the
token cases; a proof checker with ``proof_max_age`` seconds of window, the case's
``replay_cache_size`` or the default when null, and the same now), so a replay meets the
memory of the first presentation. Each presentation gives ``expected`` (``VALID`` or the
reason's name), its ``text``, and for ``BAD_PROOF`` the ``check`` that failed (the
``check`` of ``authority_client.proof.InvalidProof``: size, form, typ, alg, jwk, signature,
jti, htm, htu, iat, ath, key, replayed, replay-cache-full, unbound); ``check`` is null
otherwise. ``uris`` pairs request URIs with their normal form (null: not an absolute http(s)
URI), as both sides of ``htu`` are compared. The device keys are fixed too (``devices`` in
``keys.json``).

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
    REQUEST_TEXTS,
    refusal_text,
    signed_out_text,
)
from authority_client.v1 import authority_pb2 as pb
from authority_client.verify import InvalidReason, RevocationCause
from authority_client.proof import DEFAULT_MAX_AGE, normalize_uri
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authority.config import Algorithm
from authority.keys import KeyRing, SigningKey, generate_key, thumbprint
from tests import test_attacks
from tests.support import dpop, forge
from tests.support.proof_attacks import DEVICES, PROOF_ATTACKS, ProofAttack

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


@functools.cache
def load_devices() -> dict[str, dpop.PrivateKey]:
    """The fixed device keys of the proof cases, by name; made once and committed."""
    stored = json.loads(KEYS.read_text())
    if "devices" not in stored:
        made = {"EdDSA": ed25519.Ed25519PrivateKey.generate(), "ES256": ec.generate_private_key(ec.SECP256R1()),
                "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
                "thief": ed25519.Ed25519PrivateKey.generate()}
        pkcs8, unencrypted = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        stored["devices"] = {
            name: key.private_bytes(serialization.Encoding.PEM, pkcs8, unencrypted).decode() for name, key in made.items()
        }
        KEYS.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
    devices = {name: serialization.load_pem_private_key(stored["devices"][name].encode(), password=None)
               for name in DEVICES}
    return devices  # type: ignore[return-value]


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
    proof_cases: list[dict[str, Any]] = []
    jwks: dict[str, Any] = {}
    for algorithm in Algorithm:
        target = _target(algorithm, keys)
        jwks[algorithm.value] = KeyRing([target.key], algorithm).jwks_json
        for attack in test_attacks.ATTACKS:
            if attack.only in (None, algorithm):
                cases.append(_case(algorithm, attack.name, attack.build(target), attack.audience, attack.expected))
        for name, (token, audience) in test_attacks.controls(target).items():
            cases.append(_case(algorithm, f"valid-{name}", token, audience, "VALID"))
        # Their own identifiers: a proof case added leaves the token cases as they are.
        proof_ids = random.Random(f"proof-corpus-{algorithm.value}")
        proofs = test_attacks.proof_target(
            dataclasses.replace(target, new_id=lambda ids=proof_ids: _new_id(ids)), load_devices())
        proof_cases.extend(_proof_case(algorithm, attack, *attack.build(proofs)) for attack in PROOF_ATTACKS)
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
        "request_problems": {problem.name: text for problem, text in REQUEST_TEXTS.items()},
        "refusals": _refusals(),
        "signed_out": _signed_out(),
        "cases": cases,
        "proof_max_age": DEFAULT_MAX_AGE,
        "proof_cases": proof_cases,
        "uris": [{"uri": uri, "normalized": _normalized(uri)} for uri in URIS],
    }


def _new_id(ids: random.Random) -> str:
    return base64.urlsafe_b64encode(ids.randbytes(16)).rstrip(b"=").decode()


def _proof_case(algorithm: Algorithm, attack: ProofAttack, token: str, presentations: list[Any]) -> dict[str, Any]:
    return {
        "name": f"{algorithm.value}/{attack.name}",
        "algorithm": algorithm.value,
        "token": token,
        "audience": attack.audience,
        "replay_cache_size": attack.replay_cache_size,
        "presentations": [
            {
                "proof": shown.proof, "http_method": shown.http_method, "http_uri": shown.http_uri,
                "expected": shown.expected, "check": shown.check,
                "text": None if shown.expected == "VALID" else REASON_TEXTS[InvalidReason[shown.expected]],
            }
            for shown in presentations
        ],
    }


def _normalized(uri: str) -> str | None:
    try:
        return normalize_uri(uri)
    except ValueError:
        return None


# Request URIs and their normal form (RFC 3986 6.2.2 and 6.2.3, RFC 9449 4.3), for every
# verifier's htu comparison.
URIS = (
    "https://api.example.com/orders",
    "HTTPS://API.Example.COM/Orders",
    "https://api.example.com/a%2fb%c3%a9",
    "https://api.example.com/%7Euser/%41%2D%5F%2E",
    "https://api.example.com/a/./b/../c",
    "https://api.example.com/../../a",
    "https://api.example.com/a/%2E%2E/b",
    "https://api.example.com/a/b/..",
    "https://api.example.com:443/orders",
    "http://api.example.com:80/orders",
    "https://api.example.com:/orders",
    "https://api.example.com:8443/orders",
    "http://api.example.com:443/",
    "https://api.example.com",
    "https://api.example.com:0443",
    "https://api.example.com/orders?id=1#top",
    "https://api.example.com?x",
    "https://api.example.com#x",
    "https://[2001:DB8::1]:443/x",
    "http://[::1]:8080",
    "https://api.example.com/caf\u00e9",
    "https://api.example.com/a b",
    "",
    "/orders",
    "api.example.com/orders",
    "ftp://api.example.com/",
    "https:///orders",
    "https://user:pw@api.example.com/",
    "https://api.example.com:99999/",
    "https://api.example.com:x/",
    "https://[::1/",
)


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
