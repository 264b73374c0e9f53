"""Deciding whether a token is good: remotely, or in-process with a revocation mirror.

Two modes, chosen by :class:`ValidationSettings`:

``Mode.REMOTE``
    Every token is checked with ValidateToken. With ``cache_size`` > 0, valid answers are
    cached (see :mod:`authority_client.cache`); the cache then follows the revocation
    stream, which evicts a revoked session's entries as soon as the revocation arrives,
    and is consulted only while that stream is fresh, so a cached answer is never older
    than ``max_staleness`` in what it knows of revocations. A device-bound token is never
    cached, and a call that comes with a proof never reads the cache: a proof is
    single-use and checked by the authority (its replay cache) on every call, so a cached
    answer could admit a replayed proof or a copied token with none.

``Mode.LOCAL``
    Signatures and claims are checked in-process (:mod:`authority_client.verify`) with the
    keys of GetSigningKeys and the stream, and revocations against the
    :class:`~authority_client.local.mirror.RevocationMirror`. A token whose signature or claims
    are bad is refused on the spot. With ``local_cache_size`` > 0, a token verified in
    full is remembered until it expires or the key set changes
    (:mod:`authority_client.local.verified`), so the same token again skips the signature check;
    revocation and freshness are still checked on every call, and so is a device-bound
    token's proof, hit or miss. A good one is accepted only while the mirror is fresh;
    otherwise ValidateToken decides, and when the authority cannot be reached either, the
    call is refused with :class:`~authority_client.errors.Unavailable`. Nothing is ever
    accepted on a view that cannot vouch for it.

:class:`Validator` (blocking, for grpc) and :class:`AsyncValidator` (for grpc.aio) share
the decisions in :class:`_Decisions` and differ only in how they call the authority.
Both raise :class:`InvalidToken` for a bad token and :class:`Unavailable` when they cannot
tell.

``validate(token, audience, proof)`` takes the DPoP proof that came with the call
(:class:`~authority_client.proof.Proof`: the proof and the method and URI it must name),
or None. Local mode checks it with the verifier's :class:`~authority_client.proof.ProofChecker`
(one per validator, so its replay cache spans every call this process admits); remote mode
passes it to ValidateToken. Either way a bound token without a proof is PROOF_REQUIRED and
a bad proof BAD_PROOF. When local mode must ask the authority (a stale mirror), a proof
already checked here is checked there too, in the authority's own replay cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final

from authority_client.async_client import AsyncAuthorityClient
from authority_client.cache import ClaimsCache
from authority_client.client import AuthorityClient
from authority_client.errors import AuthorityError, Unavailable
from authority_client.local.follow import AsyncMirrorFollower, FollowSettings, MirrorFollower
from authority_client.local.keys import SigningKeys
from authority_client.local.mirror import RevocationMirror
from authority_client.local.verified import DEFAULT_SIZE, VerifiedTokens
from authority_client.proof import DEFAULT_MAX_AGE, DEFAULT_REPLAY_CACHE_SIZE, Proof, ProofChecker
from authority_client.types import AccessClaims, InvalidReason, Validation
from authority_client.verify import InvalidToken, TokenVerifier

log = logging.getLogger(__name__)


class Mode(enum.Enum):
    """Where tokens are checked."""

    REMOTE = "remote"
    LOCAL = "local"


@dataclasses.dataclass(frozen=True)
class ValidationSettings:
    """How a consumer validates tokens; durations in seconds."""

    mode: Mode = Mode.LOCAL
    # The authority's ``iss``; local mode checks it.
    issuer: str = "token-authority"
    # How long the revocation mirror may go unheard before it stops vouching.
    max_staleness: float = 5.0
    # Clock skew allowed on exp/nbf in local mode (the authority's default).
    leeway: float = 30.0
    # Remote mode: cached valid answers (0: no cache) and how long each may live.
    cache_size: int = 0
    cache_ttl: float = 30.0
    # Local mode: the least time between two key fetches for an unknown kid.
    key_refetch_interval: float = 1.0
    # Local mode: tokens remembered once verified in full (0: verify every call in full).
    local_cache_size: int = DEFAULT_SIZE
    # Local mode, DPoP proofs: how far a proof's iat may be from now (either way), and how
    # many proofs the replay cache holds before it refuses new ones rather than forget.
    proof_max_age: float = DEFAULT_MAX_AGE
    proof_replay_cache_size: int = DEFAULT_REPLAY_CACHE_SIZE
    follow: FollowSettings = FollowSettings()

    def __post_init__(self) -> None:
        if self.max_staleness <= 0 or self.cache_ttl <= 0 or self.cache_size < 0 or self.leeway < 0:
            raise ValueError("durations must be positive and cache_size not negative")
        if self.local_cache_size < 0:
            raise ValueError("local_cache_size must not be negative")
        if self.proof_max_age <= 0 or self.proof_replay_cache_size <= 0:
            raise ValueError("proof_max_age and proof_replay_cache_size must be positive")

    @property
    def follows_stream(self) -> bool:
        """Whether this configuration keeps a revocation mirror."""
        return self.mode is Mode.LOCAL or self.cache_size > 0


class _Step(enum.Enum):
    REFETCH_KEYS = "refetch keys"
    ASK_AUTHORITY = "ask the authority"


_UNAVAILABLE_MESSAGE: Final = "the token authority cannot be reached to check the token"


class _Decisions:
    """Everything a validator decides without I/O; the I/O is the caller's."""

    def __init__(self, settings: ValidationSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.mirror: RevocationMirror | None = None
        self.keys: SigningKeys | None = None
        self.cache: ClaimsCache | None = None
        self.verified: VerifiedTokens | None = None
        if settings.follows_stream:
            self.mirror = RevocationMirror(max_staleness=settings.max_staleness, leeway=settings.leeway, clock=clock)
        if settings.mode is Mode.LOCAL:
            self.keys = SigningKeys(
                issuer=settings.issuer,
                leeway=settings.leeway,
                refetch_interval=settings.key_refetch_interval,
                clock=clock,
                proofs=ProofChecker(
                    max_age=settings.proof_max_age, replay_cache_size=settings.proof_replay_cache_size, clock=clock
                ),
            )
            assert self.mirror is not None
            self.mirror.on_signing_keys(self.keys.replace_announced)
            if settings.local_cache_size > 0:
                self.verified = VerifiedTokens(settings.local_cache_size, leeway=settings.leeway, clock=clock)
        elif settings.cache_size > 0:
            self.cache = ClaimsCache(settings.cache_size, settings.cache_ttl, clock)
            assert self.mirror is not None
            self.mirror.on_revocation(self.cache.evict)

    def first(self, token: str, audience: str, proof: Proof | None = None) -> AccessClaims | _Step:
        """The verdict, or what must happen before there can be one."""
        if self.keys is None:
            # A bound token is never put; a proof, even with an unbound token, is the
            # authority's to judge (an unbound token with a proof is BAD_PROOF).
            if self.cache is not None and proof is None and self._mirror_fresh():
                cached = self.cache.get(token, audience)
                if cached is not None:
                    return cached
            return _Step.ASK_AUTHORITY
        verifier = self.keys.verifier
        if verifier is None:
            return _Step.REFETCH_KEYS if self.keys.claim_refetch() else _Step.ASK_AUTHORITY
        try:
            claims = self._verified(verifier, token, audience, proof)
        except InvalidToken as invalid:
            # A kid newer than our set: its key may be on its way.
            if invalid.reason is InvalidReason.UNKNOWN_KEY and self.keys.claim_refetch():
                return _Step.REFETCH_KEYS
            raise
        return self._vouch(claims)

    def after_refetch(self, token: str, audience: str, proof: Proof | None = None) -> AccessClaims | _Step:
        """The verdict once the keys were fetched again (or could not be)."""
        assert self.keys is not None
        if self.keys.verifier is None:
            return _Step.ASK_AUTHORITY
        return self._vouch(self._verified(self.keys.verifier, token, audience, proof))

    def _verified(self, verifier: TokenVerifier, token: str, audience: str, proof: Proof | None) -> AccessClaims:
        """The claims of a token verified now or remembered from before, its proof checked
        either way. Revocation is checked after (:meth:`_vouch`), and also before a proof is
        spent: a token the mirror knows to be revoked, fresh or not, spends none."""
        if self.verified is None:
            return verifier.verify(token, audience, proof, admit=self._not_known_revoked)
        return self.verified.verify(verifier, token, audience, proof, admit=self._not_known_revoked)

    def _not_known_revoked(self, claims: AccessClaims) -> None:
        # A revocation is final, so the mirror's word stands however old the mirror is.
        refusal = None if self.mirror is None else self.mirror.refusal(claims.session_id, claims.token_id)
        if refusal is not None:
            raise refusal

    def answer(self, token: str, audience: str, validation: Validation) -> AccessClaims:
        """The authority's verdict, remembered when there is a cache."""
        if not validation.valid or validation.claims is None:
            raise InvalidToken(
                validation.reason or InvalidReason.MALFORMED,
                validation.revocation_cause,
                replaced_by_device_id=validation.replaced_by_device_id,
                replaced_by_device_name=validation.replaced_by_device_name,
            )
        claims = validation.claims
        if self.cache is not None and not claims.key_thumbprint:
            self.cache.put(token, audience, claims)
        # Checked after the put: a revocation that arrived while the call was in flight
        # either shows here or evicts the entry just put, never neither. A revocation is
        # final, so one the mirror knows of wins over a replica that has not seen it yet.
        refusal = None if self.mirror is None else self.mirror.refusal(claims.session_id, claims.token_id)
        if refusal is not None:
            if self.cache is not None:
                self.cache.evict(claims.session_id, claims.token_id)
            raise refusal
        return claims

    def _vouch(self, claims: AccessClaims) -> AccessClaims | _Step:
        if not self._mirror_fresh():
            return _Step.ASK_AUTHORITY
        assert self.mirror is not None
        if self.mirror.is_revoked(claims.session_id, claims.token_id):
            raise self.mirror.refusal(claims.session_id, claims.token_id) or InvalidToken(InvalidReason.REVOKED)
        return claims

    def _mirror_fresh(self) -> bool:
        return self.mirror is not None and self.mirror.is_fresh()


def _unavailable(error: AuthorityError) -> Unavailable:
    log.warning("could not check a token with the authority: %s", error.code.name)
    return Unavailable(_UNAVAILABLE_MESSAGE)


class Validator:
    """Validates tokens for a grpc (threaded) server; see the module docstring.

    :meth:`start` starts the revocation follower thread, when the mode needs one; use it
    as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        client: AuthorityClient,
        settings: ValidationSettings = ValidationSettings(),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.settings = settings
        self._decisions = _Decisions(settings, clock)
        self.mirror = self._decisions.mirror
        self._follower = (
            MirrorFollower(client, self.mirror, settings.follow) if self.mirror is not None else None
        )

    def start(self) -> Validator:
        """Fetches the signing keys (local mode; a failure is retried later) and starts following."""
        if self._decisions.keys is not None:
            try:
                self._decisions.keys.replace_fetched(self.client.get_signing_key_set())
            except AuthorityError as error:
                log.warning("could not fetch the signing keys at start: %s", error.code.name)
        if self._follower is not None:
            self._follower.start()
        return self

    def wait_until_fresh(self, timeout: float) -> bool:
        """Blocks until the mirror can vouch (at once when there is none); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.mirror is not None and not self.mirror.is_fresh():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def validate(self, token: str, audience: str, proof: Proof | None = None) -> AccessClaims:
        """The token's claims; raises :class:`InvalidToken` or :class:`Unavailable`.

        ``proof``: the DPoP proof that came with the call, for a device-bound token."""
        step = self._decisions.first(token, audience, proof)
        if step is _Step.REFETCH_KEYS:
            assert self._decisions.keys is not None
            try:
                self._decisions.keys.replace_fetched(self.client.get_signing_key_set())
            except AuthorityError as error:
                raise _unavailable(error) from None
            step = self._decisions.after_refetch(token, audience, proof)
        if step is _Step.ASK_AUTHORITY:
            try:
                validation = self.client.validate_token(token, audience, proof=proof)
            except AuthorityError as error:
                raise _unavailable(error) from None
            return self._decisions.answer(token, audience, validation)
        assert isinstance(step, AccessClaims)
        return step

    def close(self) -> None:
        """Stops following the stream (the client stays open)."""
        if self._follower is not None:
            self._follower.stop()

    def __enter__(self) -> Validator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncValidator:
    """Validates tokens for a grpc.aio server; the asyncio twin of :class:`Validator`."""

    def __init__(
        self,
        client: AsyncAuthorityClient,
        settings: ValidationSettings = ValidationSettings(),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.settings = settings
        self._decisions = _Decisions(settings, clock)
        self.mirror = self._decisions.mirror
        self._follower = (
            AsyncMirrorFollower(client, self.mirror, settings.follow) if self.mirror is not None else None
        )

    async def start(self) -> AsyncValidator:
        """Fetches the signing keys (local mode; a failure is retried later) and starts following."""
        if self._decisions.keys is not None:
            try:
                self._decisions.keys.replace_fetched(await self.client.get_signing_key_set())
            except AuthorityError as error:
                log.warning("could not fetch the signing keys at start: %s", error.code.name)
        if self._follower is not None:
            self._follower.start()
        return self

    async def wait_until_fresh(self, timeout: float) -> bool:
        """Waits until the mirror can vouch (at once when there is none); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.mirror is not None and not self.mirror.is_fresh():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def validate(self, token: str, audience: str, proof: Proof | None = None) -> AccessClaims:
        """The token's claims; raises :class:`InvalidToken` or :class:`Unavailable`.

        ``proof``: the DPoP proof that came with the call, for a device-bound token."""
        step = self._decisions.first(token, audience, proof)
        if step is _Step.REFETCH_KEYS:
            assert self._decisions.keys is not None
            try:
                self._decisions.keys.replace_fetched(await self.client.get_signing_key_set())
            except AuthorityError as error:
                raise _unavailable(error) from None
            step = self._decisions.after_refetch(token, audience, proof)
        if step is _Step.ASK_AUTHORITY:
            try:
                validation = await self.client.validate_token(token, audience, proof=proof)
            except AuthorityError as error:
                raise _unavailable(error) from None
            return self._decisions.answer(token, audience, validation)
        assert isinstance(step, AccessClaims)
        return step

    async def close(self) -> None:
        """Stops following the stream (the client stays open)."""
        if self._follower is not None:
            await self._follower.stop()

    async def __aenter__(self) -> AsyncValidator:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
