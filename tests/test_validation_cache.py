"""The validator's memory of verified tokens: it saves the signature check on a token seen
before, and never the checks that can change (expiry, revocation, the key ring)."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable

import pytest

from authority.config import Algorithm
from authority.errors import StaleView
from authority.keys import KeyRing, generate_key
from authority.revocations import RevocationMirror
from authority.store import Revocation
from authority.tokens import AccessClaims, InvalidToken, TokenCodec
from authority.validation import Validator

ISSUER, AUDIENCE = "token-authority", "api"
# These tests are about the cache; staleness has its own test at the end.
NEVER_STALE = math.inf


def _codec(clock: Callable[[], float] = time.time) -> TokenCodec:
    key = generate_key(Algorithm.EDDSA, time.time())
    return TokenCodec(KeyRing([key], Algorithm.EDDSA), ISSUER, leeway=0, clock=clock)


def _token(
    codec: TokenCodec, *, lifetime: int = 600, audience: str = AUDIENCE, session_id: str = "", now: int | None = None,
) -> str:
    now = int(time.time()) if now is None else now
    return codec.sign(
        AccessClaims(
            subject="someone", device_id="laptop", session_id=session_id or secrets.token_urlsafe(16),
            token_id=secrets.token_urlsafe(16), issuer=ISSUER, audience=audience,
            issued_at=now, expires_at=now + lifetime, extra={},
        )
    )


def _reason(validator: Validator, token: str, audience: str = "") -> str:
    try:
        validator.validate(token, audience)
    except InvalidToken as invalid:
        return invalid.reason.name
    return "VALID"


def test_a_remembered_token_is_still_rejected_once_its_session_is_revoked() -> None:
    codec, mirror = _codec(), RevocationMirror()
    validator = Validator(codec, mirror, AUDIENCE, NEVER_STALE)
    token = _token(codec, session_id="s-1")
    assert _reason(validator, token) == "VALID"
    assert validator.cached_tokens == 1

    mirror.add([Revocation(1, "s-1", None, time.time() + 600)])

    assert _reason(validator, token) == "REVOKED"


def test_a_remembered_token_expires_on_time() -> None:
    # One clock for the verification and the cache, moved by the test: the token's last
    # instant and its first expired one, whatever the machine's speed.
    now = int(time.time())
    clock = [float(now)]
    codec = _codec(lambda: clock[0])
    validator = Validator(codec, RevocationMirror(), AUDIENCE, NEVER_STALE, clock=lambda: clock[0])
    token = _token(codec, lifetime=1, now=now)
    assert _reason(validator, token) == "VALID"
    clock[0] = now + 0.999
    assert _reason(validator, token) == "VALID"
    assert validator.cached_tokens == 1

    clock[0] = now + 1

    assert _reason(validator, token) == "EXPIRED"


def test_a_token_remembered_for_one_audience_is_checked_afresh_for_another() -> None:
    codec = _codec()
    validator = Validator(codec, RevocationMirror(), AUDIENCE, NEVER_STALE)
    token = _token(codec)
    assert _reason(validator, token) == "VALID"

    assert _reason(validator, token, "another-service") == "WRONG_AUDIENCE"
    assert _reason(validator, token, AUDIENCE) == "VALID"


def test_a_new_key_ring_forgets_every_remembered_token() -> None:
    codec = _codec()
    validator = Validator(codec, RevocationMirror(), AUDIENCE, NEVER_STALE)
    token = _token(codec)
    assert _reason(validator, token) == "VALID"

    codec.keyring = KeyRing([generate_key(Algorithm.EDDSA, time.time())], Algorithm.EDDSA)

    assert _reason(validator, token) == "UNKNOWN_KEY"


def test_a_tampered_copy_of_a_remembered_token_is_checked_in_full() -> None:
    codec = _codec()
    validator = Validator(codec, RevocationMirror(), AUDIENCE, NEVER_STALE)
    token = _token(codec)
    assert _reason(validator, token) == "VALID"
    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]

    assert _reason(validator, f"{header}.{payload}.{flipped}") == "BAD_SIGNATURE"


@pytest.mark.parametrize("size", [0, 3])
def test_the_memory_is_bounded(size: int) -> None:
    codec = _codec()
    validator = Validator(codec, RevocationMirror(), AUDIENCE, NEVER_STALE, cache_size=size)
    tokens = [_token(codec) for _ in range(10)]

    reasons = {_reason(validator, token) for token in tokens + tokens}

    assert reasons == {"VALID"}
    assert validator.cached_tokens <= max(size, 1)


def test_invalid_tokens_are_never_remembered() -> None:
    codec = _codec()
    validator = Validator(codec, RevocationMirror(), AUDIENCE, NEVER_STALE)

    assert _reason(validator, _token(codec, audience="elsewhere")) == "WRONG_AUDIENCE"
    assert _reason(validator, "a.b.c") == "MALFORMED"
    assert validator.cached_tokens == 0


def test_a_view_older_than_max_staleness_answers_nothing_until_confirmed_again() -> None:
    codec = _codec()
    token = _token(codec)
    now = [1000.0]
    mirror = RevocationMirror(monotonic=lambda: now[0])
    validator = Validator(codec, mirror, AUDIENCE, max_staleness=5)
    mirror.confirm(1000.0)
    validator.validate(token)

    now[0] = 1005.5
    with pytest.raises(StaleView):
        validator.validate(token)
    mirror.confirm(1005.0)

    assert validator.validate(token).subject
