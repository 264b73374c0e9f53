"""The one table of texts covers every reason and every revocation cause, once each."""

from __future__ import annotations

from authority_client.reasons import (
    CAUSE_TEXTS,
    MISSING_TEXT,
    REASON_TEXTS,
    cause_text,
    reason_text,
    refusal_text,
    signed_out_text,
)
from authority_client.v1 import authority_pb2 as pb
from authority_client.verify import InvalidReason, RevocationCause


def test_every_reason_of_the_contract_has_its_own_text() -> None:
    named = {value.number for value in pb.InvalidReason.DESCRIPTOR.values if value.number}
    assert {reason.value for reason in InvalidReason} == named
    texts = [reason_text(reason) for reason in InvalidReason]
    assert len(set(texts) | {MISSING_TEXT}) == len(InvalidReason) + 1
    assert set(REASON_TEXTS) == set(InvalidReason)


def test_every_revocation_cause_of_the_contract_has_its_own_text() -> None:
    named = {value.number for value in pb.RevocationCause.DESCRIPTOR.values}
    assert {cause.value for cause in RevocationCause} == named
    known = [cause for cause in RevocationCause if cause is not RevocationCause.UNSPECIFIED]
    assert set(CAUSE_TEXTS) == set(known)
    assert len({cause_text(cause) for cause in known}) == len(known)
    assert cause_text(RevocationCause.UNSPECIFIED) == ""


def test_a_reason_and_its_cause_compose_into_one_text() -> None:
    replaced = RevocationCause.REPLACED_BY_SIGN_IN
    assert refusal_text(InvalidReason.REVOKED, replaced) == "revoked: signed in on another device"
    assert refusal_text(InvalidReason.REVOKED, replaced, "the phone") == "revoked: signed in on the phone"
    assert refusal_text(InvalidReason.REVOKED, RevocationCause.LOGGED_OUT, "the phone") == "revoked: logged out"
    # Without a known cause, or for another reason, the reason's own text stands.
    assert refusal_text(InvalidReason.REVOKED) == reason_text(InvalidReason.REVOKED)
    assert refusal_text(InvalidReason.REVOKED, RevocationCause.UNSPECIFIED) == reason_text(InvalidReason.REVOKED)
    assert refusal_text(InvalidReason.EXPIRED, replaced) == reason_text(InvalidReason.EXPIRED)
    assert signed_out_text(replaced, "the phone") == "signed out: signed in on the phone"
    assert signed_out_text(None) == "signed out: the session has ended"
