"""The benchmark run: every measurement side by side, then the report.

Order: the floor (a bare grpc.aio server serving health alone, bench/bare.py) beside the
authority on PostgreSQL (health, ValidateToken warm and cold, a bare PyJWT decode and a
bare TokenVerifier.verify), the baseline on the same database, the consumer package's local verifier
in this process, how soon a revocation is seen by a second replica and by a local-mode
consumer, the HTTP edge (ext_authz Check beside ValidateToken, HTTP through Envoy with and
without the authority; bench/edge.py), sign-ins on PostgreSQL and SQLite, ValidateToken
and SQLite sign-ins with ``--workers`` 1 and 2 beside the fsync ceiling (bench/workers.py),
then growth with 0 and more live revocations on a database of its own. Each server runs in its own process, and load
comes from ``workers`` more.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import jwt
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc
from cryptography.hazmat.primitives import serialization

from authority.config import Settings
from authority.keys import load_keyring
from authority.store import Store
from authority.tokens import AccessClaims, TokenCodec
from authority_client.proof import DeviceKey

from bench import consumer, edge, node, plot, previous, proofs, signins, snapshots, visibility, workers
from bench import floor as floor_row
from bench.bare import BareServer, Verifying
from bench.baseline import BaselineServer, create_revoked_table
from bench.load import PROOF_METHOD, PROOF_URI, Outcome, Phase, merge, run_phase, stderr_progress
from bench.memory import mirror_bytes
from bench.report import Goal, at_least, at_most, environment, load_average, render
from bench.servers import (
    BENCH_KEY_ENCRYPTION_KEY,
    Databases,
    ServedAuthority,
    add_revocations,
    cpu_seconds,
    driver_url,
    start_authority,
)

DEFAULT_POSTGRES = os.environ.get(
    "AUTHORITY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


BARE = "grpc.health Check, bare grpc.aio server (the floor)"
BARE_ASYNCIO = "grpc.health Check, bare grpc.aio server on asyncio's loop"
FLOOR = "grpc.health Check, authority"
WARM = "ValidateToken warm (same token)"
COLD = "ValidateToken cold (every token new)"
# The cold phase's floor measured in one server: the bare server, verifying each token.
COLD_FLOOR = "ValidateToken cold, bare grpc.aio server verifying each token (TokenVerifier.verify)"
# The floor again, its load paced to the rate the warm and the cold phase reached.
BARE_AT_WARM = "grpc.health Check, bare grpc.aio server, paced to the warm rate"
BARE_AT_COLD = "grpc.health Check, bare grpc.aio server, paced to the cold rate"
BOUND_COLD = "ValidateToken cold, device-bound token with its DPoP proof"
BASE_WARM = "baseline ValidateToken warm"
BASE_COLD = "baseline ValidateToken cold"
INTROSPECT = "POST /introspect warm (same token), HTTP"
# The main server's replay cache: room for the bound-token phases' proofs, all by one key.
BOUND_PHASE_SETTINGS = {"AUTHORITY_PROOF_REPLAY_CACHE_SIZE": "2000000"}
COLD_RATE_CEILING = 3_000  # calls per second a cold phase is given tokens for
# Phases drawn against the floor on the plot's first panel.
FLOOR_PANEL = (BARE, BARE_ASYNCIO, BARE_AT_WARM, BARE_AT_COLD, COLD_FLOOR, FLOOR, WARM, COLD, BASE_WARM, BASE_COLD,
               INTROSPECT, edge.VALIDATE, edge.CHECK)
# --only: the measurements a run can be narrowed to.
ONLY = ("validation", "sign-ins")


@dataclasses.dataclass(frozen=True)
class Size:
    """How big a run is."""

    seconds: float
    workers: int
    concurrency: int
    min_cold_tokens: int
    sign_in_subjects: int
    growth: tuple[int, ...]
    baseline_revoked: int
    decode_samples: int
    # In-process loops of the consumer's local verifier: cold tokens (over every pass)
    # and the local validator's calls of the same token per pass.
    local_cold_tokens: int
    local_warm_calls: int
    # Revocations timed until another replica and a local-mode consumer see them.
    visibility_samples: int
    # Phases compared with each other run in this many interleaved rounds, so that a
    # burst of other work on the machine lands on all of them alike.
    rounds: int
    # IssueToken timed while this many snapshot readers read a log of this many live
    # revocations, for this long (bench/snapshots.py).
    snapshot_readers: int = 50
    snapshot_revocations: int = 20_000
    snapshot_seconds: float = 10.0


FULL = Size(seconds=4.0, workers=2, concurrency=16, min_cold_tokens=4_000, sign_in_subjects=400,
            growth=(0, 100_000, 1_000_000), baseline_revoked=100_000, decode_samples=3_000,
            local_cold_tokens=9_000, local_warm_calls=300_000, visibility_samples=200, rounds=3)
TINY = Size(seconds=0.4, workers=2, concurrency=4, min_cold_tokens=200, sign_in_subjects=20,
            growth=(0, 1_000, 10_000), baseline_revoked=1_000, decode_samples=200,
            local_cold_tokens=600, local_warm_calls=20_000, visibility_samples=20, rounds=1,
            snapshot_readers=5, snapshot_revocations=1_000, snapshot_seconds=1.0)


@dataclasses.dataclass(frozen=True)
class Spec:
    """A phase to compare: its requests for each round, and the server process to charge."""

    name: str
    target: str
    rpc: str
    items: Callable[[int], list[str]]  # round -> requests
    server_pid: int
    once: bool = False
    # Calls per second (bench.load.Phase.rate); 0: as fast as the calls in flight allow.
    rate: float = 0.0


class Run:
    """One benchmark run's state: the size, the progress output, the results so far."""

    def __init__(self, size: Size, workdir: Path, server_log_level: str, say: Callable[[str], None],
                 sign_in_baseline: str = "", only: str = "") -> None:
        self.size = size
        # Empty: every measurement; "validation": the floor and remote validation alone.
        self.only = only
        # A git ref whose authority the sign-in rate is compared with; empty: no comparison.
        self.sign_in_baseline = sign_in_baseline
        self.workdir = workdir
        self.server_log_level = server_log_level
        self.say = say
        self.throughput: dict[str, dict[str, Any]] = {}
        self.facts: dict[str, str] = {}
        self.raw: dict[str, Any] = {}
        self.in_process: dict[str, dict[str, Any]] = {}
        self.visibility: dict[str, dict[str, Any]] = {}
        # Tables registered with bench.report.table, by key: name -> numbers.
        self.tables: dict[str, dict[str, Any]] = {}
        # Every phase's latencies (seconds, sorted), for the plot.
        self.latencies: dict[str, list[float]] = {}
        # An interleaved phase's server CPU seconds per call in each round, in order.
        self.cpu_by_round: dict[str, list[float]] = {}

    def rows(self, key: str) -> dict[str, Any]:
        """The rows of the report's table ``key`` (see :func:`bench.report.table`)."""
        return self.tables.setdefault(key, {})

    def load(self, name: str, target: str, rpc: str, items: list[str], server_pid: int, once: bool = False,
             seconds: float | None = None) -> Outcome:
        """Runs one load phase; also charges the server process's CPU time to its calls."""
        self.say(f"{name} ...")
        size = self.size
        phase = Phase(name, target, rpc, items, size.workers, size.concurrency, seconds or size.seconds, once)
        cpu_before = cpu_seconds(server_pid)
        outcome = run_phase(phase, self.say)
        # Includes the workers' warm-up calls (a few dozen): negligible in a full run.
        cpu = cpu_seconds(server_pid) - cpu_before
        self.throughput[name] = {**outcome.summary(), "server_cpu_us_per_call": round(cpu / max(outcome.calls, 1) * 1e6, 1)}
        self.latencies[name] = outcome.latencies
        self.say(f"  {name}: {outcome.rate:,.0f}/s, p50 {outcome.percentile(50) * 1000:.3f} ms, "
                 f"p99 {outcome.percentile(99) * 1000:.3f} ms, {outcome.errors} errors")
        return outcome

    def interleaved(self, specs: list[Spec]) -> dict[str, Outcome]:
        """Runs every spec once per round, round after round, and merges each one's rounds."""
        runs: dict[str, list[Outcome]] = {spec.name: [] for spec in specs}
        cpu: dict[str, float] = dict.fromkeys(runs, 0.0)
        for number in range(self.size.rounds):
            for spec in specs:
                self.say(f"{spec.name} (round {number + 1} of {self.size.rounds}) ...")
                size = self.size
                phase = Phase(spec.name, spec.target, spec.rpc, spec.items(number), size.workers,
                              size.concurrency, size.seconds, spec.once, spec.rate)
                before = cpu_seconds(spec.server_pid)
                outcome = run_phase(phase, self.say)
                runs[spec.name].append(outcome)
                # Includes the workers' warm-up calls (a few dozen): negligible in a full run.
                spent = cpu_seconds(spec.server_pid) - before
                cpu[spec.name] += spent
                self.cpu_by_round.setdefault(spec.name, []).append(spent / max(outcome.calls, 1))
        merged = {}
        for name, outcomes in runs.items():
            outcome = merge(name, outcomes)
            self.throughput[name] = {
                **outcome.summary(), "server_cpu_us_per_call": round(cpu[name] / max(outcome.calls, 1) * 1e6, 1)
            }
            self.say(f"  {name}: {outcome.rate:,.0f}/s, p50 {outcome.percentile(50) * 1000:.3f} ms, "
                     f"p99 {outcome.percentile(99) * 1000:.3f} ms, {outcome.errors} errors")
            merged[name] = outcome
            self.latencies[name] = outcome.latencies
        return merged

    def cpu_per_call(self, name: str) -> float:
        """Server CPU seconds per call in phase ``name``."""
        return float(self.throughput[name]["server_cpu_us_per_call"]) / 1e6

    def start(self, url: str, name: str, http: bool = False, env: dict[str, str] | None = None) -> ServedAuthority:
        self.say(f"starting authority ({name}) ...")
        return start_authority(url, self.workdir, name, self.server_log_level, http, env=env)


