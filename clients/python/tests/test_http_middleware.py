"""The HTTP middlewares in front of real apps on real servers: a Starlette app under uvicorn
(ASGI) and a Flask app under werkzeug (WSGI), each in remote and local mode, against a real
authority. One test body drives every flavour and mode."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import flask
import httpx
import pytest
import uvicorn
import websockets.exceptions
import websockets.sync.client
import werkzeug.serving
from authority_client import (
    AsyncAuthorityClient,
    AsyncValidator,
    AuthorityClient,
    SessionPolicy,
    ValidationSettings,
    Validator,
    current_claims,
)
from authority_client.http import asgi, wsgi
from authority_client.reasons import MISSING_TEXT, UNAVAILABLE_TEXT, RequestProblem, problem_text, reason_text
from authority_client.validation import Mode
from authority_client.verify import InvalidReason
from conftest import EXPLANATION_WAIT, _Loop, validation_settings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from authority.testing import InProcessAuthority

FLAVOURS = ["asgi", "wsgi"]
MODES = ["remote", "local"]
AUDIENCE = "orders"
MAX_STALENESS = 1.0
WITHIN = 15.0  # seconds any awaited change of verdict may take


def _claims_json(claims: Any, current: Any) -> dict[str, str]:
    return {"subject": claims.subject, "device_id": claims.device_id, "session_id": claims.session_id,
            "current_subject": current.subject}


def _starlette(validator: AsyncValidator, **options: Any) -> Starlette:
    async def orders(request: Request) -> JSONResponse:
        return JSONResponse(_claims_json(request.state.authority_claims, current_claims()))

    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def live(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(websocket.state.authority_claims.subject)
        await websocket.close()

    return Starlette(
        routes=[Route("/orders", orders, methods=["GET", "POST"]), Route("/healthz", healthz),
                WebSocketRoute("/live", live)],
        middleware=[Middleware(asgi.BearerAuthMiddleware, validator=validator, audience=AUDIENCE,
                               public_paths=["/healthz"], **{"retry_after": 2, **options})],
    )


def _flask(validator: Validator, **options: Any) -> flask.Flask:
    app = flask.Flask(__name__)

    @app.route("/orders", methods=["GET", "POST"])
    def orders() -> dict[str, str]:
        flask.g.claims = wsgi.claims_of(flask.request.environ)
        return _claims_json(flask.g.claims, current_claims())

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/orders/stream")
    def stream() -> flask.Response:
        def rows() -> Iterator[str]:  # produced after the view and the middleware have returned
            for n in range(3):
                yield f"{n}:{current_claims().subject}\n"

        return flask.Response(rows(), mimetype="text/plain")

    app.wsgi_app = wsgi.BearerAuthMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, validator, audience=AUDIENCE, public_paths=["/healthz"], **{"retry_after": 2, **options}
    )
    return app


class WebApp:
    """An app behind the middleware (``options`` are the middleware's), served on a free loopback port."""

    def __init__(self, flavour: str, target: str, settings: ValidationSettings, **options: Any) -> None:
        self.flavour = flavour
        self.mode = settings.mode
        self._stops: list[Callable[[], None]] = []
        if flavour == "wsgi":
            client = AuthorityClient(target)
            validator = Validator(client, settings).start()
            self._wait_fresh: Callable[[], bool] = lambda: validator.wait_until_fresh(WITHIN)
            server = werkzeug.serving.make_server("127.0.0.1", 0, _flask(validator, **options), threaded=True)
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self.port = server.port
            self._stops += [client.close, validator.close, server.shutdown]
        else:
            loop = _Loop()
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]

            async def start() -> tuple[AsyncAuthorityClient, AsyncValidator, uvicorn.Server, asyncio.Task[None]]:
                client = AsyncAuthorityClient(target)
                validator = await AsyncValidator(client, settings).start()
                server = uvicorn.Server(uvicorn.Config(_starlette(validator, **options), lifespan="off", log_level="warning"))
                task = asyncio.create_task(server.serve(sockets=[sock]))
                deadline = time.monotonic() + WITHIN
                while not server.started:
                    assert time.monotonic() < deadline, "uvicorn did not start"
                    assert not task.done(), "uvicorn stopped at start"
                    await asyncio.sleep(0.01)
                return client, validator, server, task

            aclient, validator_, server_, task = loop.run(start())
            self._wait_fresh = lambda: loop.run(validator_.wait_until_fresh(WITHIN))

            async def stop() -> None:
                server_.should_exit = True
                await task
                await validator_.close()
                await aclient.close()

            self._stops += [loop.close, lambda: loop.run(stop())]
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        self._stops.append(self.http.close)

    def wait_until_fresh(self) -> None:
        assert self._wait_fresh(), "the validator's revocation mirror never became fresh"

    def get(self, path: str = "/orders", token: str | None = None, headers: Any = ()) -> httpx.Response:
        sent = list(headers)
        if token is not None:
            sent.append(("authorization", f"Bearer {token}"))
        return self.http.get(path, headers=sent)

    def eventually(self, token: str, status: int) -> httpx.Response:
        """The first answer with ``status`` for ``token`` (polled, for a verdict that must change)."""
        deadline = time.monotonic() + WITHIN
        while True:
            response = self.get(token=token)
            if response.status_code == status or time.monotonic() > deadline:
                return response
            time.sleep(0.02)  # between polls of a bounded wait

    def close(self) -> None:
        for stop in reversed(self._stops):
            stop()


