"""On PostgreSQL, writes to the logs notify the other replicas after they commit, all at
once (authority/store/log_notifier.py), not each in its own commit, where PostgreSQL's
notify lock would make commits wait for each other's flushes. Notifications still reach
the other replicas at once, long before their poll; a burst of writes sends at most one
per ``revocation_min_read_interval``; and the sign-in functions notify in their commit
only when asked, as the previous revision's replicas do by not passing the argument."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest
from authority_client.v1 import authority_pb2 as pb

from authority.store.coordination import REVOCATIONS_CHANNEL
from tests.conftest import StartServer
from tests.support.calls import new_subject, reason, sign_in

pytestmark = pytest.mark.parametrize("store", ["postgres"])  # SQLite has no notifications

WITHIN = 10.0
# A poll this long never serves a test: only notifications do.
LONG_POLL = {"revocation_poll_interval": 30.0, "max_staleness": 60.0}
SPACING = 0.5


class _Heard:
    """Notifications on the log channel of one database, counted as they come."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *_: object) -> None:
        self.count += 1


@pytest.fixture
async def heard(database_url: str, start_server: StartServer) -> AsyncIterator[_Heard]:
    await start_server()  # the schema
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    counter = _Heard()
    await connection.add_listener(REVOCATIONS_CHANNEL, counter)
    try:
        yield counter
    finally:
        await connection.close()


async def _refused(stub: object, token: str) -> None:
    deadline = time.monotonic() + WITHIN
    while (answer := await reason(stub, token)) != "REVOKED":
        assert time.monotonic() < deadline, f"still {answer} after {WITHIN} s"
        await asyncio.sleep(0.02)


async def test_sign_ins_and_revocations_on_one_replica_reach_another_long_before_its_poll(
    start_server: StartServer, heard: _Heard
) -> None:
    a, b = await start_server(**LONG_POLL), await start_server(**LONG_POLL)
    subject = new_subject()
    first = await sign_in(a.stub, subject, "laptop")
    assert await reason(b.stub, first.access_token) == "VALID"
    await sign_in(a.stub, subject, "phone")  # replaces the laptop, unread
    await _refused(b.stub, first.access_token)
    other = await sign_in(b.stub, new_subject(), "tablet")
    await a.stub.RevokeToken(pb.RevokeTokenRequest(session_id=other.session_id, reason="test"))
    await _refused(b.stub, other.access_token)
    assert heard.count >= 2
    assert a.server.authority.notifier is not None and a.server.authority.notifier.sent >= 2


async def test_a_burst_of_writes_sends_at_most_one_notification_per_spacing(
    start_server: StartServer, heard: _Heard
) -> None:
    running = await start_server(revocation_min_read_interval=SPACING, **LONG_POLL)
    before = heard.count
    started = time.monotonic()
    # Forty sign-ins, each its own commit: in their commits they would notify forty times.
    subjects = [new_subject() for _ in range(8)]
    for round_ in range(5):
        await asyncio.gather(*(sign_in(running.stub, s, f"device-{round_}") for s in subjects))
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + WITHIN
    while heard.count == before:
        assert time.monotonic() < deadline, "no notification"
        await asyncio.sleep(0.02)
    await asyncio.sleep(SPACING)  # the last of the burst's notifications, if one is due
    sent = heard.count - before
    # One at once, then at most one per spacing while the burst lasts, and one after it.
    assert 1 <= sent <= 2 + elapsed / SPACING, (sent, elapsed)
    assert sent < 40


async def test_the_sign_in_functions_notify_in_their_commit_only_when_asked(
    database_url: str, start_server: StartServer, heard: _Heard
) -> None:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        async def replacing(*notify: bool) -> None:
            subject = new_subject()
            session = (
                '{"session_id": "%s", "subject": "%s", "device_id": "d", "audience": "a", "claims": "{}",'
                ' "access_ttl": 60, "created_at": 1, "expires_at": 9e9, "last_used_at": 1,'
                ' "access_expires_at": 9e9, "revoked_at": null, "device_class": "", "device_name": "",'
                ' "key_thumbprint": ""}' % (subject, subject)
            )
            event = ('{"kind": 1, "occurred_at": 1, "subject": "%s", "session_id": "%s", "device_id": "d",'
                     ' "device_class": "", "device_name": "", "cause": 0, "caller": ""}' % (subject, subject))
            marks = ", ".join(f"${n}" for n in range(1, 13 + len(notify)))
            await connection.fetch(
                f"SELECT * FROM authority_sign_in_replacing({marks})",
                1, subject, 1.0, None, session, subject, "r", 1, "d", "", "", event, *notify,
            )

        before = heard.count
        await replacing(False)
        await asyncio.sleep(0.3)
        assert heard.count == before  # asked not to
        await replacing()  # as the previous revision calls it
        deadline = time.monotonic() + WITHIN
        while heard.count == before:
            assert time.monotonic() < deadline, "the call without the argument did not notify"
            await asyncio.sleep(0.02)
    finally:
        await connection.close()
