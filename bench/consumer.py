"""The consumer package's local verifier, in this process: how many tokens a consumer
service checks per second without calling the authority.

Measured through :class:`authority_client.Validator` in local mode, exactly as the
interceptors call it (keys from GetSigningKeys, the revocation mirror following
WatchRevocations, its freshness and revocation checks on every call), beside the bare
:class:`~authority_client.verify.TokenVerifier` under it and a bare ``jwt.decode`` of
the same tokens (PyJWT with the public key, audience and issuer), all in the same run.
Each rate is the median of three timed passes; a cold pass uses tokens no verifier in
this process has seen.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jwt
from authority_client import AuthorityClient, Mode, ValidationSettings, Validator
from authority_client.verify import KeySet, TokenVerifier

PASSES = 3
COLD_PYJWT = "bare PyJWT jwt.decode, cold (every token new)"
COLD_VERIFIER = "TokenVerifier.verify, cold (every token new)"
COLD_VALIDATOR = "local Validator.validate, cold (every token new)"
WARM_PYJWT = "bare PyJWT jwt.decode, warm (same token)"
WARM_VERIFIER = "TokenVerifier.verify, warm (same token)"
WARM_VALIDATOR = "local Validator.validate, warm (same token)"


@dataclasses.dataclass(frozen=True)
class Rate:
    """Calls per second of one in-process loop (the median pass)."""

    name: str
    calls: int  # over every pass
    per_second: float

    def summary(self) -> dict[str, Any]:
        """What the report keeps."""
        return {"calls": self.calls, "per_second": round(self.per_second, 1),
                "us_per_call": round(1e6 / self.per_second, 2) if self.per_second else 0.0}


def _rates(passes: int, loops: dict[str, tuple[Callable[[int], Sequence[str]], Callable[[str], object]]]
           ) -> dict[str, Rate]:
    """Times every loop once per pass, the loops interleaved pass after pass, so that a
    burst of other work on the machine lands on all of them alike. A loop is (pass ->
    tokens, check)."""
    rates: dict[str, list[float]] = {name: [] for name in loops}
    calls = dict.fromkeys(loops, 0)
    for number in range(passes):
        for name, (tokens_of, check) in loops.items():
            tokens = tokens_of(number)
            started = time.perf_counter()
            for token in tokens:
                check(token)
            rates[name].append(len(tokens) / (time.perf_counter() - started))
            calls[name] += len(tokens)
    return {name: Rate(name, calls[name], statistics.median(rates[name])) for name in loops}


def local_validator(target: str, issuer: str, leeway: float) -> Validator:
    """A started local-mode validator following ``target``, fresh (or RuntimeError)."""
    validator = Validator(AuthorityClient(target), ValidationSettings(mode=Mode.LOCAL, issuer=issuer, leeway=leeway))
    validator.start()
    if not validator.wait_until_fresh(30):
        close(validator)
        raise RuntimeError("the local validator's revocation mirror did not catch up within 30 s")
    return validator


def close(validator: Validator) -> None:
    """Stops following and closes the validator's client."""
    validator.close()
    validator.client.close()


def measure(
    target: str, issuer: str, audience: str, leeway: float, public_key: Any, algorithm: str,
    warm_token: str, cold_tokens: Sequence[str], warm_calls: int,
) -> dict[str, Rate]:
    """Warm and cold rates of the local validator, the bare TokenVerifier and PyJWT.

    ``cold_tokens`` are split into the passes; each must be valid and new to this process.
    ``warm_calls`` is the local validator's calls of the warm token per pass."""
    validator = local_validator(target, issuer, leeway)
    try:
        verifier = TokenVerifier(KeySet.from_jwks(validator.client.get_signing_keys()), issuer=issuer, leeway=leeway)
        size = len(cold_tokens) // PASSES
        cold = [cold_tokens[n * size : (n + 1) * size] for n in range(PASSES)]
        # The local validator's warm loop is long enough to time a rate near a million
        # per second; the full checks, a thousand times slower, repeat the token only as
        # often as a cold pass has tokens.
        warm = [warm_token] * warm_calls
        warm_bare = [warm_token] * size

        def decode(token: str) -> object:
            return jwt.decode(token, public_key, algorithms=[algorithm], audience=audience, issuer=issuer)

        def validate(token: str) -> object:
            return validator.validate(token, audience)

        def verify(token: str) -> object:
            return verifier.verify(token, audience)

        validate(warm_token)  # the warm token is remembered before its clock starts
        return _rates(PASSES, {
            # Each cold pass's tokens go through the two stateless checks, then are new to
            # the validator, which has seen none of them.
            COLD_PYJWT: (cold.__getitem__, decode),
            COLD_VERIFIER: (cold.__getitem__, verify),
            COLD_VALIDATOR: (cold.__getitem__, validate),
            WARM_PYJWT: (lambda _: warm_bare, decode),
            WARM_VERIFIER: (lambda _: warm_bare, verify),
            WARM_VALIDATOR: (lambda _: warm, validate),
        })
    finally:
        close(validator)
