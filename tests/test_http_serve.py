"""``authority serve`` with ``AUTHORITY_HTTP_LISTEN``: the HTTP endpoints start with the
gRPC port, in the same process, and stop with it on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import httpx

from tests.test_cli import _serve


async def test_serve_starts_the_http_endpoints_and_stops_them_on_sigterm(database_url: str, tmp_path: Path) -> None:
    async with _serve(database_url, tmp_path, AUTHORITY_HTTP_LISTEN="127.0.0.1:0") as (process, _):
        assert process.stderr is not None
        port = None
        while port is None:
            line = (await asyncio.wait_for(process.stderr.readline(), timeout=30)).decode()
            assert line, "authority serve exited before serving HTTP"
            if match := re.search(r"HTTP endpoints on http://127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as http:
            assert (await http.get("/healthz")).json() == {"status": "SERVING"}
            assert (await http.get("/.well-known/jwks.json")).json()["keys"]

        process.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(process.stderr.read(), timeout=30)).decode()
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
        assert "Traceback" not in rest and '"level": "ERROR"' not in rest
        async with httpx.AsyncClient(timeout=5) as http:
            try:
                await http.get(f"http://127.0.0.1:{port}/healthz")
            except httpx.ConnectError:
                pass
            else:
                raise AssertionError("the HTTP port still answers after the stop")
