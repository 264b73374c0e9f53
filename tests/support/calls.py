"""Short forms of the RPCs the tests make again and again."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import pytest
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc

Stub = authority_pb2_grpc.TokenAuthorityStub
Answer = TypeVar("Answer")


def new_subject() -> str:
    return f"user-{secrets.token_hex(4)}"


async def sign_in(stub: Stub, subject: str, device_id: str, **fields: Any) -> pb.IssueTokenResponse:
    return await stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id=device_id, **fields))


async def validate(stub: Stub, token: str, audience: str = "") -> pb.ValidateTokenResponse:
    return await stub.ValidateToken(pb.ValidateTokenRequest(token=token, audience=audience))


async def reason(stub: Stub, token: str, audience: str = "") -> str:
    """VALID, or the name of the reason the token is invalid (EXPIRED, REVOKED, ...)."""
    answer = await validate(stub, token, audience)
    if answer.valid:
        return "VALID"
    return pb.InvalidReason.Name(answer.reason).removeprefix("INVALID_REASON_")


async def live_sessions(stub: Stub, subject: str) -> list[str]:
    answer = await stub.ListSessions(pb.ListSessionsRequest(subject=subject))
    return [session.session_id for session in answer.sessions]


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    """The error an awaited call fails with; the test fails if it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def named_in_time(
    ask: Callable[[], Awaitable[Answer]], named: Callable[[Answer], bool], within: float = 10.0
) -> Answer:
    """The first answer to ``ask`` that names the replacing device, or the last one after ``within`` s.

    The replacing device is read from the store on the rare REVOKED path, and an answer
    whose read did not finish within explanation_wait leaves it out; the read goes on and
    the next answer has it (authority/explanations.py). On a loaded machine the first read
    can take that long, so a test that asserts the name asks again until it is in."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        answer = await ask()
        if named(answer) or loop.time() > deadline:
            return answer
        await asyncio.sleep(0.05)
