"""Signing out: logout, one session, a subject everywhere, "sign out my other devices",
and erasure on request; and the request checks and unit-of-work rule the sign-in path
shares with it.

:class:`SignOuts` is the half of :class:`authority.sessions.Sessions` that ends sessions.
Each sign-out holds the subject's lock, revokes with its :class:`RevocationCause` (which
reaches the mirror, the revocation stream and the session event log), and applies the
revocations to this process's mirror before it returns.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from authority_client.proof import Proof

from authority.binding import Binding
from authority.config import Settings
from authority.errors import InvalidArgument, TokenRejected
from authority.revocations import RevocationMirror
from authority.store import RevocationCause, SessionRecord, Store
from authority.store.events import erase_subject
from authority.tokens import AccessClaims, InvalidToken, TokenCodec

MAX_IDENTIFIER_BYTES = 256
# Refresh tokens are 256 random bits, base64url: 43 characters.
REFRESH_TOKEN_CHARS = 43


def hash_refresh_token(refresh_token: str) -> str:
    """What the store keeps of a refresh token: its SHA-256, never the token."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()


def check_identifier(field: str, value: str) -> None:
    """Raises :class:`InvalidArgument` unless ``value`` is 1 to 256 bytes of UTF-8 without NUL."""
    if not value:
        raise InvalidArgument(field, "must not be empty")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise InvalidArgument(field, "must be valid UTF-8") from None
    if size > MAX_IDENTIFIER_BYTES:
        raise InvalidArgument(field, f"must be at most {MAX_IDENTIFIER_BYTES} bytes")
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")


def check_reason(reason: str) -> None:
    """Raises :class:`InvalidArgument` for a ``reason`` that is not a valid identifier."""
    if reason:
        check_identifier("reason", reason)


T = TypeVar("T")


async def to_the_end(work: Coroutine[Any, Any, T]) -> T:
    """Awaits ``work``, which goes on to completion even if the caller is cancelled."""
    task = asyncio.ensure_future(work)
    # A caller that was cancelled never reads the outcome; read it here instead, so an
    # error is not reported as "never retrieved".
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return await asyncio.shield(task)


