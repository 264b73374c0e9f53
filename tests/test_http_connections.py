"""The HTTP port bounds what a client can hold open: a request's head, its body, a TLS
handshake and an answer the client stops reading must come within ``http_read_timeout``,
an idle keep-alive connection lasts as long, and past ``http_max_connections`` (handshakes
in progress counted) a new connection gets 503 and is closed. The gRPC port keeps
answering throughout, on both event loops; an open-file limit too low for the cap
lowers it, and says so."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authority.http import connections
from tests.conftest import Running, StartServer
from tests.support.pki import CertificateAuthority

READ_TIMEOUT = 1.0
# Every wait here is bounded: far longer than any timer under test, never a pass by luck.
DEADLINE = 20.0
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
pytestmark = pytest.mark.both_loops  # the loop `authority serve` runs on, and asyncio's


@pytest.fixture
def store() -> str:
    """Connections are the listener's business, not the store's: one store is enough."""
    return "sqlite"


async def _connect(running: Running) -> Connection:
    assert running.server.http is not None
    return await asyncio.open_connection("127.0.0.1", running.server.http.port)


async def _answer(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """One HTTP/1.1 answer: its status line, headers (lower-case names) and body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    status, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), DEADLINE)
    return status, headers, body


async def _closed_after(reader: asyncio.StreamReader, since: float) -> float:
    """Seconds from ``since`` until the server closed the connection; it must send nothing more."""
    rest = await asyncio.wait_for(reader.read(), DEADLINE)
    assert rest == b"", rest[:80]
    return time.monotonic() - since


def _sample(running: Running, name: str) -> float | None:
    return running.server.metrics.registry.get_sample_value(name)


async def _until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + DEADLINE
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return condition()


async def _tls_server(start_server: StartServer, tmp_path: Path, **overrides: object) -> Running:
    cert, key = CertificateAuthority("test CA").issue("authority", ips=["127.0.0.1"]).write(tmp_path, "server")
    return await start_server(http_listen="127.0.0.1:0", tls_cert_file=str(cert), tls_key_file=str(key), **overrides)


