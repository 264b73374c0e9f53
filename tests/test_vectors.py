"""The conformance corpus (tests/vectors/tokens.json): current with the attack catalogue,
and refused for the same reasons, with the same texts, by the authority's validator and
the Python local verifier. The Node.js verifier runs the same file in its own suite
(clients/node/test/vectors.test.js, run by tests/test_node.py).

The query vectors (tests/vectors/queries.json, written by hand): the HTTP surfaces' reading
of a token in the query string, which the Node.js middleware checks against the same
file (clients/node/test/queries.test.js)."""

from __future__ import annotations

import functools
import inspect
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from authority_client.http.bearer import Denial, read_token
from authority_client.proof import InvalidProof, Proof, ProofChecker, normalize_uri
from authority_client.reasons import (
    CAUSE_TEXTS,
    MISSING_TEXT,
    REASON_TEXTS,
    REQUEST_TEXTS,
    RequestProblem,
    refusal_text,
    signed_out_text,
)
from authority_client.verify import InvalidReason, InvalidToken, KeySet, RevocationCause, TokenVerifier

from authority.config import Algorithm
from authority.keys import KeyRing
from authority.revocations import RevocationMirror
from authority.tokens import TokenCodec
from authority.validation import Validator
from tests.vectors import generate


QUERIES = Path(__file__).parent / "vectors" / "queries.json"


@functools.cache
def _corpus() -> dict[str, Any]:
    corpus: dict[str, Any] = json.loads(generate.CORPUS.read_text())
    return corpus


def test_corpus_is_current_with_the_catalogue() -> None:
    # Guards against a catalogue (or reason text) changed without the corpus, which the
    # Node.js suite would then not see.
    assert generate.CORPUS.read_text() == generate.corpus_text(), "stale: run scripts/gen-vectors"


def test_corpus_covers_every_reason_and_algorithm() -> None:
    cases = _corpus()["cases"]
    presentations = [shown for case in _corpus()["proof_cases"] for shown in case["presentations"]]
    assert {case["expected"] for case in cases} | {shown["expected"] for shown in presentations} == (
        {"VALID", *(reason.name for reason in REASON_TEXTS)} - {"REVOKED"}
    )
    assert {case["algorithm"] for case in cases} == {algorithm.value for algorithm in Algorithm}
    assert any(case["name"].endswith("/cnf-device-bound-without-a-proof") for case in cases)
    # Every check of the proof checker, each at least once, for tokens of each algorithm.
    assert {shown["check"] for shown in presentations} == {None, *PROOF_CHECKS}
    assert {case["algorithm"] for case in _corpus()["proof_cases"]} == {algorithm.value for algorithm in Algorithm}
    assert all((shown["check"] is None) == (shown["expected"] != "BAD_PROOF") for shown in presentations)


def test_corpus_carries_the_one_table_of_texts() -> None:
    corpus = _corpus()
    assert corpus["reasons"] == {reason.name: text for reason, text in REASON_TEXTS.items()}
    assert corpus["missing_text"] == MISSING_TEXT
    assert corpus["causes"] == {cause.name: text for cause, text in CAUSE_TEXTS.items()}
    assert set(corpus["causes"]) == {cause.name for cause in RevocationCause} - {"UNSPECIFIED"}
    assert corpus["request_problems"] == {problem.name: text for problem, text in REQUEST_TEXTS.items()}
    assert set(corpus["request_problems"]) == {problem.name for problem in RequestProblem}
    # Every cause is composed, with and without the replacing device's name.
    revoked = {(r["cause"], r["device_name"]) for r in corpus["refusals"] if r["reason"] == "REVOKED"}
    assert {cause for cause, _ in revoked} == {None, *(cause.name for cause in RevocationCause)}
    assert "revoked: signed in on the phone" in {r["text"] for r in corpus["refusals"]}
    for refusal in corpus["refusals"]:
        cause = None if refusal["cause"] is None else RevocationCause[refusal["cause"]]
        assert refusal["text"] == refusal_text(InvalidReason[refusal["reason"]], cause, refusal["device_name"])
    for shown in corpus["signed_out"]:
        cause = None if shown["cause"] is None else RevocationCause[shown["cause"]]
        assert shown["text"] == signed_out_text(cause, shown["device_name"])
    for case in corpus["cases"] + [shown for case in corpus["proof_cases"] for shown in case["presentations"]]:
        assert case["text"] == (None if case["expected"] == "VALID" else corpus["reasons"][case["expected"]])


@functools.cache
def _local_verifier(algorithm: str) -> TokenVerifier:
    corpus = _corpus()
    return TokenVerifier(
        KeySet.from_jwks(corpus["jwks"][algorithm]), issuer=corpus["issuer"], leeway=corpus["leeway"],
        clock=lambda: corpus["now"],
    )


@functools.cache
def _authority_validator(algorithm: Algorithm) -> Validator:
    corpus = _corpus()
    keyring = KeyRing([generate.load_keys()[algorithm.value]["own"]], algorithm)
    assert keyring.jwks_json == corpus["jwks"][algorithm.value]
    codec = TokenCodec(keyring, corpus["issuer"], corpus["leeway"], clock=lambda: corpus["now"])
    mirror = RevocationMirror()
    mirror.confirm(time.monotonic() + 3600)  # current for the whole test
    # No cache: every token is checked in full.
    return Validator(codec, mirror, "api", max_staleness=3600, cache_size=0, clock=lambda: corpus["now"])


def _local_verdict(case: dict[str, Any]) -> str:
    try:
        _local_verifier(case["algorithm"]).verify(generate.token_of(case), case["audience"])
    except InvalidToken as invalid:
        return invalid.reason.name
    return "VALID"