def _always(token: str) -> Callable[[int], list[str]]:
    return lambda _: [token]


def _always_items(items: list[str]) -> Callable[[int], list[str]]:
    return lambda _: items


async def _stub_call(target: str, method: str, request: Any) -> Any:
    async with grpc.aio.insecure_channel(target) as channel:
        return await getattr(authority_pb2_grpc.TokenAuthorityStub(channel), method)(request, timeout=30)


async def _sign_in_all(target: str, pairs: list[tuple[str, str]]) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = authority_pb2_grpc.TokenAuthorityStub(channel)
        for start in range(0, len(pairs), 32):
            await asyncio.gather(*(
                stub.IssueToken(pb.IssueTokenRequest(subject=s, device_id=d), timeout=30)
                for s, d in pairs[start : start + 32]
            ))


async def _codec(database_url: str, settings: Settings) -> TokenCodec:
    store = Store.open(database_url)
    try:
        # The servers' key, opened with the key-encryption key they were started with.
        keyring = await load_keyring(
            store, settings.signing_algorithm, time.time(), base64.b64decode(BENCH_KEY_ENCRYPTION_KEY)
        )
    finally:
        await store.close()
    return TokenCodec(keyring, settings.issuer, settings.leeway)


def _mint(codec: TokenCodec, settings: Settings, count: int) -> list[str]:
    """Tokens the authority would accept, each new: signed with its key, for sessions it
    never revoked (validation reads no session table, so none need exist)."""
    now = int(time.time())
    tokens = []
    for n in range(count):
        claims = AccessClaims(
            subject=f"bench-user-{n}", device_id="bench-device", session_id=secrets.token_urlsafe(16),
            token_id=secrets.token_urlsafe(16), issuer=settings.issuer, audience=settings.default_audience,
            issued_at=now, expires_at=now + 3600, extra={},
        )
        tokens.append(codec.sign(claims))
    return tokens


