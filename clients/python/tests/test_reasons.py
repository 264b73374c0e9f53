"""The one table of texts covers every reason, once each."""

from __future__ import annotations

from authority_client.reasons import MISSING_TEXT, REASON_TEXTS, reason_text
from authority_client.v1 import authority_pb2 as pb
from authority_client.verify import InvalidReason


def test_every_reason_of_the_contract_has_its_own_text() -> None:
    named = {value.number for value in pb.InvalidReason.DESCRIPTOR.values if value.number}
    assert {reason.value for reason in InvalidReason} == named
    texts = [reason_text(reason) for reason in InvalidReason]
    assert len(set(texts) | {MISSING_TEXT}) == len(InvalidReason) + 1
    assert set(REASON_TEXTS) == set(InvalidReason)