@pytest.fixture
def authority(tmp_path: Any) -> Iterator[InProcessAuthority]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'authority.db'}"
    with InProcessAuthority(database_url=database_url, audiences=("token-authority", AUDIENCE),
                            explanation_wait=EXPLANATION_WAIT) as running:
        yield running


def _served(flavour: str, mode: str, authority: InProcessAuthority) -> Iterator[WebApp]:
    web = WebApp(flavour, authority.target, validation_settings(mode, max_staleness=MAX_STALENESS))
    web.wait_until_fresh()
    yield web
    web.close()


@pytest.fixture(params=[(f, m) for f in FLAVOURS for m in MODES], ids=lambda p: f"{p[0]}-{p[1]}")
def app(request: pytest.FixtureRequest, authority: InProcessAuthority) -> Iterator[WebApp]:
    yield from _served(*request.param, authority)


@pytest.fixture(params=MODES)
def wsgi_app(request: pytest.FixtureRequest, authority: InProcessAuthority) -> Iterator[WebApp]:
    """The Flask app alone: a body produced after the view returned is WSGI's."""
    yield from _served("wsgi", request.param, authority)


@pytest.fixture(params=MODES)
def asgi_app(request: pytest.FixtureRequest, authority: InProcessAuthority) -> Iterator[WebApp]:
    """The Starlette app alone: WebSockets are ASGI's."""
    yield from _served("asgi", request.param, authority)


def test_the_single_device_rule_behind_the_middleware(app: WebApp, authority: InProcessAuthority) -> None:
    # A public path answers without a token.
    assert app.get("/healthz").text == "ok"

    # No token: 401 with the challenge that names no error.
    anonymous = app.get()
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="token-authority"'
    assert anonymous.json() == {"error": "unauthorized", "error_description": MISSING_TEXT}

    # A valid token: the handler reads the claims (scope state / environ, and current_claims).
    laptop = authority.sign_in("alice", "laptop", audience=AUDIENCE)
    allowed = app.get(token=laptop.access_token)
    assert allowed.status_code == 200
    assert allowed.json() == {"subject": "alice", "device_id": "laptop", "session_id": laptop.session_id,
                              "current_subject": "alice"}

    # A second device signs in: the first gets 401, the reason and its cause. Remote mode
    # names the device (ValidateToken reads it); the local mirror knows the cause alone.
    authority.sign_in("alice", "phone", audience=AUDIENCE, policy=SessionPolicy.REPLACE, device_name="the phone")
    revoked = app.eventually(laptop.access_token, 401)
    text = {
        Mode.REMOTE: "revoked: signed in on the phone",
        Mode.LOCAL: "revoked: signed in on another device",
    }[app.mode]
    assert text != reason_text(InvalidReason.REVOKED)
    assert revoked.status_code == 401
    assert revoked.headers["www-authenticate"] == (
        f'Bearer realm="token-authority", error="invalid_token", error_description="{text}"'
    )
    assert revoked.json() == {"error": "invalid_token", "error_description": text}


def test_the_app_audience_is_required(app: WebApp, authority: InProcessAuthority) -> None:
    elsewhere = authority.sign_in("bob", "laptop")  # for the default audience, not the app's

    response = app.get(token=elsewhere.access_token)

    assert response.status_code == 401
    assert response.json()["error_description"] == reason_text(InvalidReason.WRONG_AUDIENCE)