def _decode_seconds(codec: TokenCodec, settings: Settings, tokens: list[str]) -> float:
    """Mean seconds of a bare PyJWT decode (signature and standard claims) of these tokens."""
    key = codec.keyring.signing_key_at(time.time())
    algorithm = key.algorithm.value
    decode = jwt.decode
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        for token in tokens:
            decode(token, key.public_key, algorithms=[algorithm], audience=settings.default_audience,
                   issuer=settings.issuer)
        runs.append((time.perf_counter() - started) / len(tokens))
    return statistics.median(runs)


async def measure(run: Run, postgres_url: str) -> dict[str, Any]:
    size, settings = run.size, Settings()
    databases = Databases(postgres_url)
    run.raw["postgresql"] = await databases.server_version()
    goals: list[Goal] = []
    try:
        if run.only == "sign-ins":
            return {"goals": [dataclasses.asdict(goal) for goal in await _sign_ins_alone(run, databases)]}
        main_url = await databases.create("main")
        run.say("starting the floor (a bare grpc.aio server: health alone, no interceptors, no logging) ...")
        bare = BareServer()
        bare_asyncio: BareServer | None = None
        try:
            bare_asyncio = BareServer(uvloop=False)
            # One device key signs every proof of the bound-token phases, more of them within
            # proof_max_age than its default tenth of the replay cache allows one key.
            authority = run.start(main_url, "postgresql", http=True, env=BOUND_PHASE_SETTINGS)
        except BaseException:
            bare.stop()
            if bare_asyncio is not None:
                bare_asyncio.stop()
            raise
        assert bare_asyncio is not None
        baseline: BaselineServer | None = None
        bare_verifying: BareServer | None = None
        try:
            codec = await _codec(main_url, settings)
            bare_verifying = BareServer(verifying=Verifying(
                codec.keyring.jwks_json, settings.issuer, settings.default_audience, settings.leeway))
            issued = await _stub_call(authority.target, "IssueToken",
                                      pb.IssueTokenRequest(subject="bench-warm", device_id="bench"))
            warm_token = issued.access_token

            run.say("starting the baseline (PyJWT + a revoked-token lookup on PostgreSQL) ...")
            await create_revoked_table(driver_url(main_url), size.baseline_revoked)
            public_pem = codec.keyring.signing_key_at(time.time()).public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            algorithm = codec.keyring.signing_key_at(time.time()).algorithm.value
            baseline = BaselineServer(driver_url(main_url), public_pem, algorithm,
                                      settings.issuer, settings.default_audience)

            # Enough that a cold phase never runs out at the rates this machine reaches; if
            # one does, it ends early and its rate is still calls over time.
            cold_count = max(size.min_cold_tokens, int(COLD_RATE_CEILING * size.seconds))
            run.say(f"minting {2 * size.rounds * cold_count:,} tokens for the cold runs ...")
            cold_tokens = [_mint(codec, settings, cold_count) for _ in range(size.rounds)]
            base_cold_tokens = [_mint(codec, settings, cold_count) for _ in range(size.rounds)]
            device = DeviceKey.generate()
            bound_tokens = [proofs.mint_bound(codec, settings, device, cold_count) for _ in range(size.rounds)]
            await _check_bound(authority.target, device, codec, settings)
            run.say("timing a bare PyJWT decode ...")
            t_decode = _decode_seconds(codec, settings, cold_tokens[0][: size.decode_samples])
            run.facts["t_decode (bare PyJWT decode, EdDSA)"] = f"{t_decode * 1e6:.1f} us"
            run.say("timing a bare TokenVerifier.verify ...")
            t_verify = floor_row.verify_seconds(codec, settings, cold_tokens[0][: size.decode_samples])
            run.facts["t_verify (bare TokenVerifier.verify, EdDSA)"] = f"{t_verify * 1e6:.1f} us"

            pid, target = authority.process.pid, authority.target
            results = run.interleaved([
                Spec(BARE, bare.target, "health", lambda _: ["-"], bare.pid),
                Spec(BARE_ASYNCIO, bare_asyncio.target, "health", lambda _: ["-"], bare_asyncio.pid),
                Spec(FLOOR, target, "health", lambda _: ["-"], pid),
                Spec(WARM, target, "validate", lambda _: [warm_token], pid),
                Spec(COLD_FLOOR, bare_verifying.target, "validate", lambda r: cold_tokens[r], bare_verifying.pid,
                     once=True),
                Spec(COLD, target, "validate", lambda r: cold_tokens[r], pid, once=True),
                # Proofs signed as the round starts: each is good for one call, for 60 s.
                Spec(BOUND_COLD, target, "validate-bound", lambda r: proofs.with_proofs(device, bound_tokens[r]), pid,
                     once=True),
                Spec(BASE_WARM, baseline.target, "validate", lambda _: [warm_token], baseline.pid),
                Spec(BASE_COLD, baseline.target, "validate", lambda r: base_cold_tokens[r], baseline.pid, once=True),
                Spec(INTROSPECT, authority.http_url, "introspect", lambda _: [warm_token], pid),
            ])
            baseline.stop()
            baseline = None
            floor, warm, cold = results[BARE], results[WARM], results[COLD]
            # A server's CPU per call falls as its rate rises (each wake of its loop finds
            # more calls), so the floor is measured again at the rates the authority reached.
            results.update(run.interleaved([
                Spec(BARE_AT_WARM, bare.target, "health", lambda _: ["-"], bare.pid, rate=warm.rate),
                Spec(BARE_AT_COLD, bare.target, "health", lambda _: ["-"], bare.pid, rate=cold.rate),
            ]))
            bare.stop()
            bare_asyncio.stop()
            bare_verifying.stop()
            base_warm, base_cold = results[BASE_WARM], results[BASE_COLD]
            # Reported, not a goal: HTTP/1.1 and JSON against HTTP/2 and protobuf, same server.
            run.facts["/introspect / ValidateToken, warm, same server"] = (
                f"{results[INTROSPECT].rate / warm.rate:.2f}x "
                f"(by server CPU per call: {run.cpu_per_call(WARM) / run.cpu_per_call(INTROSPECT):.2f}x)"
            )
            model_floor = 1 / (1 / floor.rate + t_verify)
            run.facts["cold model floor by rate 1/(1/bare + t_verify)"] = f"{model_floor:,.0f}/s"
            run.facts["by rate (load and server share the cores): warm / bare, cold / model floor"] = (
                f"{warm.rate / floor.rate:.2f}x, {cold.rate / model_floor:.2f}x")

            # Against the floor by server CPU per call: what the server can do when the load
            # generators do not share its two cores. Against the baseline too (its
            # PostgreSQL's CPU is not counted, which flatters the baseline).
            cpu = run.cpu_per_call
            goals += floor_row.against_floor(run, t_verify, BARE, FLOOR, WARM, COLD, BARE_ASYNCIO,
                                             BARE_AT_WARM, BARE_AT_COLD, COLD_FLOOR)
            if run.only == "validation":
                return {"goals": [dataclasses.asdict(goal) for goal in goals]}
            goals += [
                at_least("ValidateToken warm / baseline warm", warm.rate / base_warm.rate, 3,
                         note=f"by server CPU per call: {cpu(BASE_WARM) / cpu(WARM):.2f}x (baseline without PostgreSQL's CPU)"),
                at_least("ValidateToken cold / baseline cold", cold.rate / base_cold.rate, 1.8,
                         note=f"by server CPU per call: {cpu(BASE_COLD) / cpu(COLD):.2f}x (baseline without PostgreSQL's CPU)"),
            ]
            goals.append(at_least(
                "ValidateToken cold: device-bound with its proof / bearer, by server CPU per call",
                cpu(COLD) / cpu(BOUND_COLD), 0.75,
                note=f"by rate: {results[BOUND_COLD].rate / cold.rate:.2f}x "
                     f"({results[BOUND_COLD].rate:,.0f}/s against {cold.rate:,.0f}/s)",
            ))
            goals += _local_verifier(run, authority, codec, settings, warm_token)
            goals += _visibility(run, authority, main_url, settings)
            goals += edge.measure(run, authority, warm_token)
            pg_sign_ins = await _sign_ins(run, authority, "PostgreSQL")
            goals.append(await _under_snapshot_readers(run, authority, main_url, "PostgreSQL"))
        finally:
            bare.stop()
            bare_asyncio.stop()
            if bare_verifying is not None:
                bare_verifying.stop()
            if baseline is not None:
                baseline.stop()
            authority.stop()
        sqlite_url = f"sqlite+aiosqlite:///{run.workdir / 'bench.db'}"
        sqlite = run.start(sqlite_url, "sqlite")
        try:
            await _sign_ins(run, sqlite, "SQLite")
            goals.append(await _under_snapshot_readers(run, sqlite, sqlite_url, "SQLite"))
        finally:
            sqlite.stop()
        goals.append(at_least("IssueToken (replacing a device) on PostgreSQL", pg_sign_ins.rate, 1000, "/s"))
        goals += await workers.measure(run)
        goals += await signins.measure(run, databases, run.throughput[BARE]["server_cpu_us_per_call"])
        if run.sign_in_baseline:
            goals += await _sign_in_comparison(run, databases)
        goals += await _growth(run, databases)
    finally:
        await databases.drop_all()
    return {"goals": [dataclasses.asdict(goal) for goal in goals]}


