"""The benchmark at its tiny size: it runs end to end and writes a well-formed report.

No timing is asserted: on a shared two-core machine the numbers only mean something in a
full run (scripts/bench).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import POSTGRES_URL, _require_postgres

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(330)  # the run itself may take its subprocess timeout, 300 s, on a busy machine
async def test_the_tiny_benchmark_runs_and_writes_a_well_formed_report(tmp_path: Path) -> None:
    await _require_postgres()
    out = tmp_path / "report.json"

    result = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--out", str(out), "--postgres-url", POSTGRES_URL,
         "--sign-in-baseline", "HEAD"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["environment"]["command"].startswith("scripts/bench --tiny")
    assert set(report["load_average"]) == {"before", "after"}
    assert {"cpu", "cores", "memory", "os"} <= set(report["environment"]["machine"])
    assert {"python", "grpcio", "PyJWT", "postgresql", "commit"} <= set(report["environment"]["versions"])
    names = set(report["throughput"])
    for expected in ("grpc.health Check, bare grpc.aio server (the floor)", "grpc.health Check, authority",
                     "grpc.health Check, bare grpc.aio server on asyncio's loop", "ValidateToken warm (same token)",
                     "ValidateToken cold (every token new)",
                     "ValidateToken cold, bare grpc.aio server verifying each token (TokenVerifier.verify)",
                     "baseline ValidateToken warm",
                     "baseline ValidateToken cold", "IssueToken replacing a device, PostgreSQL",
                     "IssueToken replacing a device, SQLite", "ValidateToken warm, 10,000 live revocations",
                     "ext_authz Check warm (same token)", "ValidateToken warm, beside Check",
                     "HTTP GET through Envoy alone", "HTTP GET through Envoy + authority (ext_authz)",
                     "POST /introspect warm (same token), HTTP",
                     "ValidateToken cold, device-bound token with its DPoP proof",
                     "IssueToken replacing a device, PostgreSQL, this version",
                     "ValidateToken warm, --workers 1", "ValidateToken warm, --workers 2",
                     "IssueToken replacing a device, SQLite, --workers 2",
                     "grpc.health Check, bare grpc.aio server, paced to the warm rate",
                     "grpc.health Check, bare grpc.aio server, paced to the cold rate"):
        assert expected in names
    for name, phase in report["throughput"].items():
        assert phase["calls"] > 0 and phase["errors"] == 0, (name, phase)
        assert 0 < phase["p50_ms"] <= phase["p99_ms"], (name, phase)
    goals = {goal["name"]: goal for goal in report["goals"]}
    for name in ("ValidateToken warm / bare floor", "ValidateToken cold / model floor (bare + TokenVerifier.verify)"):
        assert goals[name]["passed"] in (True, False) and goals[name]["measured"] > 0, name
    floor = report["floor"]
    assert set(floor) == {"ValidateToken warm / bare floor", "ValidateToken cold / model floor (bare + TokenVerifier.verify)",
                          "authority health Check / bare floor", "bare server on asyncio's loop / bare floor",
                          "ValidateToken cold / bare server verifying each token",
                          "ValidateToken warm / bare floor paced to the warm rate",
                          "ValidateToken cold / model floor paced to the cold rate"}
    assert all(row["us_per_call"] > 0 and row["floor_us_per_call"] > 0 and row["ratio"] > 0 for row in floor.values())
    assert "t_verify (bare TokenVerifier.verify, EdDSA)" in report["facts"]
    assert "a verify in the bare server under load, against t_verify in a tight loop" in report["facts"]
    # The latency plot beside the JSON report.
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert goals["ext_authz Check / ValidateToken (same server, same token)"]["measured"] > 0
    assert "HTTP through Envoy + authority / Envoy alone" in report["facts"]
    assert goals["memory per live revocation (mirror, tracemalloc)"]["measured"] > 0
    compared = [name for name in goals if name.startswith("IssueToken rate / the same on HEAD")]
    assert len(compared) == 1 and goals[compared[0]]["measured"] > 0
    assert report["raw"]["growth"]["mirror_entries"] >= 10_000
    assert report["facts"]["/introspect / ValidateToken, warm, same server"].endswith(")")
    assert goals["ValidateToken cold: device-bound with its proof / bearer, by server CPU per call"]["measured"] > 0
    assert report["in_process"]["TokenVerifier.verify + ProofChecker, cold bound token with its proof"]["calls"] > 0
    assert [goal["name"] for goal in report["goals"] if goal["passed"] is None] == []  # every goal measured
    sign_ins = report["sign_ins"]
    assert set(sign_ins) == {"1 replica(s)", "2 replica(s)"}
    assert all(row["sign_ins_per_second"] > 0 and row["errors"] == 0 for row in sign_ins.values()), sign_ins
    assert {"live_sessions", "write", "_tokens", "total"} <= set(report["sign_in_stages"])
    assert goals["IssueToken replacing a device (1 replica) / bare grpc.aio call, by server CPU"]["measured"] > 0
    for store in ("PostgreSQL", "SQLite"):
        assert goals[f"IssueToken p99 under 5 snapshot readers, {store}"]["measured"] > 0
        assert report["raw"]["snapshot_readers"][store]["errors"] == {}
    for name in ("consumer local verifier, warm", "consumer local verifier, cold / bare PyJWT decode",
                 "revocation visible on another replica, p99", "revocation visible to a local-mode consumer, p99",
                 "Node local verifier, warm", "Node local verifier, cold / bare jose.jwtVerify"):
        assert goals[name]["measured"] > 0, name
    loops = report["in_process"]
    for kind in ("cold (every token new)", "warm (same token)"):
        for checker in ("bare PyJWT jwt.decode", "TokenVerifier.verify", "local Validator.validate",
                        "Node local verifier", "Node jose.jwtVerify"):
            assert loops[f"{checker}, {kind}"]["per_second"] > 0
    for seen in report["visibility"].values():
        assert seen["samples"] == 20 and 0 < seen["p50_ms"] <= seen["p99_ms"] <= seen["max_ms"]
    assert "ValidateToken warm / bare floor" in result.stdout  # the readable table
    assert "against the floor, by server CPU per call" in result.stdout
    assert "revocation visibility" in result.stdout and "in-process" in result.stdout
    assert "ValidateToken cold" in result.stderr  # progress while it ran


def _only(what: str, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """A tiny run narrowed with ``--only what``: what it printed, and its report."""
    out = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--only", what, "--out", str(out), "--postgres-url", POSTGRES_URL],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, json.loads(out.read_text())


def test_a_paced_phase_sends_no_call_before_its_turn() -> None:
    from bench.bare import BareServer
    from bench.load import Phase, run_phase

    bare = BareServer()
    try:
        paced = run_phase(Phase("paced", bare.target, "health", ["-"], 2, 8, 2.0, rate=100), lambda _: None)
        unpaced = run_phase(Phase("unpaced", bare.target, "health", ["-"], 2, 8, 2.0), lambda _: None)
    finally:
        bare.stop()
    # The n-th call of each worker waits for started + n * (workers / rate), and none is
    # sent at or past the deadline: at most rate x seconds calls, however fast the server.
    assert 0 < paced.calls <= 200 and paced.errors == 0
    assert unpaced.calls > 200


async def test_the_verifying_bare_server_answers_by_the_verification_alone() -> None:
    import grpc
    from authority_client.v1 import authority_pb2, authority_pb2_grpc

    from authority.config import Algorithm
    from authority.keys import KeyRing, generate_key
    from authority.tokens import AccessClaims, TokenCodec
    from bench.bare import BareServer, Verifying

    now = time.time()
    keyring = KeyRing([generate_key(Algorithm.EDDSA, now - 60, now - 60)], Algorithm.EDDSA)
    codec = TokenCodec(keyring, "bench-issuer", 30)
    claims = AccessClaims(subject="s", device_id="d", session_id="sid", token_id="jti", issuer="bench-issuer",
                          audience="bench-audience", issued_at=int(now), expires_at=int(now) + 600, extra={})
    token = codec.sign(claims)
    bare = BareServer(verifying=Verifying(keyring.jwks_json, "bench-issuer", "bench-audience", 30))
    try:
        async with grpc.aio.insecure_channel(bare.target) as channel:
            validate = authority_pb2_grpc.TokenAuthorityStub(channel).ValidateToken

            async def valid(token: str) -> bool:
                answer = await validate(authority_pb2.ValidateTokenRequest(token=token), timeout=30)
                return bool(answer.valid)

            # Another issuer's token, and a forged signature, are refused: the verify runs.
            other = TokenCodec(keyring, "another-issuer", 30).sign(dataclasses.replace(claims, issuer="another-issuer"))
            forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
            assert [await valid(token), await valid(other), await valid(forged)] == [True, False, False]
    finally:
        bare.stop()


@pytest.mark.timeout(300)
async def test_only_validation_measures_the_floor_rows_alone(tmp_path: Path) -> None:
    await _require_postgres()

    _, report = _only("validation", tmp_path)

    assert "IssueToken replacing a device, PostgreSQL" not in report["throughput"]
    assert {"grpc.health Check, bare grpc.aio server (the floor)", "ValidateToken warm (same token)",
            "ValidateToken cold (every token new)"} <= set(report["throughput"])
    assert [goal["name"] for goal in report["goals"]] == [
        "ValidateToken warm / bare floor", "ValidateToken cold / model floor (bare + TokenVerifier.verify)"]


@pytest.mark.timeout(300)
async def test_only_sign_ins_measures_the_floor_and_the_postgresql_sign_ins_alone(tmp_path: Path) -> None:
    await _require_postgres()

    printed, report = _only("sign-ins", tmp_path)

    assert set(report["throughput"]) == {"grpc.health Check, bare grpc.aio server (the floor)"}
    assert [goal["name"] for goal in report["goals"]] == [
        "IssueToken replacing a device (1 replica) / bare grpc.aio call, by server CPU"]
    assert "PostgreSQL sign-ins (each replaces a device)" in printed
    # The paced comparison is reported, never a goal: "N.NNx (spent us against bare us at R calls/s)".
    paced = report["facts"]["IssueToken (1 replica) / bare call paced to the sign-in rate, by server CPU"]
    assert re.fullmatch(r"\d+\.\d\dx \([\d,]+ us against [\d,]+ us at [\d,]+ calls/s\)", paced), paced
    assert float(paced.split("x")[0]) > 0