def test_a_token_the_authority_did_not_issue_is_refused(app: WebApp) -> None:
    forged = "eyJhbGciOiJFZERTQSIsImtpZCI6Im5vcGUifQ.eyJzdWIiOiJtYWxsb3J5In0.c2ln"
    response = app.get(token=forged)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


@pytest.mark.parametrize(
    ("headers", "path", "problem"),
    [
        ([("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")], "/orders", RequestProblem.SEVERAL_HEADERS),
        ([("authorization", "Bearer")], "/orders", RequestProblem.EMPTY_TOKEN),
        ([("authorization", "Bearer " + "a" * 9000)], "/orders", RequestProblem.OVERSIZED),
        ([("authorization", "Bearer a b")], "/orders", RequestProblem.MALFORMED_HEADER),
        ([], "/orders?access_token=a.b.c", RequestProblem.TOKEN_IN_QUERY),
    ],
)
def test_bad_headers_get_400_invalid_request(
    app: WebApp, headers: list[tuple[str, str]], path: str, problem: RequestProblem
) -> None:
    response = app.get(path, headers=headers)

    assert response.status_code == 400
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="token-authority", error="invalid_request", error_description="{problem_text(problem)}"'
    )
    assert response.json() == {"error": "invalid_request", "error_description": problem_text(problem)}


def test_a_token_that_cannot_be_checked_gets_503_with_retry_after(app: WebApp, authority: InProcessAuthority) -> None:
    issued = authority.sign_in("carol", "laptop", audience=AUDIENCE)
    # The precondition, within a bounded wait: in remote mode this is the client's first
    # call, which a full run once saw answered 503 (the client's call, with its 2 s
    # deadline, came back UNAVAILABLE). The tests above assert a first answer of 200.
    assert app.eventually(issued.access_token, 200).status_code == 200

    authority.stop()
    # Remote mode at once; local mode once its mirror is older than max_staleness.
    response = app.eventually(issued.access_token, 503)

    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert "www-authenticate" not in response.headers
    assert response.json() == {"error": "temporarily_unavailable", "error_description": UNAVAILABLE_TEXT}



def test_a_websocket_handshake_is_checked_too(asgi_app: WebApp, authority: InProcessAuthority) -> None:
    url = f"ws://127.0.0.1:{asgi_app.port}/live"
    issued = authority.sign_in("dave", "laptop", audience=AUDIENCE)

    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        websockets.sync.client.connect(url, open_timeout=10)
    with websockets.sync.client.connect(
        url, additional_headers={"authorization": f"Bearer {issued.access_token}"}, open_timeout=10
    ) as websocket:
        greeting = websocket.recv(timeout=10)

    assert refused.value.response.status_code == 401
    assert refused.value.response.headers["www-authenticate"] == 'Bearer realm="token-authority"'
    assert greeting == "dave"


def test_a_streamed_body_reads_the_claims_as_it_is_produced(wsgi_app: WebApp, authority: InProcessAuthority) -> None:
    signed_in = authority.sign_in("carol", "laptop", audience=AUDIENCE)

    streamed = wsgi_app.get("/orders/stream", token=signed_in.access_token)

    assert streamed.status_code == 200
    assert streamed.text == "0:carol\n1:carol\n2:carol\n"


def test_a_file_wrapper_body_is_handed_on_as_it_is_and_a_generator_wrapped(authority: InProcessAuthority) -> None:
    import io

    from werkzeug.wsgi import FileWrapper

    client = AuthorityClient(authority.target)
    validator = Validator(client, validation_settings("remote", max_staleness=MAX_STALENESS)).start()
    token = authority.sign_in("dave", "laptop", audience=AUDIENCE).access_token
    bodies: list[Any] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [])
        bodies.append(FileWrapper(io.BytesIO(b"file")) if environ["PATH_INFO"] == "/file" else iter([b"row"]))
        return bodies[-1]

    middleware = wsgi.BearerAuthMiddleware(app, validator, audience=AUDIENCE)
    try:
        for path in ("/file", "/rows"):
            environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "HTTP_AUTHORIZATION": f"Bearer {token}",
                       "HTTP_HOST": "app.test", "wsgi.url_scheme": "http", "wsgi.file_wrapper": FileWrapper}
            answered = middleware(environ, lambda status, headers: None)
            if path == "/file":
                assert answered is bodies[-1]  # the server can still send it with sendfile
            else:
                assert answered is not bodies[-1] and list(answered) == [b"row"]
    finally:
        validator.close()
        client.close()