def _local_verifier(run: Run, authority: ServedAuthority, codec: TokenCodec, settings: Settings,
                    warm_token: str) -> list[Goal]:
    """The consumer package's local verifier in this process, against a bare PyJWT decode."""
    size = run.size
    run.say(f"minting {size.local_cold_tokens:,} tokens for the local verifier ...")
    tokens = _mint(codec, settings, size.local_cold_tokens)
    key = codec.keyring.signing_key_at(time.time())
    run.say("timing the consumer's local verifier in-process (local Validator, TokenVerifier, PyJWT) ...")
    rates = consumer.measure(authority.target, settings.issuer, settings.default_audience, settings.leeway,
                             key.public_key, key.algorithm.value, warm_token, tokens, size.local_warm_calls)
    for name, rate in rates.items():
        run.in_process[name] = rate.summary()
        run.say(f"  {name}: {rate.per_second:,.0f}/s")
    warm = rates[consumer.WARM_VALIDATOR].per_second
    cold = rates[consumer.COLD_VALIDATOR].per_second
    pyjwt = rates[consumer.COLD_PYJWT].per_second
    verifier = rates[consumer.COLD_VERIFIER].per_second
    run.say("timing the local verifier with proofs (TokenVerifier + ProofChecker) ...")
    device = DeviceKey.generate()
    bound = proofs.local_rates(codec, settings, tokens, proofs.mint_bound(codec, settings, device, len(tokens)), device)
    for name, rate in bound.items():
        run.in_process[name] = rate.summary()
        run.say(f"  {name}: {rate.per_second:,.0f}/s")
    run.facts["local verifier: bound token with its proof / bearer token, cold"] = (
        f"{bound[proofs.LOCAL_BOUND].per_second / bound[proofs.LOCAL_BEARER].per_second:.2f}x"
    )
    run.say("timing the Node.js local verifier against bare jose.jwtVerify (clients/node) ...")
    node_rates, node_goals = node.measure(run.workdir, codec.keyring.jwks_json, settings.issuer,
                                          settings.default_audience, settings.leeway, warm_token, tokens,
                                          size.local_warm_calls, run.say)
    for name, outcome in node_rates.items():
        run.in_process[f"Node {name}"] = {"calls": outcome["calls"], "per_second": round(outcome["per_second"], 1),
                                          "us_per_call": round(1e6 / outcome["per_second"], 2),
                                          "per_cpu_second": round(outcome["per_cpu_second"], 1)}
        run.say(f"  Node {name}: {outcome['per_second']:,.0f}/s ({outcome['per_cpu_second']:,.0f} per CPU second)")
    return node_goals + [
        at_least("consumer local verifier, warm", warm, 100_000, "/s",
                 note=f"bare TokenVerifier.verify of the same token: {rates[consumer.WARM_VERIFIER].per_second:,.0f}/s"),
        at_least("consumer local verifier, cold / bare PyJWT decode", cold / pyjwt, 0.9,
                 note=f"{cold:,.0f}/s against {pyjwt:,.0f}/s; bare TokenVerifier.verify {verifier / pyjwt:.2f}x"),
    ]


