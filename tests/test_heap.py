"""The heap at start-up: frozen out of garbage collection once a served process has started
(authority/api/heap.py), and the collector paused while the revocations load (authority/app.py)."""

from __future__ import annotations

import gc
import re
import weakref
from pathlib import Path
from typing import Any

import pytest
from authority_client.v1 import authority_pb2 as pb

from authority.api.heap import freeze_start_up_heap
from authority.app import Authority, collector_paused
from authority.config import Settings
from authority.revocations import RevocationMirror
from tests.conftest import TEST_KEY_ENCRYPTION_KEY
from tests.support.replicas import ReplicaSet

_FROZE = re.compile(r"froze the start-up heap: (\d+) objects")


async def test_a_served_authority_freezes_its_start_up_heap_and_serves(tmp_path: Path) -> None:
    replicas = ReplicaSet(f"sqlite+aiosqlite:///{tmp_path}/a.db", name="heap",
                          key_encryption_key=TEST_KEY_ENCRYPTION_KEY, log_level="DEBUG")
    try:
        (replica,) = await replicas.start(1)
        laptop = await replica.stub.IssueToken(pb.IssueTokenRequest(subject="alice", device_id="laptop"), timeout=10)
        phone = await replica.stub.IssueToken(pb.IssueTokenRequest(subject="alice", device_id="phone"), timeout=10)
        outcomes = (await replica.outcome(laptop.access_token), await replica.outcome(phone.access_token))
    finally:
        await replicas.close()

    log = "".join(replica.log)
    frozen = [int(match.group(1)) for match in _FROZE.finditer(log)]
    # Once, before the server says it listens; the modules alone are tens of thousands of objects.
    assert len(frozen) == 1 and frozen[0] > 10_000, log
    assert log.index("froze the start-up heap") < log.index(" listening on ")
    assert outcomes == ("REVOKED", "VALID")


def test_freezing_collects_the_unreachable_first_and_freezes_the_rest() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    before = gc.get_freeze_count()
    kept = Cycle()
    garbage = Cycle()
    dropped = weakref.ref(garbage)
    del garbage  # unreachable now, but a cycle: only the collector can free it
    try:
        frozen = freeze_start_up_heap()
        tracked = {id(o) for o in gc.get_objects()}  # get_objects() skips the permanent generation
        assert frozen > before and gc.get_freeze_count() == frozen
        assert id(kept) not in tracked  # frozen
        assert dropped() is None  # collected, not frozen
    finally:
        gc.unfreeze()  # this test process is not a server: its heap goes back to the collector


async def test_the_start_up_load_runs_with_the_collector_paused_then_restores_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await Authority.open(settings)
    try:
        await first.sessions.sign_in("alice", "laptop")
        await first.sessions.sign_in("alice", "phone")  # the laptop's session: one live revocation
    finally:
        await first.close()
    seen: list[bool] = []
    load = RevocationMirror.load

    def watched(mirror: RevocationMirror, rows: Any) -> None:
        seen.append(gc.isenabled())
        load(mirror, rows)

    monkeypatch.setattr(RevocationMirror, "load", watched)
    assert gc.isenabled()
    second = await Authority.open(settings)
    try:
        loaded = len(second.mirror)
    finally:
        await second.close()

    assert seen and not any(seen)
    assert gc.isenabled()
    assert loaded == 1


def test_a_paused_collector_comes_back_as_it_was_even_on_an_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("the load failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # a caller's own choice is left alone
    finally:
        gc.enable()
