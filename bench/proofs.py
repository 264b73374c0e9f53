"""Device-bound tokens in the benchmark: bound tokens with their DPoP proofs, for the
authority's cold ValidateToken (beside cold bearer tokens, by server CPU per call) and
for the consumer's local verifier (:class:`TokenVerifier` with a :class:`ProofChecker`).

A proof is good for one request and for ``proof_max_age`` (60 s) around its ``iat``, so
proofs are signed just before the round or pass that sends them, never ahead of the run.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Callable, Sequence

from authority_client.proof import DeviceKey, ProofChecker
from authority_client.verify import KeySet, TokenVerifier

from authority.config import Settings
from authority.tokens import AccessClaims, TokenCodec
from bench.consumer import Rate
from bench.load import PROOF_METHOD, PROOF_URI

PASSES = 3
LOCAL_BEARER = "TokenVerifier.verify, cold bearer token"
LOCAL_BOUND = "TokenVerifier.verify + ProofChecker, cold bound token with its proof"


def mint_bound(codec: TokenCodec, settings: Settings, device: DeviceKey, count: int) -> list[str]:
    """Tokens bound to ``device``'s key, each new (no session needs to exist: validation
    reads none)."""
    now = int(time.time())
    return [
        codec.sign(AccessClaims(
            subject=f"bench-device-user-{n}", device_id="bench-device", session_id=secrets.token_urlsafe(16),
            token_id=secrets.token_urlsafe(16), issuer=settings.issuer, audience=settings.default_audience,
            issued_at=now, expires_at=now + 3600, extra={}, key_thumbprint=device.thumbprint,
        ))
        for n in range(count)
    ]


def with_proofs(device: DeviceKey, tokens: Sequence[str]) -> list[str]:
    """``token proof`` items for the ``validate-bound`` load: a fresh proof per token."""
    return [f"{token} {device.proof(PROOF_METHOD, PROOF_URI, access_token=token)}" for token in tokens]


def local_rates(codec: TokenCodec, settings: Settings, bearer: Sequence[str], bound: Sequence[str],
                device: DeviceKey) -> dict[str, Rate]:
    """The local verifier on bearer tokens and on bound tokens with their proofs, passes
    interleaved; each pass signs its proofs before its clock starts."""
    keys = KeySet.from_jwks(codec.keyring.jwks_json)
    # One device key signs every proof here: its quota of the replay cache is the whole cache.
    size = PASSES * len(bound) + 1
    proofs = ProofChecker(replay_cache_size=size, per_key_limit=size)
    verifier = TokenVerifier(keys, issuer=settings.issuer, leeway=settings.leeway, proofs=proofs)
    audience = settings.default_audience
    rates: dict[str, list[float]] = {LOCAL_BEARER: [], LOCAL_BOUND: []}
    for _ in range(PASSES):
        signed = [(token, device.proof_for(PROOF_METHOD, PROOF_URI, access_token=token)) for token in bound]
        rates[LOCAL_BEARER].append(_rate(bearer, lambda token: verifier.verify(token, audience)))
        rates[LOCAL_BOUND].append(_rate(signed, lambda pair: verifier.verify(pair[0], audience, pair[1])))
    calls = {LOCAL_BEARER: PASSES * len(bearer), LOCAL_BOUND: PASSES * len(bound)}
    return {name: Rate(name, calls[name], statistics.median(values)) for name, values in rates.items()}


def _rate(items: Sequence[object], check: Callable[..., object]) -> float:
    started = time.perf_counter()
    for item in items:
        check(item)
    return len(items) / (time.perf_counter() - started)