async def _check_bound(target: str, device: DeviceKey, codec: TokenCodec, settings: Settings) -> None:
    """A bound token and its proof as the load sends them validate: a phase of refusals
    would measure nothing (a refusal is an answer, not an error the load would count)."""
    [item] = proofs.with_proofs(device, proofs.mint_bound(codec, settings, device, 1))
    token, proof = item.split(" ", 1)
    request = pb.ValidateTokenRequest(
        token=token, proof=pb.ProofOfPossession(proof=proof, http_method=PROOF_METHOD, http_uri=PROOF_URI)
    )
    answer = await _stub_call(target, "ValidateToken", request)
    if not answer.valid:
        raise RuntimeError(f"a bound token with its proof did not validate: reason {answer.reason}")


def _ms_summary(delays: list[float]) -> dict[str, Any]:
    outcome = Outcome("", len(delays), 0, 0.0, delays)
    return {"samples": len(delays), "p50_ms": round(outcome.percentile(50) * 1000, 3),
            "p99_ms": round(outcome.percentile(99) * 1000, 3), "max_ms": round(max(delays) * 1000, 3)}


def _visibility(run: Run, authority: ServedAuthority, url: str, settings: Settings) -> list[Goal]:
    """Revocations through one replica, timed until another replica and a consumer see them."""
    replica = run.start(url, "postgresql-replica")
    try:
        run.say(f"timing {run.size.visibility_samples} revocations until another replica and a consumer see them ...")
        delays = visibility.measure(authority.target, replica.target, settings.issuer, settings.default_audience,
                                    settings.leeway, run.size.visibility_samples)
    finally:
        replica.stop()
    replica_name = "revoked on replica A -> ValidateToken on replica B refuses"
    consumer_name = "revoked on replica A -> local-mode consumer following B refuses"
    run.visibility[replica_name] = _ms_summary(delays.replica)
    run.visibility[consumer_name] = _ms_summary(delays.consumer)
    for name in (replica_name, consumer_name):
        run.say(f"  {name}: p50 {run.visibility[name]['p50_ms']:.2f} ms, p99 {run.visibility[name]['p99_ms']:.2f} ms")
    how = ("polled in one tight loop from RevokeToken's return: ValidateToken on B over loopback, "
           "and the consumer's Validator.validate in-process")
    return [
        at_most("revocation visible on another replica, p99", run.visibility[replica_name]["p99_ms"], 50, " ms",
                note=how),
        at_most("revocation visible to a local-mode consumer, p99", run.visibility[consumer_name]["p99_ms"], 100,
                " ms", note="same loop; the consumer follows WatchRevocations from B, not the replica revoked through"),
    ]