async def _health(running: Running) -> None:
    answer = await health_pb2_grpc.HealthStub(running.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def _get_healthz(connection: Connection) -> str:
    reader, writer = connection
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    status, _, _ = await _answer(reader)
    return status


async def test_a_half_sent_head_is_closed_at_the_read_timeout_however_it_trickles(start_server: StartServer) -> None:
    running = await start_server(http_listen="127.0.0.1:0", http_read_timeout=READ_TIMEOUT)
    started = time.monotonic()  # before the server's timer can start
    reader, writer = await _connect(running)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")

    async def trickle() -> None:  # a header line every 0.2 s: never silent, never done
        for _ in range(int(DEADLINE / 0.2)):
            await asyncio.sleep(0.2)
            writer.write(b"X-Slow: 1\r\n")

    trickling = asyncio.create_task(trickle())
    try:
        await _health(running)  # the gRPC port answers meanwhile
        elapsed = await _closed_after(reader, started)
    finally:
        trickling.cancel()
        writer.close()
    assert READ_TIMEOUT <= elapsed < DEADLINE
    assert await _get_healthz(await _connect(running)) == "HTTP/1.1 200 OK"


async def test_an_idle_keep_alive_connection_is_closed_at_the_read_timeout(start_server: StartServer) -> None:
    running = await start_server(http_listen="127.0.0.1:0", http_read_timeout=READ_TIMEOUT)
    reader, writer = await _connect(running)

    asked = time.monotonic()  # the server's timer restarts once it has answered
    assert await _get_healthz((reader, writer)) == "HTTP/1.1 200 OK"
    elapsed = await _closed_after(reader, asked)

    writer.close()
    assert READ_TIMEOUT <= elapsed < DEADLINE


async def test_a_body_that_does_not_come_in_time_gets_408_and_the_connection_closes(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start_server(http_listen="127.0.0.1:0", http_read_timeout=READ_TIMEOUT)
    started = time.monotonic()
    reader, writer = await _connect(running)
    writer.write(b"POST /introspect HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntoken=eyJ")

    status, headers, body = await _answer(reader)
    elapsed = await _closed_after(reader, started)

    writer.close()
    assert status == "HTTP/1.1 408 Request Timeout"
    assert headers["connection"].lower() == "close"
    assert json.loads(body) == {"error": "invalid_request",
                                "error_description": "the body did not arrive within http_read_timeout"}
    # Closed after a short linger for the answer to arrive, not aiohttp's 10 s one.
    assert READ_TIMEOUT <= elapsed < READ_TIMEOUT + connections.REFUSAL_LINGER_SECONDS + 5
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_a_body_declared_too_large_is_413_at_once_not_after_the_read_timeout(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Longer than every wait here: an answer only after it would fail the test.
    running = await start_server(http_listen="127.0.0.1:0", http_read_timeout=DEADLINE * 2)
    reader, writer = await _connect(running)
    writer.write(b"POST /introspect HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\ntoken=eyJ")

    status, _, body = await _answer(reader)

    writer.close()
    assert status == "HTTP/1.1 413 Request Entity Too Large"
    assert json.loads(body) == {"error": "invalid_request",
                                "error_description": "the body is larger than the endpoint takes"}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_a_tls_handshake_that_does_not_come_is_closed_at_the_read_timeout(
    start_server: StartServer, tmp_path: Path
) -> None:
    running = await _tls_server(start_server, tmp_path, http_read_timeout=READ_TIMEOUT)
    started = time.monotonic()
    reader, writer = await _connect(running)  # plain TCP: no ClientHello ever comes

    elapsed = await _closed_after(reader, started)

    writer.close()
    assert READ_TIMEOUT <= elapsed < DEADLINE


async def test_past_the_connection_limit_a_new_connection_gets_503_until_one_closes(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start_server(http_listen="127.0.0.1:0", http_max_connections=2)
    held = [await _connect(running), await _connect(running)]
    for connection in held:  # answered, so the server holds both
        assert await _get_healthz(connection) == "HTTP/1.1 200 OK"

    refused = []
    for _ in range(2):
        reader, writer = await _connect(running)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # the answer still arrives whole
        refused.append((await _answer(reader), await _closed_after(reader, time.monotonic())))
        writer.close()
    await _health(running)

    for (status, headers, body), _ in refused:
        assert status == "HTTP/1.1 503 Service Unavailable"
        assert headers["retry-after"] == "1" and headers["connection"] == "close"
        assert json.loads(body)["error"] == "temporarily_unavailable"
    warnings = [r.getMessage() for r in caplog.records if "http_max_connections" in r.getMessage()]
    assert len(warnings) == 1 and "(2)" in warnings[0], warnings  # once, not per connection
    registry = running.server.metrics.registry  # and counted each time, beside the two held
    assert registry.get_sample_value("authority_http_connections_refused_total") == 2
    assert registry.get_sample_value("authority_http_connections") == 2

    held[0][1].close()
    deadline = time.monotonic() + DEADLINE
    while True:  # the server sees the close soon after; until then the answer is 503
        status = await _get_healthz(await _connect(running))
        if status == "HTTP/1.1 200 OK" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert status == "HTTP/1.1 200 OK"
    held[1][1].close()


async def test_tls_handshakes_in_progress_count_toward_the_limit(start_server: StartServer, tmp_path: Path) -> None:
    running = await _tls_server(start_server, tmp_path, http_max_connections=2, http_read_timeout=60.0)
    silent = [await _connect(running), await _connect(running)]  # no ClientHello: handshakes pending
    assert await _until(lambda: _sample(running, "authority_http_connections") == 2)

    reader, writer = await _connect(running)  # past the limit: closed at once, not after 60 s
    assert await _closed_after(reader, time.monotonic()) < DEADLINE
    writer.close()
    assert _sample(running, "authority_http_connections_refused_total") == 1

    silent[0][1].close()  # one handshake given up: room for a real client again
    assert await _until(lambda: _sample(running, "authority_http_connections") == 1)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    assert running.server.http is not None
    tls = await asyncio.open_connection("127.0.0.1", running.server.http.port, ssl=context)
    assert await _get_healthz(tls) == "HTTP/1.1 200 OK"
    tls[1].close()
    silent[1][1].close()


async def test_a_burst_of_connections_is_held_to_the_limit(start_server: StartServer) -> None:
    running = await start_server(http_listen="127.0.0.1:0", http_max_connections=5)
    burst = await asyncio.gather(*(_connect(running) for _ in range(40)))  # all queued before any is served

    # A refusal closes after its 1 s linger; a held connection says nothing for 60 s.
    answers = await asyncio.gather(*(asyncio.wait_for(reader.read(), 5.0) for reader, _ in burst),
                                   return_exceptions=True)

    refused = [answer for answer in answers if isinstance(answer, bytes)]
    held = [answer for answer in answers if isinstance(answer, asyncio.TimeoutError)]
    assert len(refused) == 35 and len(held) == 5, answers
    assert all(answer.startswith(b"HTTP/1.1 503 Service Unavailable") for answer in refused)
    assert _sample(running, "authority_http_connections") == 5
    assert _sample(running, "authority_http_connections_refused_total") == 35
    for _, writer in burst:
        writer.close()


async def test_refusals_linger_only_up_to_a_bound(start_server: StartServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connections, "REFUSAL_LINGER_SECONDS", DEADLINE * 2)  # all still lingering below
    running = await start_server(http_listen="127.0.0.1:0", http_max_connections=1)
    held = await _connect(running)
    assert await _get_healthz(held) == "HTTP/1.1 200 OK"

    refused = [await _connect(running) for _ in range(connections.MAX_LINGERING_REFUSALS + 2)]
    bound = connections.MAX_LINGERING_REFUSALS
    lingering = [await asyncio.wait_for(reader.readexactly(len(connections.REFUSAL_ANSWER)), DEADLINE)
                 for reader, _ in refused[:bound]]
    beyond = [await asyncio.wait_for(reader.read(), DEADLINE) for reader, _ in refused[bound:]]

    assert all(answer == connections.REFUSAL_ANSWER for answer in lingering)
    assert beyond == [b"", b""]  # closed at once, no descriptor held for them
    for _, writer in [held, *refused]:
        writer.close()


async def test_a_client_that_stops_reading_its_answers_is_dropped_at_the_read_timeout(
    start_server: StartServer,
) -> None:
    running = await start_server(http_listen="127.0.0.1:0", http_read_timeout=READ_TIMEOUT)
    assert running.server.http is not None
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", running.server.http.port))
    _, writer = await asyncio.open_connection(sock=sock)
    # Far more answers than every buffer on the way holds; none is ever read.
    writer.write(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 20_000)

    assert await _until(lambda: _sample(running, "authority_http_connections") == 1)
    assert await _until(lambda: _sample(running, "authority_http_connections") == 0)
    writer.close()
    await _health(running)


def _with_open_files(soft: int, hard: int, *command: str) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run(command, preexec_fn=limit, capture_output=True, text=True, timeout=60)


def test_the_soft_open_file_limit_is_raised_to_hold_the_cap() -> None:
    shown = _with_open_files(
        1100, 4096, sys.executable, "-c",
        "import resource; from authority.http.connections import descriptor_room; "
        "print(descriptor_room(1000), *resource.getrlimit(resource.RLIMIT_NOFILE))",
    )

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["1000", "2024", "4096"]  # the cap and 1,024 spare; the hard limit kept
    assert "lowered" not in shown.stderr


def test_a_hard_open_file_limit_below_the_cap_lowers_it_and_says_so() -> None:
    shown = _with_open_files(
        1100, 1500, sys.executable, "-c",
        "import logging, resource; from authority.http.connections import descriptor_room; "
        "logging.basicConfig(format='%(levelname)s %(message)s'); "
        "print(descriptor_room(1000), *resource.getrlimit(resource.RLIMIT_NOFILE))",
    )

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["750", "1500", "1500"]  # half of what the process may open
    assert shown.stderr.strip() == (
        "WARNING http_max_connections lowered from 1000 to 750: this process may open 1500 files (ulimit -Hn); "
        "raise the limit to 2024 to keep 1000"
    )
