"""The shared HTTP answers (tests/vectors/http_answers.json, written by hand), from the ASGI
and WSGI middlewares on real servers in front of a real authority, or of a port where none
listens. The Node.js package's Express middleware answers the same file
(clients/node/test/answers.test.js). A regression test: a request with no token was told
``invalid_token`` here and ``unauthorized`` there, only Node's challenges named a realm, and
only this package's 503 added "; try again shortly"."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from authority_client.http import asgi, wsgi
from conftest import EXPLANATION_WAIT, validation_settings
from test_http_middleware import AUDIENCE, FLAVOURS, MAX_STALENESS, WebApp

from authority.testing import InProcessAuthority

ANSWERS = Path(__file__).resolve().parents[3] / "tests" / "vectors" / "http_answers.json"
CASES: list[dict[str, Any]] = json.loads(ANSWERS.read_text())["cases"]
# The Python names of the vectors' options, which are these already.
OPTIONS = {"realm"}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessAuthority]:
    database_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('answers') / 'authority.db'}"
    with InProcessAuthority(database_url=database_url, audiences=("token-authority", AUDIENCE),
                            explanation_wait=EXPLANATION_WAIT) as authority:
        yield authority


@pytest.fixture(scope="module")
def unreachable() -> Iterator[str]:
    """A loopback address where nothing listens: bound, never listening, so no one else takes it."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{holder.getsockname()[1]}"
    holder.close()


@pytest.fixture(scope="module", params=FLAVOURS)
def apps(
    request: pytest.FixtureRequest, running: InProcessAuthority, unreachable: str
) -> Iterator[Callable[[dict[str, Any]], WebApp]]:
    """Each configuration's app, served on first use, for one flavour."""
    served: dict[tuple[str, str], WebApp] = {}
    targets = {"running": running.target, "unreachable": unreachable}

    def app(case: dict[str, Any]) -> WebApp:
        key = (case["authority"], json.dumps(case["options"], sort_keys=True))
        if key not in served:
            assert set(case["options"]) <= OPTIONS, case["options"]
            settings = validation_settings("remote", max_staleness=MAX_STALENESS)
            served[key] = WebApp(request.param, targets[case["authority"]], settings, retry_after=1, **case["options"])
        return served[key]

    yield app
    for web in served.values():
        web.close()


def test_the_vectors_cover_every_kind_of_answer() -> None:
    assert {case["expected"]["status"] for case in CASES} == {400, 401, 503}
    assert any("realm" in case["options"] for case in CASES)
    assert any(case["authority"] == "unreachable" for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_each_request_gets_the_shared_answer(apps: Callable[[dict[str, Any]], WebApp], case: dict[str, Any]) -> None:
    app = apps(case)
    path = "/orders" + (f"?{case['query']}" if case["query"] else "")

    response = app.get(path, headers=[tuple(line) for line in case["headers"]])

    answer = {
        "status": response.status_code,
        "www_authenticate": response.headers.get("www-authenticate"),
        "retry_after": response.headers.get("retry-after"),
        "cache_control": response.headers.get("cache-control"),
        "body": response.json(),
    }
    assert answer == case["expected"], app.flavour


@pytest.mark.parametrize("realm", ["orders\r\nSet-Cookie: x=1", "caf\u00e9", "tab\there", 42, None])
@pytest.mark.parametrize("middleware", [asgi.BearerAuthMiddleware, wsgi.BearerAuthMiddleware])
def test_a_realm_is_printable_ascii_checked_at_construction(middleware: Any, realm: Any) -> None:
    # It goes into every Bearer challenge: a line break there would write a header of the caller's.
    with pytest.raises(ValueError, match="realm"):
        middleware(lambda *_: None, None, realm=realm)
