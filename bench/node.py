"""The Node.js consumer package's local verifier (clients/node), in a node process of its
own: its rate cold (every token new) and warm (the same token), against bare
``jose.jwtVerify`` on the same tokens, all minted by the authority's codec. The cold
ratio is taken by CPU time (every thread of the node process), the warm rate by wall
clock.

``clients/node/bench/verify.js`` does the timing and prints one JSON line; this module
hands it the tokens and the JWK set and turns its answer into goals. Without Node.js the
goals are left out with a loud warning (and the run fails when ``CI`` is set).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.report import Goal, at_least

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clients" / "node"
WARM = "local verifier, warm (same token)"
COLD = "local verifier, cold (every token new)"
COLD_JOSE = "jose.jwtVerify, cold (every token new)"


def measure(workdir: Path, jwks_json: str, issuer: str, audience: str, leeway: float, warm_token: str,
            tokens: list[str], warm_calls: int, say: Any) -> tuple[dict[str, Any], list[Goal]]:
    """The Node loops' rates by name, and the issue's goals for them."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI"):
            raise RuntimeError("Node.js and npm are needed for the Node verifier's benchmark")
        say("WARNING: NO NODE.JS: THE NODE VERIFIER IS NOT BENCHMARKED")
        return {}, []
    subprocess.run([str(ROOT / "scripts" / "node-deps")], check=True, timeout=600)
    source = workdir / "node-verifier-input.json"
    source.write_text(json.dumps({"jwks": jwks_json, "issuer": issuer, "audience": audience, "leeway": leeway,
                                  "warm_token": warm_token, "tokens": tokens, "warm_calls": warm_calls}))
    result = subprocess.run(["node", "bench/verify.js", str(source)], cwd=PACKAGE, capture_output=True,
                            text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the Node verifier benchmark failed: {result.stderr[-2000:]}")
    rates: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    warm = rates[WARM]["per_second"]
    # Cold by CPU: jose verifies on libuv's worker threads and this package on the main
    # thread, and on a shared machine the two loops are scheduled unlike each other.
    cold, jose = rates[COLD]["per_cpu_second"], rates[COLD_JOSE]["per_cpu_second"]
    wall = rates[COLD]["per_second"] / rates[COLD_JOSE]["per_second"]
    return rates, [
        at_least("Node local verifier, warm", warm, 200_000, "/s",
                 note=f"bare jose.jwtVerify of the same token: {rates['jose.jwtVerify, warm (same token)']['per_second']:,.0f}/s"),
        at_least("Node local verifier, cold / bare jose.jwtVerify", cold / jose, 0.9,
                 note=f"by CPU: {cold:,.0f}/s against {jose:,.0f}/s; by wall clock {wall:.2f}x"),
    ]