async def _sign_ins_alone(run: Run, databases: Databases) -> list[Goal]:
    """--only sign-ins: the floor, then the PostgreSQL sign-in measurements (and the
    comparison with ``--sign-in-baseline``)."""
    run.say("starting the floor (a bare grpc.aio server: health alone, no interceptors, no logging) ...")
    bare = BareServer()
    try:
        run.interleaved([Spec(BARE, bare.target, "health", lambda _: ["-"], bare.pid)])
    finally:
        bare.stop()
    goals = await signins.measure(run, databases, run.throughput[BARE]["server_cpu_us_per_call"])
    if run.sign_in_baseline:
        goals += await _sign_in_comparison(run, databases)
    return goals


async def _sign_in_comparison(run: Run, databases: Databases) -> list[Goal]:
    """The same sign-in load on this version and on ``--sign-in-baseline``, each on a fresh
    PostgreSQL database, in interleaved rounds."""
    tree, sha = previous.export(run.sign_in_baseline, run.workdir / "previous")
    label = f"{run.sign_in_baseline} ({sha[:10]})"
    run.say(f"comparing sign-ins with {label} ...")
    servers = {
        "this version": run.start(await databases.create("signin_now"), "sign-in-now"),
        label: start_authority(await databases.create("signin_before"), run.workdir, "sign-in-before",
                               run.server_log_level, source=tree),
    }
    try:
        specs = []
        for name, server in servers.items():
            subjects = [f"bench-compare-{secrets.token_hex(3)}-{n}" for n in range(run.size.sign_in_subjects)]
            await _sign_in_all(server.target, [(s, "device-b") for s in subjects])
            items = [f"{s} device-a" for s in subjects] + [f"{s} device-b" for s in subjects]
            specs.append(Spec(f"IssueToken replacing a device, PostgreSQL, {name}", server.target, "issue",
                              _always_items(items), server.process.pid))
        results = run.interleaved(specs)
    finally:
        for server in servers.values():
            server.stop()
    now, before = (results[spec.name] for spec in specs)
    cpu_now, cpu_before = (run.cpu_per_call(spec.name) for spec in specs)
    run.raw["sign_in_baseline"] = {"ref": run.sign_in_baseline, "commit": sha}
    return [at_least(f"IssueToken rate / the same on {label}", now.rate / before.rate, 0.9,
                     note=f"{now.rate:,.0f}/s against {before.rate:,.0f}/s; by server CPU per call: "
                          f"{cpu_before / cpu_now:.2f}x")]


