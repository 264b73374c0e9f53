"""Prometheus metrics, scraped over HTTP from a real server as Prometheus would."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
from collections.abc import Callable

import grpc
import pytest
from authority_client.v1 import authority_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from authority.config import Settings
from authority.errors import ConfigError
from tests.conftest import Running, StartServer
from tests.support.calls import new_subject, rpc_error, sign_in, validate
from tests.support.proxy import TcpProxy

TA = "authority.v1.TokenAuthority/"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(running: Running) -> Samples:
    """Every sample the server's /metrics endpoint shows, keyed by name and labels."""
    assert running.server.metrics_http is not None
    url = f"http://127.0.0.1:{running.server.metrics_http.port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def eventually(running: Running, check: Callable[[Samples], bool], within: float = 5.0) -> Samples:
    """The first scrape that passes ``check``; the last one if none does within ``within``."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        samples = await scrape(running)
        if check(samples) or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.05)


@pytest.fixture
async def served(start_server: StartServer) -> Running:
    return await start_server(metrics_listen="127.0.0.1:0")


async def test_rpcs_are_counted_by_method_and_final_status(served: Running) -> None:
    stub = served.stub
    await sign_in(stub, new_subject(), "laptop")
    await rpc_error(stub.ValidateToken(pb.ValidateTokenRequest(token="")))  # aborted: INVALID_ARGUMENT
    await rpc_error(stub.IssueToken(pb.IssueTokenRequest(subject="", device_id="laptop")))
    undecodable = served.channel.unary_unary(f"/{TA}ValidateToken")
    await rpc_error(undecodable(b"\x0a\x02\xff\xfe"))  # a string field that is not UTF-8

    samples = await scrape(served)

    assert value(samples, "authority_rpcs_total", method=TA + "IssueToken", code="OK") == 1
    assert value(samples, "authority_rpcs_total", method=TA + "IssueToken", code="INVALID_ARGUMENT") == 1
    assert value(samples, "authority_rpcs_total", method=TA + "ValidateToken", code="INVALID_ARGUMENT") == 2
    assert value(samples, "authority_rpc_duration_seconds_count", method=TA + "IssueToken") == 2
    assert value(samples, "authority_rpc_duration_seconds_bucket", method=TA + "ValidateToken", le="+Inf") == 2


async def test_health_checks_are_counted_too(served: Running) -> None:
    health = health_pb2_grpc.HealthStub(served.channel)
    await health.Check(health_pb2.HealthCheckRequest())

    samples = await scrape(served)

    assert value(samples, "authority_rpcs_total", method="grpc.health.v1.Health/Check", code="OK") == 1


async def test_a_cancelled_stream_is_counted_when_it_ends(served: Running) -> None:
    subject = new_subject()
    await sign_in(served.stub, subject, "laptop")
    await sign_in(served.stub, subject, "phone")  # one revocation for the stream to carry
    stream = served.stub.WatchRevocations(pb.WatchRevocationsRequest())
    await asyncio.wait_for(stream.read(), timeout=5)
    stream.cancel()

    samples = await eventually(
        served, lambda s: value(s, "authority_rpcs_total", method=TA + "WatchRevocations", code="CANCELLED") == 1
    )

    assert value(samples, "authority_rpcs_total", method=TA + "WatchRevocations", code="CANCELLED") == 1
    assert value(samples, "authority_rpc_duration_seconds_count", method=TA + "WatchRevocations") == 1


async def test_validations_are_counted_by_outcome_and_sign_ins_by_outcome(served: Running) -> None:
    stub, subject = served.stub, new_subject()
    laptop = await sign_in(stub, subject, "laptop")
    await validate(stub, laptop.access_token)
    phone = await sign_in(stub, subject, "phone")  # replaces the laptop
    await validate(stub, laptop.access_token)
    await validate(stub, "not-a-token")
    await validate(stub, phone.access_token, audience="someone-else")
    await rpc_error(stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id="tablet", policy=pb.SESSION_POLICY_REJECT)))

    samples = await scrape(served)

    validations = {
        outcome: value(samples, "authority_validations_total", outcome=outcome)
        for outcome in ("valid", "revoked", "malformed", "wrong_audience", "expired")
    }
    assert validations == {"valid": 1, "revoked": 1, "malformed": 1, "wrong_audience": 1, "expired": 0}
    sign_ins = {outcome: value(samples, "authority_sign_ins_total", outcome=outcome) for outcome in ("issued", "replaced", "rejected")}
    assert sign_ins == {"issued": 1, "replaced": 1, "rejected": 1}


async def test_gauges_show_live_revocations_keys_pool_and_feed_lag(served: Running) -> None:
    stub, subject = served.stub, new_subject()
    await sign_in(stub, subject, "laptop")
    await sign_in(stub, subject, "phone")
    signing_kid = served.server.authority.codec.keyring.signing_key_at(time.time()).kid
    mirror = served.server.authority.mirror
    for _ in range(100):  # the log follower reads this process's own revocation right after it commits
        if mirror.sequence:
            break
        await asyncio.sleep(0.05)

    samples = await scrape(served)

    assert value(samples, "authority_live_revocations") == 1
    ages = [
        (dict(labels), age) for (name, labels), age in samples.items() if name == "authority_signing_key_age_seconds"
    ]
    assert [labels["kid"] for labels, _ in ages] == [signing_kid]
    assert ages[0][0]["signing"] == "true" and ages[0][1] >= 0
    assert value(samples, "authority_store_pool_size") >= 1
    # The log follower's listening connection (PostgreSQL) and a poll may be out right now.
    assert 0 <= value(samples, "authority_store_pool_checked_out") <= 2
    assert 0 <= value(samples, "authority_revocation_feed_lag_seconds") < served.server.authority.settings.max_staleness
    assert value(samples, "authority_revocation_log_sequence") == served.server.authority.mirror.sequence > 0
    assert value(samples, "authority_revocation_feed_lag_sequences") == 0
    assert value(samples, "process_resident_memory_bytes") > 0


async def test_high_availability_gauges_show_the_host_the_primary_and_the_last_write_and_read(
    served: Running,
) -> None:
    await sign_in(served.stub, new_subject(), "laptop")
    samples = await eventually(served, lambda s: value(s, "authority_store_primary") == 1)

    hosts = [dict(labels)["host"] for (name, labels), v in samples.items() if name == "authority_store_host" and v]
    assert len(hosts) == 1 and hosts[0]
    assert 0 <= value(samples, "authority_store_seconds_since_write") < 5
    poll = served.server.authority.settings.revocation_poll_interval
    assert 0 <= value(samples, "authority_revocation_log_seconds_since_read") < poll + 5
    assert value(samples, "authority_store_reconnects_total") == 0


async def test_live_sessions_are_counted_in_the_store(served: Running) -> None:
    stub = served.stub
    await sign_in(stub, new_subject(), "laptop")
    subject = new_subject()
    await sign_in(stub, subject, "laptop")
    await sign_in(stub, subject, "phone")  # the laptop's session ends
    metrics, authority = served.server.metrics, served.server.authority

    counting = asyncio.create_task(metrics.count_live_sessions_forever(authority, interval=0.05))
    try:
        samples = await eventually(served, lambda s: value(s, "authority_live_sessions") == 2)
    finally:
        counting.cancel()

    assert value(samples, "authority_live_sessions") == 2


async def test_two_servers_in_one_process_keep_their_own_counts(served: Running, start_server: StartServer) -> None:
    other = await start_server(metrics_listen="127.0.0.1:0")
    await sign_in(other.stub, new_subject(), "laptop")

    mine, theirs = await scrape(served), await scrape(other)

    assert value(mine, "authority_sign_ins_total", outcome="issued") == 0
    assert value(theirs, "authority_sign_ins_total", outcome="issued") == 1


async def test_metrics_are_off_unless_configured(authority: Running) -> None:
    assert authority.server.metrics_http is None


async def test_stopping_the_server_frees_the_metrics_port(start_server: StartServer, settings: Settings) -> None:
    running = await start_server(metrics_listen="127.0.0.1:0")
    assert running.server.metrics_http is not None
    port = running.server.metrics_http.port

    await running.server.stop(None)

    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


async def test_a_taken_metrics_port_stops_the_server_naming_the_option(
    served: Running, start_server: StartServer
) -> None:
    assert served.server.metrics_http is not None
    taken = served.server.metrics_http.port

    with pytest.raises(ConfigError) as raised:
        await start_server(metrics_listen=f"127.0.0.1:{taken}")

    assert raised.value.option == "metrics_listen"


@pytest.mark.parametrize("bad", ["nowhere", "127.0.0.1:", "127.0.0.1:99999", ":9100"])
def test_an_invalid_metrics_address_names_the_option(bad: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings(metrics_listen=bad)

    assert raised.value.option == "metrics_listen"


@pytest.mark.parametrize("store", ["postgres"])
async def test_store_errors_are_counted(start_server: StartServer, postgres_url: str) -> None:
    url = make_url(postgres_url)
    proxy = await TcpProxy.start(url.host or "127.0.0.1", url.port or 5432)
    try:
        running = await start_server(
            metrics_listen="127.0.0.1:0",
            database_url=url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
        )
        proxy.cut()
        error = await rpc_error(running.stub.IssueToken(pb.IssueTokenRequest(subject=new_subject(), device_id="x"), timeout=15))
        samples = await scrape(running)
        # The follower's next read fails too: no primary in use any more.
        down = await eventually(running, lambda s: value(s, "authority_store_primary") == 0, within=10)
        proxy.resume()
        deadline = time.monotonic() + 15
        while True:  # back: the next sign-in reconnects
            try:
                await sign_in(running.stub, new_subject(), "laptop")
                break
            except grpc.aio.AioRpcError as failed:
                assert failed.code() is grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline
        back = await scrape(running)
    finally:
        await proxy.close()

    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert value(samples, "authority_rpcs_total", method=TA + "IssueToken", code="UNAVAILABLE") == 1
    assert sum(v for (name, _), v in samples.items() if name == "authority_store_errors_total") >= 1
    assert value(down, "authority_store_primary") == 0
    assert not [v for (name, _), v in down.items() if name == "authority_store_host"]
    assert value(back, "authority_store_reconnects_total") >= 1
