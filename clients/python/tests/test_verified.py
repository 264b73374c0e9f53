"""Local mode remembers tokens it verified in full: a remembered token still passes every
check that can change (expiry, revocation, the key set), and any other token string is
verified in full. Real Ed25519 keys and signatures, no network: the validator's decisions
are driven directly, with the keys and revocations the stream would deliver."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import jwt
import pytest
from authority_client import (
    InvalidReason, Mode, RevocationEvent, RevocationEventKind, SigningKeySet, ValidationSettings,
)
from authority_client.local.verified import VerifiedTokens
from authority_client.proof import DeviceKey, InvalidProof, Proof
from authority_client.validation import _Decisions, _Step
from authority_client.verify import InvalidToken, KeySet
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

ISSUER = "token-authority"
AUDIENCE = "greeter"
NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Key:
    def __init__(self) -> None:
        self.kid = secrets.token_hex(4)
        self.private = ed25519.Ed25519PrivateKey.generate()

    def jwk(self) -> dict[str, Any]:
        return {**json.loads(OKPAlgorithm.to_jwk(self.private.public_key())), "kid": self.kid, "alg": "EdDSA",
                "use": "sig"}

    def sign(self, session_id: str = "s1", ttl: int = 300, audience: str = AUDIENCE, **extra: Any) -> str:
        claims = {"sub": "alice", "sid": session_id, "device_id": "laptop", "jti": secrets.token_hex(8),
                  "iss": ISSUER, "aud": audience, "iat": int(NOW), "nbf": int(NOW), "exp": int(NOW) + ttl, **extra}
        return jwt.encode(claims, self.private, algorithm="EdDSA", headers={"kid": self.kid, "typ": "at+jwt"})


def jwks(*keys: Key) -> str:
    return json.dumps({"keys": [key.jwk() for key in keys]})


def decisions(clock: Clock, key: Key, **settings: Any) -> _Decisions:
    made = _Decisions(ValidationSettings(mode=Mode.LOCAL, issuer=ISSUER, **settings), clock)
    assert made.keys is not None and made.mirror is not None
    made.keys.replace(jwks(key))
    made.mirror.apply(RevocationEvent(RevocationEventKind.CAUGHT_UP, sequence=0))  # fresh
    return made


def test_a_token_verified_once_is_remembered() -> None:
    key = Key()
    made = decisions(Clock(), key)
    token = key.sign()
    first = made.first(token, AUDIENCE)
    assert not isinstance(first, _Step) and first.subject == "alice"
    assert made.first(token, AUDIENCE) is first  # the same claims object: no second verification
    assert made.verified is not None and len(made.verified) == 1


def test_a_remembered_token_is_rejected_once_revoked() -> None:
    key = Key()
    made = decisions(Clock(), key)
    token = key.sign(session_id="s-revoked")
    made.first(token, AUDIENCE)
    assert made.mirror is not None
    made.mirror.apply(RevocationEvent(RevocationEventKind.REVOCATION, sequence=1, session_id="s-revoked",
                                      expires_at=NOW + 300))
    with pytest.raises(InvalidToken) as refused:
        made.first(token, AUDIENCE)
    assert refused.value.reason is InvalidReason.REVOKED


def test_a_remembered_token_is_rejected_once_expired() -> None:
    clock = Clock()
    key = Key()
    made = decisions(clock, key, leeway=30)
    token = key.sign(ttl=60)
    made.first(token, AUDIENCE)
    clock.now = NOW + 60 + 29  # inside the leeway: still good, as verification says
    assert not isinstance(made.first(token, AUDIENCE), _Step)
    clock.now = NOW + 60 + 30
    with pytest.raises(InvalidToken) as refused:
        made.first(token, AUDIENCE)
    assert refused.value.reason is InvalidReason.EXPIRED


def test_a_key_set_change_forgets_remembered_tokens() -> None:
    old, new = Key(), Key()
    made = decisions(Clock(), old)
    token = old.sign()
    remembered = made.first(token, AUDIENCE)
    assert made.keys is not None
    # Rotation: the old key is still published, so the token is good, but verified afresh.
    made.keys.replace(jwks(old, new))
    again = made.first(token, AUDIENCE)
    assert again == remembered and again is not remembered
    # The old key withdrawn: the remembered token no longer passes.
    made.keys.replace(jwks(new))
    assert made.first(token, AUDIENCE) is _Step.REFETCH_KEYS  # its kid is unknown now
    with pytest.raises(InvalidToken) as refused:
        made.after_refetch(token, AUDIENCE)
    assert refused.value.reason is InvalidReason.UNKNOWN_KEY


def test_a_tampered_copy_of_a_remembered_token_is_checked_in_full() -> None:
    key = Key()
    made = decisions(Clock(), key)
    token = key.sign()
    made.first(token, AUDIENCE)
    header, payload, signature = token.split(".")
    other_last = next(c for c in "AQgw" if c != signature[-1])  # still canonical base64url
    forged_payload = jwt.utils.base64url_encode(
        json.dumps({**jwt.decode(token, options={"verify_signature": False}), "sub": "mallory"}).encode()
    ).decode()
    for tampered in (f"{header}.{payload}.{signature[:-1]}{other_last}", f"{header}.{forged_payload}.{signature}"):
        with pytest.raises(InvalidToken) as refused:
            made.first(tampered, AUDIENCE)
        assert refused.value.reason is InvalidReason.BAD_SIGNATURE
    assert made.verified is not None and len(made.verified) == 1


def test_a_remembered_token_answers_only_for_its_own_audience() -> None:
    key = Key()
    made = decisions(Clock(), key)
    token = key.sign()
    made.first(token, AUDIENCE)
    with pytest.raises(InvalidToken) as refused:
        made.first(token, "billing")
    assert refused.value.reason is InvalidReason.WRONG_AUDIENCE


def test_a_remembered_token_is_not_vouched_for_on_a_stale_mirror() -> None:
    key = Key()
    made = decisions(Clock(), key, max_staleness=0.001)
    token = key.sign()
    made.first(token, AUDIENCE)
    time.sleep(0.01)
    assert made.first(token, AUDIENCE) is _Step.ASK_AUTHORITY


def test_the_cache_is_bounded_and_can_be_turned_off() -> None:
    key = Key()
    keys = KeySet.from_jwks(jwks(key))
    cache = VerifiedTokens(2, clock=Clock())
    made = decisions(Clock(), key)
    tokens = [key.sign() for _ in range(3)]
    for token in tokens:
        claims = made.first(token, AUDIENCE)
        assert not isinstance(claims, _Step)
        cache.put(keys, token, claims)
        assert len(cache) <= 2
    assert cache.get(keys, tokens[-1], AUDIENCE) is not None
    off = decisions(Clock(), key, local_cache_size=0)
    assert off.verified is None
    token = key.sign()
    assert off.first(token, AUDIENCE) is not off.first(token, AUDIENCE)
    with pytest.raises(ValueError):
        ValidationSettings(local_cache_size=-1)


def test_a_remembered_bound_token_still_needs_a_fresh_proof_on_every_call() -> None:
    # Guards the cache against serving a device-bound token on an earlier call's proof.
    key, device = Key(), DeviceKey.generate()
    made = decisions(Clock(), key)
    token = key.sign(cnf={"jkt": device.thumbprint})
    uri = "https://orders.example.com/orders.v1.Orders/Whoami"

    def proof(signer: DeviceKey = device) -> Proof:
        return Proof(signer.proof("POST", uri, access_token=token, now=NOW), "POST", uri)

    used = proof()
    first = made.first(token, AUDIENCE, used)
    assert not isinstance(first, _Step) and first.key_thumbprint == device.thumbprint
    assert made.first(token, AUDIENCE, proof()) is first  # remembered: no second signature check
    with pytest.raises(InvalidToken) as missing:
        made.first(token, AUDIENCE)
    with pytest.raises(InvalidProof) as replayed:
        made.first(token, AUDIENCE, used)
    with pytest.raises(InvalidProof) as stolen:
        made.first(token, AUDIENCE, proof(DeviceKey.generate()))
    assert missing.value.reason is InvalidReason.PROOF_REQUIRED
    assert (replayed.value.reason, replayed.value.check) == (InvalidReason.BAD_PROOF, "replayed")
    assert (stolen.value.reason, stolen.value.check) == (InvalidReason.BAD_PROOF, "key")


@pytest.mark.parametrize("local_cache_size", [0, 100], ids=["uncached", "cached"])
@pytest.mark.parametrize("seen_before", [False, True], ids=["first-seen", "remembered"])
def test_a_revoked_bound_token_spends_none_of_its_keys_proofs(local_cache_size: int, seen_before: bool) -> None:
    key, device = Key(), DeviceKey.generate()
    made = decisions(Clock(), key, local_cache_size=local_cache_size)
    token = key.sign(session_id="s-bound", cnf={"jkt": device.thumbprint})
    uri = "https://orders.example.com/orders.v1.Orders/Whoami"

    def proof() -> Proof:
        return Proof(device.proof("POST", uri, access_token=token, now=NOW), "POST", uri)

    if seen_before:
        assert not isinstance(made.first(token, AUDIENCE, proof()), _Step)
    assert made.keys is not None and made.keys.verifier is not None and made.mirror is not None
    spent = made.keys.verifier.proofs.replay_cache_entries
    made.mirror.apply(RevocationEvent(RevocationEventKind.REVOCATION, sequence=1, session_id="s-bound",
                                      expires_at=NOW + 300))
    once = proof()
    reasons = []
    for sent in (once, once, proof()):
        with pytest.raises(InvalidToken) as refused:
            made.first(token, AUDIENCE, sent)
        reasons.append(refused.value.reason)

    assert reasons == [InvalidReason.REVOKED] * 3
    assert made.keys.verifier.proofs.replay_cache_entries == spent


def test_a_key_the_stream_withdrew_is_not_reinstated_by_a_fetch_from_a_lagging_replica() -> None:
    withdrawn, kept = Key(), Key()
    made = decisions(Clock(), withdrawn)
    assert made.keys is not None and made.mirror is not None
    made.keys.replace(jwks(withdrawn, kept), fetched=True)  # the start's fetch
    token = withdrawn.sign()
    assert not isinstance(made.first(token, AUDIENCE), _Step)
    # Retired (a compromise): the stream's set leaves it out.
    made.mirror.apply(RevocationEvent(RevocationEventKind.SIGNING_KEYS, sequence=0, jwks_json=jwks(kept)))

    # Its kid is unknown now, so the token asks for a refetch, which a replica that has not
    # seen the retirement answers with the old set.
    assert made.first(withdrawn.sign(), AUDIENCE) is _Step.REFETCH_KEYS
    assert made.keys.replace(jwks(withdrawn, kept), fetched=True)
    with pytest.raises(InvalidToken) as refused:
        made.after_refetch(token, AUDIENCE)

    assert refused.value.reason is InvalidReason.UNKNOWN_KEY
    assert made.keys.verifier is not None and made.keys.verifier.keys.kids == {kept.kid}
    assert not isinstance(made.first(kept.sign(), AUDIENCE), _Step)  # the rest of the fetched set is used
    # A later stream set that names the key again (a database restored from before) is believed.
    made.mirror.apply(RevocationEvent(RevocationEventKind.SIGNING_KEYS, sequence=0,
                                      jwks_json=jwks(withdrawn, kept)))
    assert not isinstance(made.first(withdrawn.sign(), AUDIENCE), _Step)


def test_a_fetched_set_adds_keys_the_stream_has_not_announced_yet() -> None:
    old, new = Key(), Key()
    made = decisions(Clock(), old)
    assert made.keys is not None
    # A rotation seen by the replica that answered the fetch before the stream's: taken.
    assert made.first(new.sign(), AUDIENCE) is _Step.REFETCH_KEYS
    made.keys.replace(jwks(old, new), fetched=True)
    assert not isinstance(made.after_refetch(new.sign(), AUDIENCE), _Step)


def _announce(made: _Decisions, *keys: Key, version: int, epoch: str = "e1") -> None:
    assert made.mirror is not None
    made.mirror.apply(RevocationEvent(RevocationEventKind.SIGNING_KEYS, sequence=0, jwks_json=jwks(*keys),
                                      key_set_version=version, epoch=epoch))


def _kids(made: _Decisions) -> set[str]:
    assert made.keys is not None and made.keys.verifier is not None
    return set(made.keys.verifier.keys.kids)


def test_a_stream_resumed_on_a_lagging_replica_does_not_bring_back_a_retired_key() -> None:
    retired, kept = Key(), Key()
    made = decisions(Clock(), kept)
    assert made.keys is not None
    _announce(made, retired, kept, version=5)
    _announce(made, kept, version=6)  # retired (a compromise)
    # The stream is resumed on a replica that has not reread its keys since.
    _announce(made, retired, kept, version=5)

    assert _kids(made) == {kept.kid}
    token = retired.sign()
    assert made.first(token, AUDIENCE) is _Step.REFETCH_KEYS
    # That replica answers the refetch with the same old set: a lower version, ignored too,
    # even though the stream no longer counts the key as withdrawn.
    assert not made.keys.replace_fetched(SigningKeySet(jwks(retired, kept), version=5))
    with pytest.raises(InvalidToken) as refused:
        made.after_refetch(token, AUDIENCE)
    assert refused.value.reason is InvalidReason.UNKNOWN_KEY
    # Once it has reread them, its announcements are taken again.
    newer = Key()
    _announce(made, kept, newer, version=7)
    assert _kids(made) == {kept.kid, newer.kid}


def test_a_stream_resumed_on_a_lagging_replica_does_not_withdraw_a_new_key() -> None:
    old, new = Key(), Key()
    made = decisions(Clock(), old)
    _announce(made, old, new, version=8)  # a rotation published ahead
    _announce(made, old, version=7)  # a replica that has not seen it yet

    assert _kids(made) == {old.kid, new.kid}
    assert not isinstance(made.first(new.sign(), AUDIENCE), _Step)


def test_a_fetched_set_newer_than_the_stream_sets_the_count() -> None:
    retired, kept = Key(), Key()
    made = decisions(Clock(), kept)
    assert made.keys is not None
    # The start's fetch, from a replica that has seen the retirement (no epoch: not a stream).
    assert made.keys.replace_fetched(SigningKeySet(jwks(kept), version=4))
    _announce(made, retired, kept, version=3)  # the stream's replica has not

    assert _kids(made) == {kept.kid}
    assert made.first(retired.sign(), AUDIENCE) is _Step.REFETCH_KEYS


def test_a_stream_of_another_epoch_starts_the_count_afresh() -> None:
    a, b = Key(), Key()
    made = decisions(Clock(), a)
    assert made.keys is not None
    _announce(made, a, version=9, epoch="e1")
    # A restored database (or another timeline): its count is lower, and it is believed.
    _announce(made, a, b, version=2, epoch="e2")
    assert _kids(made) == {a.kid, b.kid}
    # Within the new epoch, lower versions are older again.
    _announce(made, a, version=1, epoch="e2")
    assert not made.keys.replace_fetched(SigningKeySet(jwks(a), version=1))
    assert _kids(made) == {a.kid, b.kid}


def test_sets_without_a_version_are_taken_as_before() -> None:
    a, b = Key(), Key()
    made = decisions(Clock(), a)
    _announce(made, a, b, version=5)
    _announce(made, b, version=0)  # an authority older than versions

    assert _kids(made) == {b.kid}
