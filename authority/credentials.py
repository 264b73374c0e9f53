"""Caller credentials as they are configured: roles, API key entries and their hashes.

Callers are other services, never end users. A caller proves who it is with a client
certificate (mutual TLS: the certificate's subject CN or a subject alternative name,
mapped to roles by ``client_roles``) or with an API key (``x-api-key`` metadata, looked
up among the hashes in ``api_keys``). Its roles decide which RPCs it may make:

    issuer    IssueToken, RefreshToken, RevokeToken (any target), ListSessions
    verifier  ValidateToken, GetSigningKeys, WatchRevocations, and RevokeToken of a
              token it presents (a service logging its own user out)
    auditor   WatchSessionEvents and ListSessions: reads events and sessions, nothing else

This module parses and makes entries, so that settings can check them at start, and
identifies a caller from what it presented (:class:`CallerRegistry`), whatever the
transport: :mod:`authority.api.callers` admits the callers of the gRPC port with it, and
:mod:`authority.http.callers` those of the HTTP port.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence

from authority.errors import CallerNotPermitted, CallerUnauthenticated

API_KEY_HEADER = "x-api-key"
# Marks an API key in logs, screenshots and secret scanners; the rest is 256 random bits.
API_KEY_PREFIX = "tak_"
_HASH_SCHEME = "sha256"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class Role(enum.Enum):
    """What a calling service is for."""

    ISSUER = "issuer"
    VERIFIER = "verifier"
    # Reads session events and sessions (a notification service, an audit export).
    AUDITOR = "auditor"


@dataclasses.dataclass(frozen=True)
class ApiKey:
    """One service's API key as configured: its name, roles and the SHA-256 of the key."""

    name: str
    roles: frozenset[Role]
    digest: bytes = dataclasses.field(repr=False)


def parse_roles(text: str) -> frozenset[Role]:
    """``issuer``, ``verifier``, ``auditor``, or several joined by ``+``; raises ValueError."""
    roles = set()
    for part in text.split("+"):
        try:
            roles.add(Role(part.strip().lower()))
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not a role (issuer, verifier, auditor)") from None
    return frozenset(roles)


def check_name(name: str) -> str:
    """A service name as used in configuration and logs; raises ValueError."""
    if not _NAME.match(name):
        raise ValueError("a name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def parse_api_key(entry: str) -> ApiKey:
    """``NAME:ROLE[+ROLE]:sha256:HEX``; raises ValueError.

    The message never repeats the entry: an operator who pasted a key where its hash
    belongs must not see the key again in a log.
    """
    parts = entry.strip().split(":")
    if len(parts) != 4:
        raise ValueError("an entry is NAME:ROLE[+ROLE]:sha256:HEX (make one with `authority api-key new`)")
    name, roles, scheme, digest = parts
    check_name(name)
    if scheme != _HASH_SCHEME or not _HEX_DIGEST.match(digest):
        raise ValueError(f"the entry for {name!r} must end in sha256: and 64 lowercase hex digits")
    return ApiKey(name, parse_roles(roles), bytes.fromhex(digest))


def parse_api_keys_file(text: str) -> list[str]:
    """The entries of an API keys file: one a line; blank lines and ``#`` comments skipped."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def parse_client_role(entry: str) -> tuple[str, frozenset[Role]]:
    """``IDENTITY=ROLE[+ROLE]``, where IDENTITY is a client certificate's subject CN or
    one of its subject alternative names; raises ValueError."""
    identity, sep, roles = entry.strip().rpartition("=")
    if not sep or not identity.strip():
        raise ValueError("an entry is IDENTITY=ROLE[+ROLE], IDENTITY a certificate's CN or SAN")
    return identity.strip(), parse_roles(roles)


def hash_api_key(key: str) -> str:
    """The form an API key is configured in: ``sha256:<hex>``.

    A plain SHA-256 is the right hash here, unlike for passwords: an API key is 256
    random bits, so nothing short of trying 2**256 keys finds one from its hash, and a
    slow hash (bcrypt, argon2) would only spend CPU on every call.
    """
    return f"{_HASH_SCHEME}:{hashlib.sha256(key.encode()).hexdigest()}"


def new_api_key() -> str:
    """A fresh API key: the prefix and 256 random bits, base64url."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def api_key_entry(name: str, roles: Iterable[Role], key: str) -> str:
    """The configuration entry for ``key``, which holds only its hash."""
    ordered = sorted({role.value for role in roles})
    return f"{check_name(name)}:{'+'.join(ordered)}:{hash_api_key(key)}"


@dataclasses.dataclass(frozen=True)
class Caller:
    """An authenticated calling service: the name it is known by and its roles."""

    name: str
    roles: frozenset[Role]


class CallerRegistry:
    """The callers this authority knows: API keys by hash, certificate identities by name."""

    def __init__(self, api_keys: Sequence[ApiKey], client_roles: dict[str, frozenset[Role]]) -> None:
        self._api_keys = tuple(api_keys)
        self._client_roles = dict(client_roles)

    def identify(self, presented_keys: Sequence[str], certificate_identities: Sequence[str]) -> Caller:
        """The caller behind an API key (when one is presented) and a verified client
        certificate's identities (when there is one); roles from both add up.

        Raises :class:`CallerUnauthenticated` when nothing identifies the caller or the
        key is wrong, and :class:`CallerNotPermitted` for a verified certificate that
        no ``client_roles`` entry names.
        """
        names: list[str] = []
        roles: set[Role] = set()
        if len(presented_keys) > 1:
            raise CallerUnauthenticated(f"send one {API_KEY_HEADER}, not several")
        if presented_keys:
            api_key = self._api_key(presented_keys[0])
            if api_key is None:
                raise CallerUnauthenticated("the API key is not valid")
            names.append(api_key.name)
            roles |= api_key.roles
        for identity in dict.fromkeys(certificate_identities):
            if identity in self._client_roles:
                names.append(identity)
                roles |= self._client_roles[identity]
        if not names:
            if certificate_identities:
                raise CallerNotPermitted(f"client certificate {certificate_identities[0]!r} has no role")
            raise CallerUnauthenticated(f"no caller credentials: send an API key in {API_KEY_HEADER} "
                                        "or connect with a client certificate")
        return Caller("+".join(dict.fromkeys(names)), frozenset(roles))

    def _api_key(self, presented: str) -> ApiKey | None:
        digest = hashlib.sha256(presented.encode(errors="surrogatepass")).digest()
        found = None
        # Compare with every entry, in constant time each, so the time taken says
        # nothing about how close a guess came or which entry matched.
        for api_key in self._api_keys:
            if hmac.compare_digest(digest, api_key.digest):
                found = api_key
        return found
