"""Log output: JSON lines for machines, plain lines for a terminal, one line per RPC.

:func:`install` sets up the root logger once, from the command line. The per-RPC line
is written by :mod:`authority.api.observe` through :class:`RpcLine` (or :func:`log_rpc`);
it names the method, the status code, the duration, the peer and, when the request
names a subject, a hash of it. Never a token, a refresh token, a key or an API key:
nothing from a request reaches a log line except through the hash.

Every RPC writes a line, so the line is cheap: while the JSON handler :func:`install`
set up is the only place ``authority.rpc`` records can go (no other handler or filter
on the way), the line is written straight to its stream, built from parts made once
per method and status, exactly as :class:`JsonFormatter` would have written it. On the
event loop the lines are gathered, made and written together, in one write, at most
``RPC_LINES_DELAY`` seconds after the first of them (or at once past ``RPC_LINES_BATCH``
lines, and at exit): a write to the stream costs several times what building a line
does, and one call rarely ends alone in a busy second. So an RPC line may follow, by
that much at most, a record written after it. Any other set-up (a test's capture, a
handler added later, text lines) gets an ordinary log record. A line whose level is
off costs nothing.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime
import hashlib
import json
import logging
import sys
import time
from json.encoder import encode_basestring
from typing import IO, Any

RPC_LOGGER = "authority.rpc"
# The fields an RPC line carries, in the order a JSON line shows them.
RPC_FIELDS = ("method", "code", "duration_ms", "peer", "subject_hash")

rpc_log = logging.getLogger(RPC_LOGGER)


# Keys the subject pseudonyms (see use_subject_key); empty: unkeyed.
_subject_key = b""


def use_subject_key(secret: bytes) -> None:
    """Keys the subject pseudonyms with a value derived from ``secret`` (the key-encryption
    key), so that whoever reads the logs cannot recover a guessable subject by hashing
    candidates. Every replica with the same secret gives the same pseudonyms."""
    global _subject_key
    _subject_key = hashlib.blake2b(secret, digest_size=32, person=b"authsubj").digest()


def subject_hash(subject: str) -> str:
    """A short, stable pseudonym of a subject for log lines (the same on every replica,
    so one user's calls can be followed without the logs holding their id)."""
    return hashlib.blake2b(
        subject.encode(errors="surrogatepass"), digest_size=8, person=b"authlog", key=_subject_key
    ).hexdigest()


def log_rpc(method: str, code: str, duration_ms: float, peer: str, subject: str) -> None:
    """Writes the one line for a finished RPC (at INFO; callers check the level first)."""
    line = _lines.get(method)
    if line is None:
        line = RpcLine(method)
        if len(_lines) < _MAX_CACHED_LINES:  # methods and routes are few; anything else is not kept
            _lines[method] = line
    line.write(code, duration_ms, peer, subject)


def _record_rpc(method: str, code: str, duration_ms: float, peer: str, subject: str) -> None:
    fields: dict[str, Any] = {"method": method, "code": code, "duration_ms": round(duration_ms, 3), "peer": peer}
    if subject:
        fields["subject_hash"] = subject_hash(subject)
    rpc_log.info("%s %s %.1fms", method, code, duration_ms, extra={"rpc": fields})


# The JSON handler install() set up last; the straight path writes to it alone.
_installed: logging.StreamHandler[IO[str]] | None = None
_MAX_CACHED_LINES = 256
_lines: dict[str, RpcLine] = {}


def _sole_json_handler() -> logging.StreamHandler[IO[str]] | None:
    """The installed JSON handler when it is the only place an RPC record would go."""
    handler = _installed
    if handler is None or handler.filters or handler.level > logging.INFO:
        return None
    logger: logging.Logger | None = rpc_log
    root = logging.root
    while logger is not None and logger is not root:
        if logger.handlers or logger.filters or not logger.propagate:
            return None
        logger = logger.parent
    handlers = root.handlers
    return handler if len(handlers) == 1 and handlers[0] is handler else None


class RpcLine:
    """The per-RPC log line of one method, with its constant parts built once."""

    def __init__(self, method: str) -> None:
        self.method = method
        # "method code " inside the message, and the method as a JSON string.
        self._message_head = encode_basestring(method)[:-1]
        self._method_json = encode_basestring(method)
        self._by_code: dict[str, tuple[str, str]] = {}

    def _parts(self, code: str) -> tuple[str, str]:
        parts = self._by_code.get(code)
        if parts is None:
            code_json = encode_basestring(code)
            parts = (
                f'", "level": "INFO", "logger": "{RPC_LOGGER}", "message": {self._message_head} {code_json[1:-1]} ',
                f'ms", "method": {self._method_json}, "code": {code_json}, "duration_ms": ',
            )
            if len(self._by_code) < 64:  # status codes are few
                self._by_code[code] = parts
        return parts

    def write(self, code: str, duration_ms: float, peer: str, subject: str) -> None:
        """Writes the line for one finished call, at INFO."""
        if not rpc_log.isEnabledFor(logging.INFO):
            return
        handler = _sole_json_handler()
        formatter = None if handler is None else handler.formatter
        if handler is None or not isinstance(formatter, JsonFormatter):
            _record_rpc(self.method, code, duration_ms, peer, subject)
            return
        _submit(handler, formatter, (self, code, duration_ms, peer, subject, time.time()))

    def text(self, formatter: JsonFormatter, code: str, duration_ms: float, peer: str, subject: str,
             created: float) -> str:
        """The line, as ``formatter`` would write the call's record, made at ``created``."""
        head, middle = self._parts(code)
        line = (f'{{"time": "{formatter._time(created)}{head}{duration_ms:.1f}{middle}'
                f'{json_milliseconds(duration_ms)}, "peer": {encode_basestring(peer)}')
        if subject:
            line += f', "subject_hash": "{subject_hash(subject)}"'
        return line + "}\n"


# A call's line, made when it is written: the line, code, duration, peer, subject, time.
_Fields = tuple[RpcLine, str, float, str, str, float]


def json_milliseconds(duration_ms: float) -> str:
    """``round(duration_ms, 3)`` as JSON writes it, at a third of the cost. Both round the
    float's exact value correctly to three places; below 2**43 ms (some 280 years) floats
    lie closer together than 0.001, so no shorter decimal names the rounded float and its
    shortest form (what JSON writes) is these digits, trailing zeros dropped."""
    text = f"{duration_ms:.3f}".rstrip("0")
    return text + "0" if text[-1] == "." else text


RPC_LINES_DELAY = 0.05
RPC_LINES_BATCH = 256
# Lines waiting to be written together (see the module docstring), as their fields: a
# line is made with the others, when they are written, so that the calls' own path only
# queues it. The loop that will write them, and the handler and formatter they go to.
_pending: list[_Fields] = []
_pending_loop: asyncio.AbstractEventLoop | None = None
_pending_handler: logging.StreamHandler[IO[str]] | None = None
_pending_formatter: JsonFormatter | None = None


def _submit(handler: logging.StreamHandler[IO[str]], formatter: JsonFormatter, fields: _Fields) -> None:
    global _pending_loop, _pending_handler, _pending_formatter
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if _pending:
        if loop is _pending_loop and handler is _pending_handler and formatter is _pending_formatter:
            _pending.append(fields)
            if len(_pending) >= RPC_LINES_BATCH:
                _write_pending()  # the timer finds nothing left, and does nothing
            return
        # Left by another loop (one that ended before it wrote them) or for another handler.
        _write_pending()
    if loop is None:  # no event loop in this thread: written now
        _write(handler, fields[0].text(formatter, *fields[1:]))
        return
    _pending.append(fields)
    _pending_loop, _pending_handler, _pending_formatter = loop, handler, formatter
    loop.call_later(RPC_LINES_DELAY, _write_pending)


def _write(handler: logging.StreamHandler[IO[str]], text: str) -> None:
    handler.acquire()
    try:
        handler.stream.write(text)
        handler.flush()
    except (OSError, ValueError):
        pass  # the log's stream is gone (closed, full): nothing to tell it with
    finally:
        handler.release()


def _write_pending() -> None:
    formatter = _pending_formatter
    if not _pending or _pending_handler is None or formatter is None:
        _pending.clear()
        return
    text = "".join([line.text(formatter, code, duration_ms, peer, subject, created)
                    for line, code, duration_ms, peer, subject, created in _pending])
    _pending.clear()
    _write(_pending_handler, text)


# A line still waiting when the interpreter exits is written then.
atexit.register(_write_pending)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and an RPC's fields."""

    def __init__(self) -> None:
        super().__init__()
        # Every RPC writes a line: the date and time up to the second are formatted once
        # per second, not once per line.
        self._second = -1
        self._stamp = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._stamp = datetime.datetime.fromtimestamp(second, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._stamp}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rpc = getattr(record, "rpc", None)
        if isinstance(rpc, dict):
            line.update(rpc)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """A plain line for a person at a terminal; an RPC's peer and subject hash follow the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rpc = getattr(record, "rpc", None)
        if isinstance(rpc, dict):
            text += f" peer={rpc['peer']}"
            if "subject_hash" in rpc:
                text += f" subject={rpc['subject_hash']}"
        return text


def install(level: str = "INFO", log_format: str = "auto", stream: IO[str] | None = None) -> None:
    """Sends every log record to ``stream`` (stderr) as JSON or text at ``level``.

    ``auto`` writes text to a terminal and JSON lines to anything else (a file, a pipe,
    a log collector). Replaces whatever handlers the root logger had.
    """
    stream = sys.stderr if stream is None else stream
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "json"
    global _installed
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    _installed = handler if log_format == "json" else None
    root.setLevel(level.upper())
    # Alembic narrates every migration step at INFO; only its warnings matter here.
    logging.getLogger("alembic").setLevel(logging.WARNING)


# grpc's server logs this, with a traceback, when a write to a stream fails in its core
# before it has noticed that the client went away (a watcher blocked on flow control
# disconnecting). A server stream's batch fails only when its call is gone.
_CLIENT_GONE = "ExecuteBatchError raised in core by servicer method"
GRPC_SERVER_LOGGER = "grpc._cython.cygrpc"


class ClientGoneIsNotAnError(logging.Filter):
    """Logs grpc's report of a write to a vanished client at DEBUG, without the traceback:
    a client going away is not an error of this server."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.getMessage().startswith(_CLIENT_GONE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info = record.exc_text = None
            record.msg, record.args = f"{record.getMessage()}: the client went away", None
            # The logger already judged ERROR enabled; judge DEBUG again here.
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def quiet_client_disconnects() -> None:
    """Installs :class:`ClientGoneIsNotAnError` on grpc's server logger, once."""
    grpc_log = logging.getLogger(GRPC_SERVER_LOGGER)
    if not any(isinstance(f, ClientGoneIsNotAnError) for f in grpc_log.filters):
        grpc_log.addFilter(ClientGoneIsNotAnError())