async def _sign_ins(run: Run, authority: ServedAuthority, store: str) -> Outcome:
    """Sign-ins that each replace the subject's other device, from the workers."""
    subjects = [f"bench-{store.lower()}-{secrets.token_hex(3)}-{n}" for n in range(run.size.sign_in_subjects)]
    run.say(f"signing {len(subjects)} subjects in on a first device ({store}) ...")
    await _sign_in_all(authority.target, [(s, "device-b") for s in subjects])
    # Each subject alternates between two devices, so every call signs the other out.
    items = [f"{s} device-a" for s in subjects] + [f"{s} device-b" for s in subjects]
    return run.load(f"IssueToken replacing a device, {store}", authority.target, "issue", items, authority.process.pid)


async def _under_snapshot_readers(run: Run, authority: ServedAuthority, url: str, store: str) -> Goal:
    size = run.size
    run.say(f"IssueToken under {size.snapshot_readers} snapshot readers of {size.snapshot_revocations:,} "
            f"revocations ({store}) ...")
    await snapshots.fill_log(url, size.snapshot_revocations)
    goal = await snapshots.issue_latency(
        authority, store, size.snapshot_readers, size.snapshot_seconds, run.raw.setdefault("snapshot_readers", {})
    )
    run.say(f"  {goal.name}: {goal.measured:.1f} ms ({goal.note})")
    return goal