class SignOuts:
    """Ends sessions; :class:`authority.sessions.Sessions` sets up what it uses."""

    _store: Store
    _codec: TokenCodec
    _binding: Binding
    _mirror: RevocationMirror
    _settings: Settings
    _clock: Callable[[], float]

    def _identify(self, field: str, token: str) -> AccessClaims:
        if not token:
            raise InvalidArgument(field, "must not be empty")
        try:
            return self._codec.identify(token)
        except InvalidToken:
            raise TokenRejected(f"{field}: the token is not one this authority issued") from None

    async def revoke_token(self, token: str, reason: str = "", caller: str = "") -> int:
        """Logout: ends the session of a token this authority signed, even an expired one."""
        check_reason(reason)
        claims = self._identify("token", token)
        return await self._revoke(
            claims.subject, reason or "logout", RevocationCause.LOGGED_OUT, caller,
            lambda s: s.session_id == claims.session_id, claims.token_id,
        )

    async def revoke_refresh_token(self, refresh_token: str, reason: str = "", caller: str = "") -> int:
        """Logout by refresh token (RFC 7009): ends the session it belongs to, traded or
        not; 0 when the store knows no such token (its session ended and was purged)."""
        check_reason(reason)
        if not refresh_token:
            raise InvalidArgument("refresh_token", "must not be empty")
        if len(refresh_token) != REFRESH_TOKEN_CHARS:
            raise InvalidArgument("refresh_token", "is not a refresh token this authority issues")
        async with self._store.transaction(read_only=True) as tx:
            found = await tx.refresh_token(hash_refresh_token(refresh_token))
        if found is None:
            return 0
        session_id = found.session.session_id
        return await self._revoke(
            found.session.subject, reason or "logout", RevocationCause.LOGGED_OUT, caller,
            lambda s: s.session_id == session_id,
        )

    async def revoke_session(self, session_id: str, reason: str = "", caller: str = "") -> int:
        """Ends one session; 0 when it is unknown or already ended."""
        check_reason(reason)
        check_identifier("session_id", session_id)
        async with self._store.transaction(read_only=True) as tx:
            session = await tx.session(session_id)
        if session is None:
            return 0
        return await self._revoke(
            session.subject, reason or "session revoked", RevocationCause.SESSION_REVOKED, caller,
            lambda s: s.session_id == session_id,
        )

    async def revoke_other_sessions(
        self, *, token: str | None = None, session_id: str | None = None, reason: str = "", caller: str = "",
        proof: Proof | None = None,
    ) -> int:
        """"Sign out my other devices": ends every live session of the referenced session's
        subject except that one; 0 when the referenced session is unknown or not live. The
        session is referenced by ``token`` when it is given (even empty, which is refused
        naming it), else by ``session_id``. A token bound to a device key needs ``proof``,
        by that key for that token: a copy of the token alone may not sign the others out."""
        check_reason(reason)
        if token is not None:
            claims = self._identify("other_sessions.token", token)
            self._binding.check_presented(proof, token, claims.key_thumbprint, "other_sessions.proof")
            subject, keep = claims.subject, claims.session_id
        else:
            if proof is not None:
                raise InvalidArgument("other_sessions.proof", "goes with a token only, not with a session_id")
            session_id = session_id or ""
            check_identifier("other_sessions.session_id", session_id)
            async with self._store.transaction(read_only=True) as tx:
                session = await tx.session(session_id)
            if session is None:
                return 0
            subject, keep = session.subject, session_id

        def others(live: Sequence[SessionRecord]) -> list[SessionRecord]:
            # Only a live session may sign the others out: an old stolen token may not.
            return [s for s in live if s.session_id != keep] if any(s.session_id == keep for s in live) else []

        return await self._revoke_some(
            subject, reason or "other devices signed out", RevocationCause.OTHER_DEVICES_SIGNED_OUT, caller, others
        )

    async def revoke_subject(self, subject: str, reason: str = "", caller: str = "") -> int:
        """Signs ``subject`` out everywhere; returns how many live sessions ended."""
        check_reason(reason)
        check_identifier("subject", subject)
        return await self._revoke(subject, reason or "signed out everywhere", RevocationCause.SIGNED_OUT_EVERYWHERE,
                                  caller, lambda s: True)

    async def _revoke(
        self, subject: str, reason: str, cause: RevocationCause, caller: str,
        ends: Callable[[SessionRecord], bool], token_id: str | None = None,
    ) -> int:
        """Revokes the subject's live sessions that ``ends``."""
        return await self._revoke_some(subject, reason, cause, caller, lambda live: [s for s in live if ends(s)],
                                       token_id)

    async def _revoke_some(
        self, subject: str, reason: str, cause: RevocationCause, caller: str,
        choose: Callable[[Sequence[SessionRecord]], list[SessionRecord]], token_id: str | None = None,
    ) -> int:
        async def work() -> int:
            async with self._store.transaction() as tx:
                await tx.lock_subject(subject)
                now = self._clock()
                live = await tx.live_sessions(subject, now, self._settings.idle_cutoff(now))
                entries = await tx.revoke(choose(live), now, reason, token_id, cause=cause, caller=caller)
            self._mirror.add(entries)
            return len(entries)

        return await to_the_end(work())

    async def forget(self, subject: str) -> tuple[int, int]:
        """Erases ``subject`` on request: signs them out everywhere, then deletes their
        session events and blanks their device names. Returns (sessions ended, events
        deleted). What the revocation mirror needs stays until the tokens expire."""
        ended = await self.revoke_subject(subject, "personal data erased")
        return ended, await to_the_end(erase_subject(self._store, subject))
