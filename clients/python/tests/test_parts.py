"""The pieces with no network: the claims cache, the mirror's freshness, the key refetch
limit, the access rules and bearer-token parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from authority_client import AccessClaims, AccessRules, RevocationEvent, RevocationEventKind
from authority_client.access import bearer_token
from authority_client.cache import ClaimsCache
from authority_client.local.keys import SigningKeys
from authority_client.local.mirror import RevocationMirror
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def claims(session_id: str = "s1", token_id: str = "t1", expires_at: int = 1_000_100) -> AccessClaims:
    return AccessClaims("alice", "laptop", session_id, token_id, "iss", "aud", 1_000_000, expires_at, {})


def event(kind: RevocationEventKind, sequence: int = 0, **fields: object) -> RevocationEvent:
    return RevocationEvent(kind=kind, sequence=sequence, **fields)  # type: ignore[arg-type]


def test_cache_entries_live_no_longer_than_the_token_or_the_ttl() -> None:
    clock = Clock()
    cache = ClaimsCache(max_entries=10, ttl=30, clock=clock)
    cache.put("short", "aud", claims(token_id="a", expires_at=1_000_010))
    cache.put("long", "aud", claims(token_id="b", expires_at=1_000_100))
    assert cache.get("short", "aud") is not None and cache.get("long", "aud") is not None
    clock.now += 10
    assert cache.get("short", "aud") is None  # its token expired
    assert cache.get("long", "aud") is not None
    clock.now += 20
    assert cache.get("long", "aud") is None  # the ttl passed


def test_cache_is_keyed_by_the_whole_token_and_audience() -> None:
    cache = ClaimsCache(clock=Clock())
    cache.put("token", "aud", claims())
    assert cache.get("token", "other") is None
    assert cache.get("token-with-same-jti-but-forged", "aud") is None


def test_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    cache = ClaimsCache(max_entries=2, clock=Clock())
    cache.put("a", "aud", claims("s1", "a"))
    cache.put("b", "aud", claims("s2", "b"))
    assert cache.get("a", "aud") is not None
    cache.put("c", "aud", claims("s3", "c"))
    assert len(cache) == 2 and cache.get("b", "aud") is None and cache.get("a", "aud") is not None


def test_a_revocation_evicts_every_entry_of_its_session() -> None:
    cache = ClaimsCache(clock=Clock())
    cache.put("old", "aud", claims("s1", "t1"))
    cache.put("refreshed", "aud", claims("s1", "t2"))
    cache.put("other", "aud", claims("s2", "t3"))
    cache.evict("s1")
    assert cache.get("old", "aud") is None and cache.get("refreshed", "aud") is None
    assert cache.get("other", "aud") is not None


def test_the_mirror_vouches_only_after_catching_up_and_while_it_hears_from_the_stream() -> None:
    monotonic = Clock(0.0)
    mirror = RevocationMirror(max_staleness=5, monotonic=monotonic, clock=Clock())
    mirror.stream_started()
    mirror.apply(event(RevocationEventKind.REVOCATION, 1, session_id="s1", expires_at=2_000_000.0))
    assert not mirror.is_fresh()  # the backlog alone proves nothing about what came after
    mirror.apply(event(RevocationEventKind.CAUGHT_UP, 1))
    assert mirror.is_fresh() and mirror.is_revoked("s1", "") and not mirror.is_revoked("s2", "")
    monotonic.now += 4
    mirror.apply(event(RevocationEventKind.HEARTBEAT, 1))
    monotonic.now += 4.9
    assert mirror.is_fresh()
    monotonic.now += 0.2
    assert not mirror.is_fresh()
    # A new stream's heartbeats count only once it has caught up again.
    mirror.stream_started()
    mirror.apply(event(RevocationEventKind.HEARTBEAT, 1))
    assert not mirror.is_fresh()
    mirror.apply(event(RevocationEventKind.REVOCATION, 2, session_id="s2", expires_at=2_000_000.0))
    mirror.apply(event(RevocationEventKind.CAUGHT_UP, 2))
    assert mirror.is_fresh() and mirror.is_revoked("s2", "") and mirror.last_sequence == 2


def test_mirror_entries_expire_with_their_tokens() -> None:
    clock, monotonic = Clock(), Clock(0.0)
    mirror = RevocationMirror(leeway=30, monotonic=monotonic, clock=clock)
    mirror.stream_started()
    mirror.apply(event(RevocationEventKind.REVOCATION, 1, session_id="s1", expires_at=clock.now + 60))
    mirror.apply(event(RevocationEventKind.CAUGHT_UP, 1))
    clock.now += 100
    monotonic.now += 11  # past the purge interval
    mirror.apply(event(RevocationEventKind.HEARTBEAT, 1))
    assert len(mirror) == 0


def test_mirror_passes_key_announcements_and_revocations_on() -> None:
    mirror = RevocationMirror()
    keys: list[tuple[str, int, str]] = []
    revoked: list[tuple[str, str]] = []
    mirror.on_signing_keys(lambda jwks_json, version, epoch: keys.append((jwks_json, version, epoch)))
    mirror.on_revocation(lambda session_id, token_id: revoked.append((session_id, token_id)))
    mirror.apply(event(RevocationEventKind.SIGNING_KEYS, jwks_json='{"keys":[]}', key_set_version=7, epoch="e"))
    mirror.apply(event(RevocationEventKind.REVOCATION, 1, session_id="s1", token_id="t1", expires_at=9e9))
    assert keys == [('{"keys":[]}', 7, "e")] and revoked == [("s1", "t1")]


def test_key_refetches_are_rate_limited() -> None:
    monotonic = Clock(0.0)
    keys = SigningKeys(issuer="iss", refetch_interval=1.0, monotonic=monotonic)
    assert keys.claim_refetch()
    assert not keys.claim_refetch()
    monotonic.now += 0.5
    assert not keys.claim_refetch()
    monotonic.now += 0.6
    assert keys.claim_refetch()


def test_a_malformed_key_set_leaves_the_last_good_one() -> None:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    jwk = {**json.loads(OKPAlgorithm.to_jwk(public)), "kid": "k1", "alg": "EdDSA", "use": "sig"}
    keys = SigningKeys(issuer="iss")
    assert keys.replace(json.dumps({"keys": [jwk]}))
    verifier = keys.verifier
    assert verifier is not None
    good = verifier.keys
    assert good.kids == frozenset({"k1"})

    assert not keys.replace("{not json")

    assert keys.verifier is verifier and verifier.keys is good


def test_access_rules_by_service_and_method() -> None:
    rules = AccessRules.of(
        "default", audiences={"pkg.Billing": "billing", "/pkg.Billing/Refund": "refunds"}, public={"/pkg.Open/Ping"}
    )
    assert rules.is_public("/grpc.health.v1.Health/Check")
    assert rules.is_public("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert rules.is_public("/pkg.Open/Ping") and not rules.is_public("/pkg.Open/Other")
    assert rules.audience_for("/pkg.Billing/Charge") == "billing"
    assert rules.audience_for("/pkg.Billing/Refund") == "refunds"
    assert rules.audience_for("/pkg.Other/Call") == "default"


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        ((("authorization", "Bearer abc"),), "abc"),
        ((("authorization", "bearer   abc  "),), "abc"),
        ((("Authorization", "Bearer abc"),), "abc"),
        ((("authorization", "Basic abc"),), None),
        ((("authorization", "Bearer"),), None),
        ((("authorization", "Bearer "),), None),
        ((("x-other", "Bearer abc"),), None),
        ((("authorization-bin", b"Bearer abc"),), None),
        ((("authorization", "Bearer abc"), ("authorization", "Bearer other")), None),  # which one to believe?
        ((("authorization", "Bearer abc"), ("Authorization", "Basic x")), None),
        ((), None),
        (None, None),
    ],
)
def test_bearer_token_parsing(metadata: object, token: str | None) -> None:
    assert bearer_token(metadata) == token  # type: ignore[arg-type]


def test_a_remote_answer_that_raced_a_revocation_is_not_cached() -> None:
    from authority_client import Mode, Validation, ValidationSettings
    from authority_client.validation import _Decisions
    from authority_client.verify import InvalidToken

    decisions = _Decisions(ValidationSettings(mode=Mode.REMOTE, cache_size=10), Clock())
    assert decisions.mirror is not None and decisions.cache is not None
    decisions.mirror.stream_started()
    decisions.mirror.apply(event(RevocationEventKind.CAUGHT_UP, 1))
    # The revocation arrives while ValidateToken is in flight, before its answer is cached.
    decisions.mirror.apply(event(RevocationEventKind.REVOCATION, 2, session_id="s1", expires_at=9e9))
    with pytest.raises(InvalidToken) as refused:
        decisions.answer("token", "aud", Validation(valid=True, claims=claims("s1")))
    assert refused.value.reason.name == "REVOKED"
    assert decisions.cache.get("token", "aud") is None


def test_claims_nested_past_what_a_token_carries_are_a_value_error_not_a_recursion_error() -> None:
    from authority_client import _convert
    from authority_client.types import SessionPolicy

    from authority.tokens import check_claims_depth

    def nested(levels: int) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for _ in range(levels - 1):
            value = {"a": value}
        return value

    # The deepest the authority takes passes; one more, and far more, are refused here.
    deepest = {"deep": nested(32), "list": [[[[1]]]]}
    check_claims_depth(deepest)
    assert _convert.issue_request("s", "d", SessionPolicy.DEFAULT, "", deepest, None).claims["deep"]
    for levels in (33, 5000):
        with pytest.raises(ValueError, match="must not nest more than 32 levels"):
            _convert.issue_request("s", "d", SessionPolicy.DEFAULT, "", {"deep": nested(levels)}, None)
    with pytest.raises(ValueError, match="32 levels"):
        _convert.issue_request("s", "d", SessionPolicy.DEFAULT, "", {"deep": [nested(33)]}, None)