async def _growth(run: Run, databases: Databases) -> list[Goal]:
    """Servers on databases holding 0 and more live revocations, measured side by side."""
    sizes = run.size.growth
    expires_at = time.time() + 3 * 3600
    urls: dict[int, str] = {}
    for count in sizes:
        urls[count] = await databases.create(f"growth{count}")
        run.start(urls[count], f"growth-schema-{count}").stop()  # creates the schema and a key
        run.say(f"inserting {count:,} live revocations ...")
        seconds = await add_revocations(urls[count], count, expires_at)
        run.say(f"  inserted in {seconds:.1f} s")
    served: dict[int, ServedAuthority] = {}
    try:
        tokens: dict[int, str] = {}
        for count in sizes:  # one at a time, so each start-up has the machine to itself
            served[count] = run.start(urls[count], f"growth-{count}")
            issued = await _stub_call(served[count].target, "IssueToken",
                                      pb.IssueTokenRequest(subject="bench-growth", device_id="laptop"))
            tokens[count] = issued.access_token
        names = {count: f"ValidateToken warm, {count:,} live revocations" for count in sizes}
        results = run.interleaved([
            Spec(names[count], served[count].target, "validate", _always(tokens[count]), served[count].process.pid)
            for count in sizes
        ])
        rss = {count: served[count].rss_bytes() for count in sizes}
        startup = {count: served[count].startup_seconds for count in sizes}
    finally:
        for server in served.values():
            server.stop()
    p50s = {count: results[names[count]].percentile(50) for count in sizes}
    cpus = {count: run.cpu_per_call(names[count]) for count in sizes}
    largest, smallest = max(sizes), min(sizes)
    run.say(f"measuring the mirror's memory with {largest:,} live revocations ...")
    entries, held = mirror_bytes(urls[largest])
    per_entry = held / entries if entries else 0.0
    rss_per_entry = (rss[largest] - rss[smallest]) / (largest - smallest) if largest > smallest else 0.0
    run.facts["mirror memory per live revocation (tracemalloc)"] = f"{per_entry:.0f} bytes ({entries:,} entries)"
    run.facts["server RSS growth per live revocation"] = f"{rss_per_entry:.0f} bytes"
    for count in sizes:
        run.facts[f"start-up with {count:,} live revocations"] = f"{startup[count]:.2f} s"
    goals = [
        at_most(f"ValidateToken p50 with {count:,} / with {smallest:,} live revocations",
                p50s[count] / p50s[smallest], 1.1, "×",
                note=f"by server CPU per call: {cpus[count] / cpus[smallest]:.2f}x")
        for count in sizes if count != smallest
    ]
    goals.append(at_most("memory per live revocation (mirror, tracemalloc)", per_entry, 150, " B"))
    goals.append(at_most(f"start-up with {largest:,} live revocations", startup[largest], 5, " s"))
    run.raw["growth"] = {"p50_seconds": p50s, "rss_bytes": rss, "startup_seconds": startup,
                         "mirror_entries": entries, "mirror_bytes": held}
    return goals


def main(argv: list[str] | None = None) -> int:
    """``python -m bench``: runs the benchmark, prints the table, writes the JSON report."""
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long run that only checks the benchmark works")
    parser.add_argument("--out", default="bench-report.json", help="where to write the JSON report")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES,
                        help="a PostgreSQL the benchmark may create and drop databases on")
    parser.add_argument("--sign-in-baseline", default="", metavar="GIT_REF",
                        help="also compare the sign-in rate with the authority at this git ref (for example the "
                             "commit before a change), in one run")
    parser.add_argument("--server-log-level", default="INFO",
                        help="the authority's log level during the run (INFO writes one line per RPC)")
    parser.add_argument("--only", choices=ONLY, default="",
                        help="run only these measurements (validation: the floor and remote validation; "
                             "sign-ins: the floor and the PostgreSQL sign-ins)")
    args = parser.parse_args(argv)
    size = TINY if args.tiny else FULL
    command = ["scripts/bench", *(argv if argv is not None else sys.argv[1:])]
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="authority-bench-") as workdir:
        run = Run(size, Path(workdir), args.server_log_level.upper(), stderr_progress, args.sign_in_baseline,
                  args.only)
        try:
            outcome = asyncio.run(measure(run, args.postgres_url))
        except (OSError, RuntimeError) as error:
            print(f"scripts/bench: {error}", file=sys.stderr)
            return 1
    report = {
        "environment": environment(command, run.raw.get("postgresql", "unknown")),
        "size": {**dataclasses.asdict(size), "server_log_level": run.server_log_level},
        "throughput": run.throughput,
        "in_process": run.in_process,
        "visibility": run.visibility,
        **run.tables,
        "facts": run.facts,
        "load_average": {"before": load_before, "after": load_average()},
        **outcome,
        "raw": run.raw,
    }
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(render(report))
    print(f"\nJSON report: {args.out}", file=sys.stderr)
    if plot.available():
        picture = plot.write(Path(args.out).with_suffix(".png"), run.latencies, FLOOR_PANEL,
                             f"token-authority latency distributions, {report['environment']['date']}")
        print(f"latency plot: {picture}", file=sys.stderr)
    else:
        print("no latency plot: matplotlib is not installed (pip install -e '.[bench]')", file=sys.stderr)
    return 0