def _authority_verdict(case: dict[str, Any]) -> str:
    try:
        _authority_validator(Algorithm(case["algorithm"])).validate(generate.token_of(case), case["audience"])
    except InvalidToken as invalid:
        return invalid.reason.name
    return "VALID"


@pytest.mark.parametrize("verdict", [_local_verdict, _authority_verdict], ids=["local", "authority"])
def test_every_verifier_reaches_the_corpus_outcome(verdict: Any) -> None:
    outcomes = {case["name"]: verdict(case) for case in _corpus()["cases"]}
    expected = {case["name"]: case["expected"] for case in _corpus()["cases"]}
    assert outcomes == expected


# --- proof cases: one fresh verifier per case, its presentations in order ------------------

PROOF_CHECKS = frozenset({
    "size", "form", "typ", "alg", "jwk", "signature", "jti", "htm", "htu", "iat", "ath", "key", "replayed",
    "replay-cache-full", "unbound",
})


def _proof_checker(case: dict[str, Any]) -> ProofChecker:
    corpus = _corpus()
    size = case["replay_cache_size"]
    return ProofChecker(max_age=corpus["proof_max_age"], clock=lambda: corpus["now"],
                        **({} if size is None else {"replay_cache_size": size}))


def _presented(shown: dict[str, Any]) -> Proof | None:
    return None if shown["proof"] is None else Proof(shown["proof"], shown["http_method"], shown["http_uri"])


def _outcome(verify: Any, shown: dict[str, Any]) -> tuple[str, str | None]:
    try:
        verify(_presented(shown))
    except InvalidProof as invalid:
        return invalid.reason.name, invalid.check
    except InvalidToken as invalid:
        return invalid.reason.name, None
    return "VALID", None


def _local_proof_outcomes(case: dict[str, Any]) -> list[tuple[str, str | None]]:
    corpus = _corpus()
    verifier = TokenVerifier(
        KeySet.from_jwks(corpus["jwks"][case["algorithm"]]), issuer=corpus["issuer"], leeway=corpus["leeway"],
        clock=lambda: corpus["now"], proofs=_proof_checker(case),
    )
    return [_outcome(lambda proof: verifier.verify(case["token"], case["audience"], proof), shown)
            for shown in case["presentations"]]


def _expected_outcomes(case: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(shown["expected"], shown["check"]) for shown in case["presentations"]]


def test_the_local_verifier_reaches_every_proof_cases_outcomes() -> None:
    cases = _corpus()["proof_cases"]
    assert {case["name"]: _local_proof_outcomes(case) for case in cases} == {
        case["name"]: _expected_outcomes(case) for case in cases
    }


def test_the_authoritys_validator_reaches_every_proof_cases_outcomes() -> None:
    # The authority's validator takes a proof once the server passes one on (issue 13).
    if "proof" not in inspect.signature(Validator.validate).parameters:
        pytest.skip("the authority's Validator does not take a proof yet")
    corpus = _corpus()
    outcomes, expected = {}, {}
    for case in corpus["proof_cases"]:
        if case["replay_cache_size"] is not None:
            continue  # the authority's cache size is a setting of its own, tested there
        algorithm = Algorithm(case["algorithm"])
        keyring = KeyRing([generate.load_keys()[algorithm.value]["own"]], algorithm)
        codec = TokenCodec(keyring, corpus["issuer"], corpus["leeway"], clock=lambda: corpus["now"])
        mirror = RevocationMirror()
        mirror.confirm(time.monotonic() + 3600)
        validator = Validator(codec, mirror, "api", max_staleness=3600, cache_size=0, clock=lambda: corpus["now"])
        outcomes[case["name"]] = [
            _outcome(lambda proof: validator.validate(case["token"], case["audience"], proof=proof), shown)
            for shown in case["presentations"]
        ]
        expected[case["name"]] = _expected_outcomes(case)
    assert outcomes == expected


def test_uris_normalize_as_the_corpus_says() -> None:
    def normalized(uri: str) -> str | None:
        try:
            return normalize_uri(uri)
        except ValueError:
            return None

    uris = _corpus()["uris"]
    expected = {entry["uri"]: entry["normalized"] for entry in uris}
    assert {entry["uri"]: normalized(entry["uri"]) for entry in uris} == expected
    assert any(entry["normalized"] is None for entry in uris) and any(entry["normalized"] for entry in uris)


def _query_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(QUERIES.read_text())["cases"]
    return cases


@pytest.mark.parametrize("case", _query_cases(), ids=lambda case: case["name"])
def test_query_strings_are_read_as_the_shared_vectors_say(case: dict[str, Any]) -> None:
    # The decoding the refusal rests on, as the vectors write it down for the Node package.
    assert [name for name, _ in urllib.parse.parse_qsl(case["query"], keep_blank_values=True)] == case["names"]
    # As a str (WSGI) and as bytes (ASGI), with no Authorization header.
    for query in (case["query"], case["query"].encode("ascii")):
        answer = read_token([], query)
        assert isinstance(answer, Denial)
        if case["expected"] is None:
            assert answer.reason == "MISSING"
        else:
            assert answer.reason == "TOKEN_IN_QUERY"
            outcome = {"status": answer.status, "error": answer.error, "error_description": answer.description}
            assert outcome == case["expected"]


def test_query_vectors_refuse_and_admit() -> None:
    expected = [case["expected"] for case in _query_cases()]
    assert None in expected and any(outcome is not None for outcome in expected)
