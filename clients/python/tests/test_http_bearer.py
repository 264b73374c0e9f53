"""The header rules every HTTP surface shares: each bad way of presenting a token has its
status (RFC 6750 §3.1), its challenge and its text from the one table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from authority_client.http.bearer import (
    DPOP_ALGS,
    MAX_AUTHORIZATION_BYTES,
    Denial,
    Presented,
    challenge,
    invalid_token,
    read_token,
    unavailable,
)
from authority_client.reasons import MISSING_TEXT, UNAVAILABLE_TEXT, RequestProblem, problem_text, reason_text
from authority_client.proof import PROOF_ALGORITHMS, Proof
from authority_client.verify import InvalidReason

TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


@pytest.mark.parametrize("value", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN} ", f" Bearer {TOKEN}\t"])
def test_the_scheme_is_case_insensitive_and_spaces_around_the_token_are_tolerated(value: str) -> None:
    assert read_token([value]) == Presented("Bearer", TOKEN)


def test_bytes_values_are_read_like_text() -> None:
    assert read_token([f"Bearer {TOKEN}".encode()], b"page=2") == Presented("Bearer", TOKEN)


@pytest.mark.parametrize("headers", [[], [f"Basic {TOKEN}"], [f"Bearerx {TOKEN}"]])
def test_no_bearer_token_gets_the_bare_challenge(headers: list[str]) -> None:
    denial = read_token(headers)
    assert isinstance(denial, Denial)
    assert (denial.status, denial.www_authenticate, denial.reason) == (401, 'Bearer realm="token-authority"', "MISSING")
    assert json.loads(denial.body) == {"error": "unauthorized", "error_description": MISSING_TEXT}


@pytest.mark.parametrize(
    ("headers", "query", "problem"),
    [
        ([f"Bearer {TOKEN}", f"Bearer {TOKEN}"], "", RequestProblem.SEVERAL_HEADERS),
        ([f"Bearer {TOKEN}, Bearer {TOKEN}"], "", RequestProblem.SEVERAL_HEADERS),  # joined by a proxy
        ([f"Bearer {TOKEN},Basic abc"], "", RequestProblem.SEVERAL_HEADERS),
        (["Bearer"], "", RequestProblem.EMPTY_TOKEN),
        (["Bearer    "], "", RequestProblem.EMPTY_TOKEN),
        (["Bearer " + "a" * MAX_AUTHORIZATION_BYTES], "", RequestProblem.OVERSIZED),
        ([f"Bearer {TOKEN} extra"], "", RequestProblem.MALFORMED_HEADER),
        ([f"Bearer {TOKEN},junk"], "", RequestProblem.MALFORMED_HEADER),
        (['Bearer "quoted"'], "", RequestProblem.MALFORMED_HEADER),
        (["Bearer t\u00f6ken"], "", RequestProblem.MALFORMED_HEADER),
        (["B(a)d " + TOKEN], "", RequestProblem.MALFORMED_HEADER),
        ([""], "", RequestProblem.MALFORMED_HEADER),
        ([], f"access_token={TOKEN}", RequestProblem.TOKEN_IN_QUERY),
        ([f"Bearer {TOKEN}"], f"page=1&access_token={TOKEN}", RequestProblem.TOKEN_IN_QUERY),
        ([], "access_token=", RequestProblem.TOKEN_IN_QUERY),
        ([f"Bearer {TOKEN}"], f"access%5Ftoken={TOKEN}", RequestProblem.TOKEN_IN_QUERY),  # the same name, escaped
        ([f"Bearer {TOKEN}"], f"q=1&ACCESS_TOKEN={TOKEN}", RequestProblem.TOKEN_IN_QUERY),  # in another case
    ],
)
def test_a_bad_way_of_presenting_the_token_is_an_invalid_request(
    headers: list[str], query: str, problem: RequestProblem
) -> None:
    denial = read_token(headers, query)
    assert isinstance(denial, Denial)
    assert denial.status == 400
    assert denial.reason == problem.name
    assert denial.www_authenticate == (
        f'Bearer realm="token-authority", error="invalid_request", error_description="{problem_text(problem)}"'
    )
    assert json.loads(denial.body) == {"error": "invalid_request", "error_description": problem_text(problem)}
    # The token never shows in what is answered.
    assert TOKEN not in repr(denial) and TOKEN.encode() not in denial.body


def test_a_query_that_only_mentions_access_token_is_not_refused() -> None:
    assert read_token([f"Bearer {TOKEN}"], "q=access_token_docs&access_tokens=1") == Presented("Bearer", TOKEN)


PROOF_REASONS = (InvalidReason.PROOF_REQUIRED, InvalidReason.BAD_PROOF)


@pytest.mark.parametrize("reason", [reason for reason in InvalidReason if reason not in PROOF_REASONS])
def test_a_bad_token_gets_invalid_token_with_the_reason_text(reason: InvalidReason) -> None:
    denial = invalid_token(reason)
    assert denial.status == 401
    assert denial.www_authenticate == (
        f'Bearer realm="token-authority", error="invalid_token", error_description="{reason_text(reason)}"'
    )
    assert json.loads(denial.body) == {"error": "invalid_token", "error_description": reason_text(reason)}
    assert ("content-type", "application/json") in denial.headers


def test_a_dpop_token_refused_gets_the_dpop_challenge_with_the_proof_algorithms() -> None:
    denial = invalid_token(InvalidReason.REVOKED, "DPoP")
    assert denial.www_authenticate == (
        f'DPoP algs="EdDSA ES256 RS256", error="invalid_token", error_description="{reason_text(InvalidReason.REVOKED)}"'
    )
    assert set(DPOP_ALGS.split()) == PROOF_ALGORITHMS


@pytest.mark.parametrize("scheme", ["Bearer", "DPoP"])
def test_a_bad_proof_is_invalid_dpop_proof_and_a_missing_one_invalid_token_both_with_the_dpop_challenge(
    scheme: str,
) -> None:
    # Even a bound token sent as Bearer is told the scheme it needs (RFC 9449 §7.1).
    bad, required = invalid_token(InvalidReason.BAD_PROOF, scheme), invalid_token(InvalidReason.PROOF_REQUIRED, scheme)
    assert (bad.status, bad.error, bad.reason) == (401, "invalid_dpop_proof", "BAD_PROOF")
    assert bad.www_authenticate == (
        f'DPoP algs="{DPOP_ALGS}", error="invalid_dpop_proof", '
        f'error_description="{reason_text(InvalidReason.BAD_PROOF)}"'
    )
    assert (required.status, required.error, required.reason) == (401, "invalid_token", "PROOF_REQUIRED")
    assert required.www_authenticate == (
        f'DPoP algs="{DPOP_ALGS}", error="invalid_token", '
        f'error_description="{reason_text(InvalidReason.PROOF_REQUIRED)}"'
    )


PROOF = "eyJ0eXAiOiJkcG9wK2p3dCJ9.eyJqdGkiOiIxIn0.c2ln"


@pytest.mark.parametrize("value", [f"DPoP {TOKEN}", f"dpop {TOKEN}", f" DPOP  {TOKEN} "])
def test_a_dpop_token_is_read_with_its_one_proof(value: str) -> None:
    presented = read_token([value], dpop=[PROOF])
    assert presented == Presented("DPoP", TOKEN, PROOF)
    assert isinstance(presented, Presented)
    assert presented.proof_for("GET", "https://app.test/orders") == Proof(PROOF, "GET", "https://app.test/orders")
    # Neither the token nor the proof is ever in a repr (a log line).
    assert TOKEN not in repr(presented) and PROOF not in repr(presented)


def test_a_bearer_token_ignores_a_dpop_header() -> None:
    presented = read_token([f"Bearer {TOKEN}"], dpop=[PROOF, PROOF])
    assert presented == Presented("Bearer", TOKEN)
    assert isinstance(presented, Presented) and presented.proof_for("GET", "https://app.test/") is None


@pytest.mark.parametrize(
    ("dpop", "reason"),
    [
        ([], InvalidReason.PROOF_REQUIRED),
        ([PROOF, PROOF], InvalidReason.BAD_PROOF),
        ([f"{PROOF}, {PROOF}"], InvalidReason.BAD_PROOF),  # joined by a proxy or a WSGI server
    ],
)
def test_a_dpop_token_needs_exactly_one_proof(dpop: list[str], reason: InvalidReason) -> None:
    denial = read_token([f"DPoP {TOKEN}"], dpop=dpop)
    assert isinstance(denial, Denial)
    assert (denial.status, denial.reason) == (401, reason.name)
    assert denial.www_authenticate is not None and denial.www_authenticate.startswith(f'DPoP algs="{DPOP_ALGS}"')
    assert PROOF not in denial.body.decode() and TOKEN not in denial.body.decode()


def test_a_malformed_dpop_header_is_an_invalid_request_with_the_dpop_challenge() -> None:
    denial = read_token(["DPoP"], dpop=[PROOF])
    assert isinstance(denial, Denial)
    assert denial.status == 400
    assert denial.www_authenticate == (
        f'DPoP algs="{DPOP_ALGS}", error="invalid_request", '
        f'error_description="{problem_text(RequestProblem.EMPTY_TOKEN)}"'
    )


def test_a_description_cannot_break_out_of_its_quotes() -> None:
    assert challenge("Bearer", "invalid_token", 'say "hi"\\\n') == 'Bearer error="invalid_token", error_description="say ?hi???"'


def test_unavailable_is_503_with_retry_after_and_no_challenge() -> None:
    denial = unavailable(3)
    assert denial.status == 503
    assert denial.www_authenticate is None
    assert ("retry-after", "3") in denial.headers
    assert not any(name == "www-authenticate" for name, _ in denial.headers)
    assert json.loads(denial.body)["error_description"] == UNAVAILABLE_TEXT


def test_every_request_problem_has_its_own_text() -> None:
    texts = {problem_text(problem) for problem in RequestProblem}
    assert len(texts) == len(RequestProblem)


def test_the_middlewares_import_no_web_framework() -> None:
    # Frameworks are optional extras: importing the middlewares must not need one.
    code = (
        "import sys, authority_client.http.asgi, authority_client.http.wsgi, authority_client.http.bearer;"
        "bad = [m for m in ('starlette', 'fastapi', 'flask', 'werkzeug', 'django', 'uvicorn') if m in sys.modules];"
        "print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
