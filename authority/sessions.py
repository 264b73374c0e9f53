"""The single-device policy: who is signed in, who gets signed out, and refresh.

A session is one subject on one device. A sign-in reads the subject's live sessions,
decides here, and writes the decision only if those sessions are still the subject's live
ones when the write holds the subject's lock (authority.store.signin: two round trips on
PostgreSQL); otherwise it reads and decides again. So concurrent sign-ins of one subject
(from any number of replicas) are decided one after another, each on what the one
before it wrote. Who is signed out
is decided by :func:`authority.policy.decide` (same device, device classes under
``session_limits``, the total cap); REJECT refuses a sign-in that would sign another
device out, and a guarded sign-in (``expected_replacements``) that would sign out other
sessions than expected is aborted; either way nothing changes but the refusal's event.
Where the policy signs out every live session whichever they are
(:func:`authority.policy.replaces_every_live_session`: the single-device rule as it
comes) there is nothing to decide on, and on PostgreSQL the sign-in is the write alone,
which revokes the live sessions it finds under the lock (one round trip).

Every change is recorded in the session event log in the same transaction.

A sign-in with a DPoP proof binds its session to the proof's key, and a bound session's
refresh token is traded only with a proof by that key, checked before reuse detection
and before anything is written (:mod:`authority.binding`).

Every revocation committed here is applied to the in-memory mirror before the call
returns, so this process rejects the revoked tokens from then on. A unit of work runs to
its end even when the RPC that started it is cancelled, so a commit is never left
without its mirror update.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from authority_client.proof import Proof

from authority.binding import Binding, proof_checker
from authority.config import Policy, Settings
from authority.errors import (
    InvalidArgument,
    RefreshTokenRejected,
    RefreshTokenReused,
    SessionLimitReached,
    SignInAborted,
    StoreUnavailable,
)
from authority.policy import (
    Decision,
    check_device_name,
    check_no_controls,
    class_of,
    decide,
    replaces_every_live_session,
)
from authority.revocations import RevocationMirror
from authority.store import (
    Revocation,
    RevocationCause,
    SessionEvent,
    SessionEventKind,
    SessionRecord,
    Store,
    Tx,
)
from authority.store.signin import SignInWrite, sign_in_unit
from authority.signouts import REFRESH_TOKEN_CHARS, SignOuts, check_identifier, hash_refresh_token, to_the_end
from authority.tokens import (
    MAX_TOKEN_BYTES,
    RESERVED_CLAIMS,
    AccessClaims,
    TokenCodec,
    check_claim_names,
    check_claims_depth,
)

log = logging.getLogger(__name__)

MAX_CLAIMS_BYTES = 4096
# Sign-ins of one subject that another writer overtook between read and write are tried
# again this many times unlocked, then under the subject's lock (which cannot be overtaken).
_UNLOCKED_ATTEMPTS = 2


@dataclasses.dataclass(frozen=True, slots=True)
class SignIn:
    """What a sign-in or refresh hands back; the tokens are shown only here."""

    access_token: str
    refresh_token: str
    session_id: str
    expires_at: int
    refresh_expires_at: float
    replaced_session_ids: tuple[str, ...] = ()
    # The thumbprint of the device key the tokens are bound to; "" for bearer tokens.
    key_thumbprint: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Device:
    """The device a sign-in comes from, as the login service describes it."""

    device_id: str
    device_class: str = ""
    device_name: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Preview:
    """What a sign-in would do now: whether it is allowed, and whom it would sign out."""

    allowed: bool
    would_replace: tuple[SessionRecord, ...]


def _claims_json(claims: Mapping[str, Any]) -> str:
    reserved = sorted(RESERVED_CLAIMS & claims.keys())
    if reserved:
        verb = "is" if len(reserved) == 1 else "are"
        raise InvalidArgument("claims", f"{', '.join(reserved)} {verb} set by the authority and may not be given")
    # Checked with the request, as signing would (tokens.py): before a proof is spent, a
    # refusal recorded or a preview allowed for a sign-in that could never be signed.
    check_claims_depth(claims)
    check_claim_names(claims)
    try:
        text = json.dumps(claims, allow_nan=False, separators=(",", ":"), sort_keys=True)
    except ValueError:
        raise InvalidArgument("claims", "numbers must be finite") from None
    if len(text.encode(errors="surrogatepass")) > MAX_CLAIMS_BYTES:
        raise InvalidArgument("claims", f"must be at most {MAX_CLAIMS_BYTES} bytes as JSON")
    return text


# The token-size check's cheap bound (see Sessions._check_token_size): the payload's names,
# numbers, ids and cnf come to under 300 characters; a header with its kid and an RSA-4096
# signature, encoded, to under 1,000.
_ESCAPED_AT_MOST = 12
_FIXED_PAYLOAD = 300
_HEADER_AND_SIGNATURE = 1_000
# As long as a session id and a token id (token_urlsafe(16)), and a JWK thumbprint.
_STAND_IN_ID = "-" * 22
_STAND_IN_THUMBPRINT = "-" * 43


def _token_too_large() -> InvalidArgument:
    return InvalidArgument("claims", f"with this subject and device_id the token would exceed {MAX_TOKEN_BYTES} bytes")


def _refreshed_token_too_large() -> InvalidArgument:
    # The session's claims, signed in under a key with a shorter signature, no longer fit:
    # this refresh token cannot be traded as it stands, and retrying cannot help. Named
    # after RefreshToken's one field: the clients read FAILED_PRECONDITION as a sign-in's
    # session limit.
    return InvalidArgument(
        "refresh_token", f"its session's access token would exceed {MAX_TOKEN_BYTES} bytes with the current "
        "signing key, so it cannot be refreshed (nothing changed); sign in again, with smaller claims",
    )


def _refreshed_claims_refused(refused: InvalidArgument) -> InvalidArgument:
    # The session's stored claims break a rule made after it signed in (a NUL in a nested
    # name): every verifier would refuse its token, so none is issued. Named after
    # RefreshToken's one field, as above.
    return InvalidArgument(
        "refresh_token", f"its session's claims can no longer be signed ({refused}), so it cannot be refreshed "
        "(nothing changed); sign in again, with other claims",
    )


# Called with a sign-in's or refresh's outcome before it commits; raising rolls it back.
BeforeCommit = Callable[[SignIn], object]


def _accept(_: SignIn) -> None:
    """The default check before commit: every outcome is fine."""


@dataclasses.dataclass(frozen=True, slots=True)
class _SignInRequest:
    """A checked sign-in request."""

    subject: str
    device: Device
    counted_class: str
    policy: Policy
    audience: str
    claims_json: str
    access_ttl: int
    key_thumbprint: str = ""


class Sessions(SignOuts):
    """Signs subjects in and out (the sign-outs are :class:`SignOuts`), and trades refresh tokens."""

    def __init__(
        self,
        store: Store,
        codec: TokenCodec,
        mirror: RevocationMirror,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        binding: Binding | None = None,
    ) -> None:
        self._store = store
        self._codec = codec
        self._mirror = mirror
        self._settings = settings
        self._clock = clock
        self._binding = binding or Binding(proof_checker(settings, clock), settings)

    def _check_device(self, device: Device) -> str:
        """Checks the device fields; returns the class the sign-in counts in."""
        check_identifier("device_id", device.device_id)
        _check_no_controls("device_id", device.device_id)
        check_device_name(device.device_name)
        return class_of(device.device_class, self._settings.class_limits)

    async def sign_in(
        self,
        subject: str,
        device: Device | str,
        *,
        policy: Policy | None = None,
        audience: str = "",
        claims: Mapping[str, Any] | None = None,
        ttl: float | None = None,
        expected_replacements: Sequence[str] | None = None,
        caller: str = "",
        before_commit: BeforeCommit | None = None,
        proof: Proof | None = None,
    ) -> SignIn:
        """Signs ``subject`` in on ``device`` under the single-device policy; with a
        ``proof``, the session is bound to the proof's key.

        Raises :class:`InvalidArgument` for a bad request (``proof`` for one required and
        absent, or one that fails a check), :class:`SessionLimitReached`
        when the policy is REJECT and another device would be signed out, and
        :class:`SignInAborted` when ``expected_replacements`` is given and the sessions
        the sign-in would sign out are not exactly those. ``before_commit`` is called
        with the outcome before it is written (the caller builds its reply there):
        whatever it raises writes nothing. A sign-in that replaces every live session
        without reading them (see :meth:`_sign_in`) learns which it replaced only from
        the write: its outcome there has no ``replaced_session_ids`` yet.
        """
        request = self._request(subject, device, policy, audience, claims, ttl, bound=proof is not None)
        # Last of the checks: a sign-in refused for another field leaves the proof unused.
        request = dataclasses.replace(request, key_thumbprint=self._binding.sign_in_key(proof, request.audience))
        expected = None if expected_replacements is None else frozenset(expected_replacements)
        try:
            return await to_the_end(self._sign_in(request, expected, caller, before_commit or _accept))
        except (SessionLimitReached, SignInAborted):
            await to_the_end(self._record_refusal(request, caller))
            raise

    def _request(
        self, subject: str, device: Device | str, policy: Policy | None, audience: str,
        claims: Mapping[str, Any] | None, ttl: float | None, *, bound: bool,
    ) -> _SignInRequest:
        """The checked request; :class:`InvalidArgument` naming the first bad field.
        ``bound``: whether its token will carry a key thumbprint (a proof was given)."""
        device = Device(device) if isinstance(device, str) else device
        check_identifier("subject", subject)
        _check_no_controls("subject", subject)
        counted_class = self._check_device(device)
        audience = audience or self._settings.default_audience
        if audience not in self._settings.audiences:
            raise InvalidArgument("audience", "is not an audience this authority issues tokens for")
        claims_json = _claims_json(claims or {})
        access_ttl = self._access_ttl(ttl)
        policy = policy or self._settings.default_policy
        request = _SignInRequest(subject, device, counted_class, policy, audience, claims_json, access_ttl)
        self._check_token_size(request, bound)
        return request

    def _check_token_size(self, request: _SignInRequest, bound: bool) -> None:
        """Refuses a sign-in whose token would exceed MAX_TOKEN_BYTES, with the request: before
        a proof is spent, a refusal recorded or a preview allowed for it. Most requests are
        far below by a cheap bound; a large one is signed once with stand-ins as long as the
        session's own values. (:meth:`_tokens` still checks the real token.)"""
        identifiers = request.subject, request.device.device_id, request.audience, self._settings.issuer
        # Any character escapes to at most 12 in the payload's JSON; the claims are JSON already.
        payload = _ESCAPED_AT_MOST * sum(map(len, identifiers)) + len(request.claims_json) + _FIXED_PAYLOAD
        if payload * 4 // 3 + _HEADER_AND_SIGNATURE <= MAX_TOKEN_BYTES:
            return
        now = int(self._clock())
        stand_in = AccessClaims(
            subject=request.subject, device_id=request.device.device_id, session_id=_STAND_IN_ID,
            token_id=_STAND_IN_ID, issuer=self._settings.issuer, audience=request.audience, issued_at=now,
            expires_at=now + request.access_ttl, extra=json.loads(request.claims_json),
            key_thumbprint=_STAND_IN_THUMBPRINT if bound else "",
        )
        if len(self._codec.sign(stand_in)) > MAX_TOKEN_BYTES:
            raise _token_too_large()

    async def preview(
        self,
        subject: str,
        device: Device,
        *,
        policy: Policy | None = None,
        audience: str = "",
        claims: Mapping[str, Any] | None = None,
        ttl: float | None = None,
        expected_replacements: Sequence[str] | None = None,
        proof: Proof | None = None,
    ) -> Preview:
        """What :meth:`sign_in` would do now with these arguments (the same checks, the same
        decision); changes nothing. A proof required and absent is refused as by
        :meth:`sign_in`; a proof given is not checked: checking records its jti, and the
        device's sign-in proof must stay good for the sign-in that follows."""
        request = self._request(subject, device, policy, audience, claims, ttl, bound=proof is not None)
        self._binding.require(proof, request.audience)
        now = self._clock()
        live = await self._store.live_sessions(subject, now, self._settings.idle_cutoff(now))
        decision = self._decide(live, request.device.device_id, request.counted_class, request.policy)
        allowed = not decision.refused and (
            expected_replacements is None or decision.replaced_ids == frozenset(expected_replacements)
        )
        return Preview(allowed, decision.replaced)

    def _decide(self, live: Sequence[SessionRecord], device_id: str, counted_class: str, policy: Policy) -> Decision:
        settings = self._settings
        return decide(live, device_id, counted_class, policy, settings.class_limits, settings.total_session_cap)

    async def _sign_in(
        self, request: _SignInRequest, expected: frozenset[str] | None, caller: str, before_commit: BeforeCommit
    ) -> SignIn:
        # Read, decide here, write if nothing changed meanwhile (authority/store/signin.py);
        # a subject that keeps changing under the reads is signed in under its lock. One
        # that replaces every live session, whichever they are, needs no read where the
        # write can find them itself (PostgreSQL: one round trip, which cannot conflict).
        refresh_token = secrets.token_urlsafe(32)
        settings = self._settings
        unread = expected is None and replaces_every_live_session(
            request.policy, settings.class_limits, settings.total_session_cap
        )
        for attempt in range(_UNLOCKED_ATTEMPTS + 1):
            async with sign_in_unit(self._store, request.subject, locked=attempt == _UNLOCKED_ATTEMPTS) as unit:
                now = self._clock()
                idle_cutoff = settings.idle_cutoff(now)
                live = None
                if not (unread and unit.writes_unread):
                    live = await unit.live_sessions(request.subject, now, idle_cutoff)
                decision = Decision((), False) if live is None else self._checked_decision(request, live, expected)
                decided_on = None if live is None else frozenset(s.session_id for s in live)
                session = self._new_session(request, now)
                # Signed before the write: a token that cannot be issued writes nothing.
                signed_in = self._tokens(session, refresh_token, now)
                replaced = tuple(s.session_id for s in decision.replaced)
                signed_in = dataclasses.replace(signed_in, replaced_session_ids=replaced)
                before_commit(signed_in)
                device = request.device
                entries = await unit.write(
                    SignInWrite(
                        request.subject, now, idle_cutoff, decided_on, session, hash_refresh_token(refresh_token),
                        decision.replaced, "replaced by a new sign-in",
                        RevocationCause.REPLACED_BY_SIGN_IN, (device.device_id, device.device_name), caller,
                        self._event(SessionEventKind.SIGNED_IN, request, now, session.session_id, replaced, caller),
                    )
                )
            if entries is not None:
                self._mirror.add(entries)
                if live is None:  # written unread: it replaced the sessions of its log entries
                    replaced = tuple(entry.session_id for entry in entries)
                    signed_in = dataclasses.replace(signed_in, replaced_session_ids=replaced)
                return signed_in
        raise AssertionError("a locked sign-in cannot conflict")  # pragma: no cover

    def _checked_decision(
        self, request: _SignInRequest, live: Sequence[SessionRecord], expected: frozenset[str] | None
    ) -> Decision:
        """The policy's decision on ``live``; raises for a refused or an unexpected one."""
        decision = self._decide(live, request.device.device_id, request.counted_class, request.policy)
        if decision.refused:
            raise SessionLimitReached(
                f"the subject is already signed in on {len(live)} device(s), the most allowed"
                + ("" if request.counted_class == "*" else f" for device_class {request.counted_class!r}")
                + " or in total"
            )
        if expected is not None and decision.replaced_ids != expected:
            raise SignInAborted(
                "expected_replacements: the sign-in would sign out other sessions than expected; preview it again"
            )
        return decision

    @staticmethod
    def _event(
        kind: SessionEventKind, request: _SignInRequest, now: float, session_id: str, replaced: tuple[str, ...],
        caller: str,
    ) -> SessionEvent:
        device = request.device
        return SessionEvent(
            kind, now, request.subject, session_id, device.device_id, device.device_class, device.device_name,
            replaced, caller=caller,
        )

    async def _record_refusal(self, request: _SignInRequest, caller: str) -> None:
        """Records a refused sign-in, in a transaction of its own (the sign-in's rolled back).
        The caller is told of the refusal even when the record cannot be written."""
        now = self._clock()
        try:
            live = await self._store.live_sessions(request.subject, now, self._settings.idle_cutoff(now))
            decision = self._decide(live, request.device.device_id, request.counted_class, request.policy)
            replaced = tuple(s.session_id for s in decision.replaced)
            async with self._store.transaction() as tx:
                tx.record(self._event(SessionEventKind.SIGN_IN_REFUSED, request, now, "", replaced, caller))
        except StoreUnavailable:
            log.warning("a refused sign-in could not be recorded in the session event log: the database is unavailable")

    def _access_ttl(self, ttl: float | None) -> int:
        if ttl is None:
            return self._settings.access_token_ttl
        if not ttl > 0:
            raise InvalidArgument("ttl", "must be positive")
        return min(math.ceil(ttl), self._settings.max_access_token_ttl)

    def _new_session(self, request: _SignInRequest, now: float) -> SessionRecord:
        expires_at = now + self._settings.refresh_token_ttl
        return SessionRecord(
            session_id=secrets.token_urlsafe(16),
            subject=request.subject,
            device_id=request.device.device_id,
            audience=request.audience,
            claims=request.claims_json,
            access_ttl=request.access_ttl,
            created_at=now,
            expires_at=expires_at,
            last_used_at=now,
            access_expires_at=_access_expiry(now, request.access_ttl, expires_at),
            revoked_at=None,
            device_class=request.device.device_class,
            device_name=request.device.device_name,
            key_thumbprint=request.key_thumbprint,
        )

    def _tokens(
        self, session: SessionRecord, refresh_token: str, now: float,
        too_large: Callable[[], InvalidArgument] = _token_too_large,
    ) -> SignIn:
        """Signs the session's access token; called before commit, so a token that cannot
        be issued rolls the sign-in (or refresh) back. One over MAX_TOKEN_BYTES raises
        ``too_large()``."""
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
            key_thumbprint=session.key_thumbprint,
        )
        access_token = self._codec.sign(claims)
        if len(access_token) > MAX_TOKEN_BYTES:
            raise too_large()
        return SignIn(
            access_token=access_token,
            refresh_token=refresh_token,
            session_id=session.session_id,
            expires_at=claims.expires_at,
            refresh_expires_at=session.expires_at,
            key_thumbprint=session.key_thumbprint,
        )

    async def refresh(
        self, refresh_token: str, before_commit: BeforeCommit | None = None, proof: Proof | None = None
    ) -> SignIn:
        """A new token pair on the refresh token's session; the presented one dies.

        A session bound to a device key needs a ``proof`` by that key (and a bearer
        session takes none): else :class:`RefreshTokenRejected`, decided before reuse
        detection, so a thief's copy of a traded refresh token cannot revoke the session.

        Raises :class:`RefreshTokenRejected` for an unknown token or an ended session,
        and :class:`RefreshTokenReused` (after revoking the session) for a token that was
        already traded: someone else holds a copy of it. The one exception is a retry
        within ``refresh_token_reuse_grace`` of the token traded last (see
        :meth:`_is_retry`). ``before_commit`` is as for :meth:`sign_in`.

        Raises :class:`InvalidArgument` naming ``refresh_token`` when the session's new access token would exceed
        MAX_TOKEN_BYTES with the current signing key; then nothing changes, and the
        refresh token stays untraded (it refreshes again once the signing key allows); the
        same, for good, when the session's stored claims are ones no token may carry
        (signed in before a rule that refuses them, such as a NUL in a nested name).
        """
        if not refresh_token:
            raise InvalidArgument("refresh_token", "must not be empty")
        if len(refresh_token) != REFRESH_TOKEN_CHARS:
            raise RefreshTokenRejected("the refresh token is not valid")
        return await to_the_end(self._refresh(hash_refresh_token(refresh_token), before_commit or _accept, proof))

    async def _refresh(self, token_hash: str, before_commit: BeforeCommit, proof: Proof | None) -> SignIn:
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
            session = found.session
            # Before anything is written or revoked: without the device's key, the token is no one's.
            self._binding.check_refresh(proof, session.key_thumbprint)
            now = self._clock()
            live = await tx.live_sessions(session.subject, now, self._settings.idle_cutoff(now))
            is_live = any(s.session_id == session.session_id for s in live)
            if found.used_at is not None and not (
                is_live and await self._is_retry(tx, token_hash, session.session_id, found.used_at, now)
            ):
                tx.record(SessionEvent(SessionEventKind.REFRESH_TOKEN_REUSED, now, session.subject, session.session_id,
                                       session.device_id, session.device_class, session.device_name))
                reused = await tx.revoke([session], now, "refresh token reused", cause=RevocationCause.REFRESH_TOKEN_REUSED)
            elif not is_live:
                raise RefreshTokenRejected("the session has ended")
            else:
                if found.used_at is None:
                    await tx.use_refresh_token(token_hash, now)
                else:
                    # A retry: the pair whose reply was lost loses its refresh token, so
                    # the session keeps one live refresh token.
                    await tx.end_unused_refresh_tokens(session.session_id, now)
                await tx.insert_refresh_token(
                    hash_refresh_token(new_token), session.session_id, now, rotated_from=token_hash,
                    key_thumbprint=session.key_thumbprint,
                )
                try:
                    signed_in = self._tokens(session, new_token, now, _refreshed_token_too_large)
                except InvalidArgument as refused:
                    if refused.field != "claims":
                        raise
                    raise _refreshed_claims_refused(refused) from None
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

    async def list_sessions(self, subject: str) -> list[SessionRecord]:
        """The subject's live sessions, oldest first."""
        check_identifier("subject", subject)
        now = self._clock()
        return await self._store.live_sessions(subject, now, self._settings.idle_cutoff(now))


def _access_expiry(now: float, access_ttl: int, session_expires_at: float) -> int:
    # An access token never outlives its session.
    return min(int(now) + access_ttl, int(session_expires_at))


def _check_no_controls(field: str, value: str) -> None:
    # A new session's subject and device id end up in token claims, log lines and, through
    # Envoy, in the identity headers of upstream requests: a newline there could forge a
    # header. Sign-in refuses control characters; lookups and revocations still accept
    # what was signed in before this rule.
    check_no_controls(field, value)
