"""The request URI a DPoP proof names (``htu``, RFC 9449 section 4.3 step 9) and how two
spellings of it are compared: both are normalised, then must be equal.

Normalisation is RFC 3986's syntax- and scheme-based one (sections 6.2.2 and 6.2.3):

- scheme and host in lower case (an IPv6 literal keeps its brackets);
- the scheme's default port dropped (80 for http, 443 for https), and an empty port;
- percent-encodings in upper case, those of unreserved characters decoded; characters a
  URI may not hold (non-ASCII, ``\\``, ``"``, ...) percent-encoded as their UTF-8;
- ``.`` and ``..`` segments removed; an empty path becomes ``/``;
- query and fragment dropped (RFC 9449 compares without them).

Only absolute ``http`` and ``https`` URIs with a host are accepted; user information,
whitespace and control characters are refused (ValueError), never silently dropped.

For gRPC, ``htm`` is always ``POST`` and ``htu`` is :func:`grpc_proof_uri`:
``https://<authority>/<package.Service>/<Method>``.
"""

from __future__ import annotations

import functools
import re

_DEFAULT_PORTS = {"http": "80", "https": "443"}
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# scheme://authority path ?query #fragment, the authority without user information.
_ABSOLUTE = re.compile(r"(?P<scheme>[^:/?#]+)://(?P<authority>[^/?#]*)(?P<path>[^?#]*)(?:\?[^#]*)?(?:#.*)?", re.DOTALL)
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(?P<port>[0-9]*))?")
_REG_NAME = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})+")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# What a path may hold as it is (RFC 3986 pchar and "/"), besides percent-encodings.
_PATH_CHARACTERS = _UNRESERVED | frozenset("!$&'()*+,;=:@/")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_HEX = frozenset("0123456789ABCDEFabcdef")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


def normalize_uri(uri: str) -> str:
    """``uri`` normalised as the module docstring says; ValueError when it is not an
    absolute http(s) URI with a host."""
    if type(uri) is not str:
        raise ValueError("a URI is text")
    return _normalized(uri)


# A server sees few distinct request URIs, and every proof names one of them: remember
# the last few normal forms (a pure function; errors are not remembered).
@functools.lru_cache(maxsize=1024)
def _normalized(uri: str) -> str:
    if _CONTROL_OR_SPACE.search(uri) is not None:
        raise ValueError("a URI has no whitespace or control characters")
    match = _ABSOLUTE.fullmatch(uri)
    if match is None or _SCHEME.fullmatch(match["scheme"]) is None:
        raise ValueError("not an absolute URI")
    scheme = match["scheme"].lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("not an http or https URI")
    authority = match["authority"]
    if "@" in authority:
        raise ValueError("a request URI has no user information")
    host_port = _HOST_PORT.fullmatch(authority)
    if host_port is None:
        raise ValueError("not a valid host and port")
    host = host_port["host"]
    if not host.startswith("[") and _REG_NAME.fullmatch(host) is None:
        raise ValueError("not a valid host")
    host = _normalize_percent(host).lower()
    port = (host_port["port"] or "").lstrip("0") or ("0" if host_port["port"] else "")
    if port and int(port) > 65535:
        raise ValueError("not a valid port")
    port_part = "" if port in ("", _DEFAULT_PORTS[scheme]) else f":{port}"
    path = remove_dot_segments(_normalize_percent(_encode_path(match["path"]))) or "/"
    return f"{scheme}://{host}{port_part}{path}"


# A Host header as RFC 3986 writes an authority without userinfo: a bracketed IP literal or
# a name, and an optional port.
_HOST_HEADER = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]*)?")


def is_host(host: str) -> bool:
    """Whether a request's ``Host`` (or ``:authority``) is only a host and port, fit to be
    the authority of the URL a proof is checked against. Anything else ("/", "?", "#",
    "@", spaces) would change that URL: ``host/other?`` makes it another path's, the real
    path its query, which a proof's ``htu`` ignores."""
    return _HOST_HEADER.fullmatch(host) is not None


def grpc_proof_uri(authority: str, method: str) -> str:
    """The ``htu`` of a gRPC call: ``https://<authority>/<package.Service>/<Method>``, for
    ``method`` as grpc names it (``/package.Service/Method``); ``htm`` is ``POST``."""
    if not method.startswith("/"):
        raise ValueError("a gRPC method name starts with /")
    return f"https://{authority}{method}"


def _encode_path(path: str) -> str:
    out = []
    for index, char in enumerate(path):
        if char in _PATH_CHARACTERS:
            out.append(char)
        elif char == "%" and path[index + 1:index + 2] in _HEX and path[index + 2:index + 3] in _HEX:
            out.append(char)
        else:
            # Not valid in a URI as it stands (a stray %, non-ASCII, "\\"): its UTF-8, encoded.
            try:
                encoded = char.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate
                raise ValueError("a URI is text with a UTF-8 form") from None
            out.append("".join(f"%{byte:02X}" for byte in encoded))
    return "".join(out)


def _normalize_percent(text: str) -> str:
    """Percent-encodings in upper case; those of unreserved characters decoded (6.2.2.2)."""

    def one(match: re.Match[str]) -> str:
        char = chr(int(match[1], 16))
        return char if char in _UNRESERVED else f"%{match[1].upper()}"

    return _PERCENT.sub(one, text)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4: ``path`` without its ``.`` and ``..`` segments."""
    output: list[str] = []
    while path:
        if path.startswith("../"):
            path = path[3:]
        elif path.startswith("./"):
            path = path[2:]
        elif path.startswith("/./"):
            path = path[2:]
        elif path == "/.":
            path = "/"
        elif path.startswith("/../"):
            path = path[3:]
            if output:
                output.pop()
        elif path == "/..":
            path = "/"
            if output:
                output.pop()
        elif path in (".", ".."):
            path = ""
        else:
            start = 1 if path.startswith("/") else 0
            end = path.find("/", start)
            end = len(path) if end < 0 else end
            output.append(path[:end])
            path = path[end:]
    return "".join(output)
