"""The single-device policy: who is signed in, who gets signed out, and refresh.

A session is one subject on one device. A sign-in counts the subject's live sessions
inside one transaction that holds the subject's lock, so concurrent sign-ins of one
subject (from any number of replicas) are decided one after another:

- a live session on the same device is always replaced;
- if the others would still exceed ``max_sessions_per_subject``, REPLACE revokes the
  oldest of them and REJECT refuses the sign-in, changing nothing.

Every revocation committed here is applied to the in-memory mirror before the call
returns, so this process rejects the revoked tokens from then on. A unit of work runs to
its end even when the RPC that started it is cancelled, so a commit is never left
without its mirror update.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from authority.config import Policy, Settings
from authority.errors import (
    InvalidArgument,
    RefreshTokenRejected,
    RefreshTokenReused,
    SessionLimitReached,
    TokenRejected,
)
from authority.revocations import RevocationMirror
from authority.store import Revocation, SessionRecord, Store, Tx
from authority.tokens import MAX_TOKEN_BYTES, RESERVED_CLAIMS, AccessClaims, InvalidToken, TokenCodec

MAX_IDENTIFIER_BYTES = 256
MAX_CLAIMS_BYTES = 4096
# Refresh tokens are 256 random bits, base64url: 43 characters.
_REFRESH_TOKEN_CHARS = 43


@dataclasses.dataclass(frozen=True, slots=True)
class SignIn:
    """What a sign-in or refresh hands back; the tokens are shown only here."""

    access_token: str
    refresh_token: str
    session_id: str
    expires_at: int
    refresh_expires_at: float
    replaced_session_ids: tuple[str, ...] = ()


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


def _check_reason(reason: str) -> None:
    if reason:
        check_identifier("reason", reason)


def _claims_json(claims: Mapping[str, Any]) -> str:
    reserved = sorted(RESERVED_CLAIMS & claims.keys())
    if reserved:
        verb = "is" if len(reserved) == 1 else "are"
        raise InvalidArgument("claims", f"{', '.join(reserved)} {verb} set by the authority and may not be given")
    try:
        text = json.dumps(claims, allow_nan=False, separators=(",", ":"), sort_keys=True)
    except ValueError:
        raise InvalidArgument("claims", "numbers must be finite") from None
    if len(text.encode(errors="surrogatepass")) > MAX_CLAIMS_BYTES:
        raise InvalidArgument("claims", f"must be at most {MAX_CLAIMS_BYTES} bytes as JSON")
    if any("\x00" in name for name in claims):
        raise InvalidArgument("claims", "names must not contain NUL characters")
    return text


def _hash(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode()).hexdigest()


T = TypeVar("T")
# Called with a sign-in's or refresh's outcome before it commits; raising rolls it back.
BeforeCommit = Callable[[SignIn], object]


def _accept(_: SignIn) -> None:
    """The default check before commit: every outcome is fine."""


async def _to_the_end(work: Coroutine[Any, Any, T]) -> T:
    """Awaits ``work``, which goes on to completion even if the caller is cancelled."""
    task = asyncio.ensure_future(work)
    # A caller that was cancelled never reads the outcome; read it here instead, so an
    # error is not reported as "never retrieved".
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return await asyncio.shield(task)


class Sessions:
    """Signs subjects in and out, and trades refresh tokens."""

    def __init__(
        self,
        store: Store,
        codec: TokenCodec,
        mirror: RevocationMirror,
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._codec = codec
        self._mirror = mirror
        self._settings = settings
        self._clock = clock

    async def sign_in(
        self,
        subject: str,
        device_id: str,
        *,
        policy: Policy | None = None,
        audience: str = "",
        claims: Mapping[str, Any] | None = None,
        ttl: float | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> SignIn:
        """Signs ``subject`` in on ``device_id`` under the single-device policy.

        Raises :class:`InvalidArgument` for a bad request and :class:`SessionLimitReached`
        when the policy is REJECT and the subject already has its sessions.
        ``before_commit`` is called with the outcome inside the transaction (the caller
        builds its reply there): whatever it raises rolls the sign-in back.
        """
        check_identifier("subject", subject)
        check_identifier("device_id", device_id)
        audience = audience or self._settings.default_audience
        if audience not in self._settings.audiences:
            raise InvalidArgument("audience", "is not an audience this authority issues tokens for")
        claims_json = _claims_json(claims or {})
        access_ttl = self._access_ttl(ttl)
        policy = policy or self._settings.default_policy
        return await _to_the_end(
            self._sign_in(subject, device_id, policy, audience, claims_json, access_ttl, before_commit or _accept)
        )

    async def _sign_in(
        self,
        subject: str,
        device_id: str,
        policy: Policy,
        audience: str,
        claims_json: str,
        access_ttl: int,
        before_commit: BeforeCommit,
    ) -> SignIn:
        refresh_token = secrets.token_urlsafe(32)
        async with self._store.transaction() as tx:
            await tx.lock_subject(subject)
            now = self._clock()
            live = await tx.live_sessions(subject, now, self._settings.idle_cutoff(now))
            others = [s for s in live if s.device_id != device_id]
            excess = len(others) + 1 - self._settings.max_sessions_per_subject
            if excess > 0 and policy is Policy.REJECT:
                raise SessionLimitReached(
                    f"the subject is already signed in on {len(others)} other device(s), the most allowed"
                )
            session = self._new_session(subject, device_id, audience, claims_json, access_ttl, now)
            await tx.insert_session(session, _hash(refresh_token))
            signed_in = self._tokens(session, refresh_token, now)
            ended = [s for s in live if s.device_id == device_id] + others[: max(excess, 0)]
            entries = await tx.revoke(ended, now, "replaced by a new sign-in")
            signed_in = dataclasses.replace(signed_in, replaced_session_ids=tuple(e.session_id for e in entries))
            before_commit(signed_in)
        self._mirror.add(entries)
        return signed_in

    def _access_ttl(self, ttl: float | None) -> int:
        if ttl is None:
            return self._settings.access_token_ttl
        if not ttl > 0:
            raise InvalidArgument("ttl", "must be positive")
        return min(math.ceil(ttl), self._settings.max_access_token_ttl)

    def _new_session(
        self, subject: str, device_id: str, audience: str, claims: str, access_ttl: int, now: float
    ) -> SessionRecord:
        expires_at = now + self._settings.refresh_token_ttl
        return SessionRecord(
            session_id=secrets.token_urlsafe(16),
            subject=subject,
            device_id=device_id,
            audience=audience,
            claims=claims,
            access_ttl=access_ttl,
            created_at=now,
            expires_at=expires_at,
            last_used_at=now,
            access_expires_at=_access_expiry(now, access_ttl, expires_at),
            revoked_at=None,
        )

    def _tokens(self, session: SessionRecord, refresh_token: str, now: float) -> SignIn:
        """Signs the session's access token; called before commit, so a token that cannot
        be issued rolls the sign-in back."""
        claims = AccessClaims(
            subject=session.subject,
            device_id=session.device_id,
            session_id=session.session_id,
            token_id=secrets.token_urlsafe(16),
            issuer=self._settings.issuer,
            audience=session.audience,
            issued_at=int(now),
            expires_at=_access_expiry(now, session.access_ttl, session.expires_at),
            extra=json.loads(session.claims),
        )
        access_token = self._codec.sign(claims)
        if len(access_token) > MAX_TOKEN_BYTES:
            raise InvalidArgument(
                "claims", f"with this subject and device_id the token would exceed {MAX_TOKEN_BYTES} bytes"
            )
        return SignIn(
            access_token=access_token,
            refresh_token=refresh_token,
            session_id=session.session_id,
            expires_at=claims.expires_at,
            refresh_expires_at=session.expires_at,
        )

    async def refresh(self, refresh_token: str, before_commit: BeforeCommit | None = None) -> SignIn:
        """A new token pair on the refresh token's session; the presented one dies.

        Raises :class:`RefreshTokenRejected` for an unknown token or an ended session,
        and :class:`RefreshTokenReused` (after revoking the session) for a token that was
        already traded: someone else holds a copy of it. The one exception is a retry
        within ``refresh_token_reuse_grace`` of the token traded last (see
        :meth:`_is_retry`). ``before_commit`` is as for :meth:`sign_in`.
        """
        if not refresh_token:
            raise InvalidArgument("refresh_token", "must not be empty")
        if len(refresh_token) != _REFRESH_TOKEN_CHARS:
            raise RefreshTokenRejected("the refresh token is not valid")
        return await _to_the_end(self._refresh(_hash(refresh_token), before_commit or _accept))

    async def _refresh(self, token_hash: str, before_commit: BeforeCommit) -> SignIn:
        new_token = secrets.token_urlsafe(32)
        reused: list[Revocation] | None = None
        async with self._store.transaction() as tx:
            found = await tx.refresh_token(token_hash)
            if found is not None:
                await tx.lock_subject(found.session.subject)
                # As it is now that we hold the lock, and locked against the purge.
                found = await tx.refresh_token(token_hash, for_update=True)
            if found is None:
                raise RefreshTokenRejected("the refresh token is not valid")
            now = self._clock()
            session = found.session
            live = await tx.live_sessions(session.subject, now, self._settings.idle_cutoff(now))
            is_live = any(s.session_id == session.session_id for s in live)
            if found.used_at is not None and not (is_live and await self._is_retry(tx, token_hash, session.session_id, found.used_at, now)):
                reused = await tx.revoke([session], now, "refresh token reused")
            elif not is_live:
                raise RefreshTokenRejected("the session has ended")
            else:
                if found.used_at is None:
                    await tx.use_refresh_token(token_hash, now)
                else:
                    # A retry: the pair whose reply was lost loses its refresh token, so
                    # the session keeps one live refresh token.
                    await tx.end_unused_refresh_tokens(session.session_id, now)
                await tx.insert_refresh_token(_hash(new_token), session.session_id, now, rotated_from=token_hash)
                signed_in = self._tokens(session, new_token, now)
                await tx.touch_session(session.session_id, now, max(session.access_expires_at, signed_in.expires_at))
                before_commit(signed_in)
        if reused is not None:
            self._mirror.add(reused)
            raise RefreshTokenReused("the refresh token was already used; the session has been revoked")
        return signed_in

    async def _is_retry(self, tx: Tx, token_hash: str, session_id: str, used_at: float, now: float) -> bool:
        """Whether a traded refresh token presented again is a retry after a lost reply:
        within the grace period of its trade, and the session's live refresh token is
        still one it was traded for (the client never used the new pair). Reuse of any
        older token, or of one whose reply did arrive and was used, is theft as ever."""
        grace = self._settings.refresh_token_reuse_grace
        if not grace or now - used_at > grace:
            return False
        rotated_from = await tx.unused_refresh_tokens_from(session_id)
        return bool(rotated_from) and all(source == token_hash for source in rotated_from)

    async def revoke_token(self, token: str, reason: str = "") -> int:
        """Logout: ends the session of a token this authority signed, even an expired one."""
        _check_reason(reason)
        if not token:
            raise InvalidArgument("token", "must not be empty")
        try:
            claims = self._codec.identify(token)
        except InvalidToken:
            raise TokenRejected("the token is not one this authority issued") from None
        return await self._revoke(claims.subject, reason or "logout", claims.session_id, claims.token_id)

    async def revoke_refresh_token(self, refresh_token: str, reason: str = "") -> int:
        """Logout by refresh token (RFC 7009): ends the session it belongs to, traded or
        not; 0 when the store knows no such token (its session ended and was purged)."""
        _check_reason(reason)
        if not refresh_token:
            raise InvalidArgument("refresh_token", "must not be empty")
        if len(refresh_token) != _REFRESH_TOKEN_CHARS:
            raise InvalidArgument("refresh_token", "is not a refresh token this authority issues")
        async with self._store.transaction(read_only=True) as tx:
            found = await tx.refresh_token(_hash(refresh_token))
        if found is None:
            return 0
        return await self._revoke(found.session.subject, reason or "logout", found.session.session_id)

    async def revoke_session(self, session_id: str, reason: str = "") -> int:
        """Ends one session; 0 when it is unknown or already ended."""
        _check_reason(reason)
        check_identifier("session_id", session_id)
        async with self._store.transaction() as tx:
            session = await tx.session(session_id)
        if session is None:
            return 0
        return await self._revoke(session.subject, reason or "session revoked", session_id)

    async def revoke_subject(self, subject: str, reason: str = "") -> int:
        """Signs ``subject`` out everywhere; returns how many live sessions ended."""
        _check_reason(reason)
        check_identifier("subject", subject)
        return await self._revoke(subject, reason or "signed out everywhere")

    async def _revoke(
        self, subject: str, reason: str, session_id: str | None = None, token_id: str | None = None
    ) -> int:
        """Revokes the subject's live sessions (only ``session_id`` when given)."""

        async def work() -> int:
            async with self._store.transaction() as tx:
                await tx.lock_subject(subject)
                now = self._clock()
                live = await tx.live_sessions(subject, now, self._settings.idle_cutoff(now))
                ended = [s for s in live if session_id is None or s.session_id == session_id]
                entries = await tx.revoke(ended, now, reason, token_id)
            self._mirror.add(entries)
            return len(entries)

        return await _to_the_end(work())

    async def list_sessions(self, subject: str) -> list[SessionRecord]:
        """The subject's live sessions, oldest first."""
        check_identifier("subject", subject)
        now = self._clock()
        return await self._store.live_sessions(subject, now, self._settings.idle_cutoff(now))


def _access_expiry(now: float, access_ttl: int, session_expires_at: float) -> int:
    # An access token never outlives its session.
    return min(int(now) + access_ttl, int(session_expires_at))
