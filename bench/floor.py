"""The floor rows: the authority's calls against the bare grpc.aio server (bench/bare.py),
by server CPU per call in one run.

- warm ValidateToken against the bare server's health Check;
- cold ValidateToken against the model floor: the bare call plus a bare
  ``TokenVerifier.verify`` (the verification a token the authority has not seen costs),
  timed in this process in the same run;
- the authority's own health Check against the bare one (reported: what observing,
  counting and logging a call costs);
- the bare server on asyncio's own loop against the floor, which runs on uvloop as the
  authority does (reported: what the loop alone saves a bare call);
- cold ValidateToken against its floor measured in one server (reported): the bare
  server answering ValidateToken with nothing but a ``TokenVerifier.verify`` and a fixed
  answer (bench/bare.py). The model adds a verify timed here, in a tight loop, where the
  curve's tables and the verifier's code stay in the core's caches; in a server under
  load the gRPC work between two verifies most likely evicts them, and each costs more. The
  measured floor is what a Python gRPC service that does only the verification costs;
- warm and cold again, against the bare server with its load paced to the rate each
  reached (reported). A server's CPU per call depends on its rate: the more calls one
  wake of its event loop finds, the less each costs. The authority's calls cost more,
  so it serves fewer per second than the bare server and each costs more for that
  alone; the paced floor is the bare call's cost at the authority's own rate.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

from authority_client.verify import KeySet, TokenVerifier

from authority.config import Settings
from authority.tokens import TokenCodec
from bench.report import Goal, at_least

if TYPE_CHECKING:
    from bench.run import Run

# Goals of the issue, by server CPU per call.
WARM_TARGET = 0.85
COLD_TARGET = 0.85


def verify_seconds(codec: TokenCodec, settings: Settings, tokens: list[str]) -> float:
    """Mean seconds of a bare TokenVerifier.verify of these tokens: the verification the
    authority runs on a token it has not seen (authority/tokens.py), with no revocation check."""
    verifier = TokenVerifier(KeySet.from_jwks(codec.keyring.jwks_json), issuer=settings.issuer, leeway=settings.leeway)
    verify, audience = verifier.verify, settings.default_audience
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        for token in tokens:
            verify(token, audience)
        runs.append((time.perf_counter() - started) / len(tokens))
    return statistics.median(runs)


def against_floor(
    run: Run, t_verify: float, bare: str, health: str, warm: str, cold: str, bare_asyncio: str,
    bare_at_warm: str, bare_at_cold: str, cold_floor: str,
) -> list[Goal]:
    """The floor table's rows and goals: warm ValidateToken against the bare server, cold
    against the model floor (the bare call plus a TokenVerifier.verify), and, reported, the
    authority's own health Check and the bare server on asyncio's loop against the bare one,
    cold against the bare server verifying each token, and warm and cold against the bare
    server paced to their rates, all by server CPU per call."""
    cpu = run.cpu_per_call
    model = cpu(bare) + t_verify
    rows = [
        ("ValidateToken warm / bare floor", cpu(warm), cpu(bare), WARM_TARGET),
        ("ValidateToken cold / model floor (bare + TokenVerifier.verify)", cpu(cold), model, COLD_TARGET),
        ("authority health Check / bare floor", cpu(health), cpu(bare), None),
        ("bare server on asyncio's loop / bare floor", cpu(bare_asyncio), cpu(bare), None),
        ("ValidateToken cold / bare server verifying each token", cpu(cold), cpu(cold_floor), None),
        ("ValidateToken warm / bare floor paced to the warm rate", cpu(warm), cpu(bare_at_warm), None),
        ("ValidateToken cold / model floor paced to the cold rate", cpu(cold), cpu(bare_at_cold) + t_verify, None),
    ]
    # The same ratio in each round alone: a burst of other work on the machine shows as one
    # round out of line with the others.
    by_round = run.cpu_by_round
    bare_rounds = by_round.get(bare, [])
    round_ratios = {
        warm: [b / w for b, w in zip(bare_rounds, by_round.get(warm, [])) if w],
        cold: [(b + t_verify) / c for b, c in zip(bare_rounds, by_round.get(cold, [])) if c],
        health: [b / h for b, h in zip(bare_rounds, by_round.get(health, [])) if h],
        bare_asyncio: [b / a for b, a in zip(bare_rounds, by_round.get(bare_asyncio, [])) if a],
        cold_floor: [f / c for f, c in zip(by_round.get(cold_floor, []), by_round.get(cold, [])) if c],
        # Paced rounds run after the others: each pairs with the same round of its phase.
        bare_at_warm: [b / w for b, w in zip(by_round.get(bare_at_warm, []), by_round.get(warm, [])) if w],
        bare_at_cold: [(b + t_verify) / c for b, c in zip(by_round.get(bare_at_cold, []), by_round.get(cold, [])) if c],
    }
    goals = []
    table = run.rows("floor")
    phases = (warm, cold, health, bare_asyncio, cold_floor, bare_at_warm, bare_at_cold)
    for (name, spent, floor, target), phase in zip(rows, phases):
        ratio = floor / spent if spent else 0.0
        rounds = ", ".join(f"{r:.2f}" for r in round_ratios[phase])
        note = f"by server CPU per call, this run; each round alone: {rounds}"
        goal = at_least(name, ratio, target, note=note) if target else None
        table[name] = {"us_per_call": round(spent * 1e6, 1), "floor_us_per_call": round(floor * 1e6, 1),
                       "ratio": round(ratio, 3), "target": goal.target if goal else "reported",
                       "result": (goal.row()[3] if goal else "-"), "by_round": [round(r, 3) for r in round_ratios[phase]]}
        if goal:
            goals.append(goal)
    run.facts["model floor: bare call + TokenVerifier.verify"] = (
        f"{cpu(bare) * 1e6:.0f} + {t_verify * 1e6:.0f} = {model * 1e6:.0f} us of server CPU per call")
    run.facts["a verify in the bare server under load, against t_verify in a tight loop"] = (
        f"{(cpu(cold_floor) - cpu(bare)) * 1e6:.0f} against {t_verify * 1e6:.0f} us "
        f"(bare server verifying each token: {cpu(cold_floor) * 1e6:.0f} us per call)")
    return goals
