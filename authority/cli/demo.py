"""``authority demo``: the single-device scenario, run against a running authority.

Each step prints what it did, what came back, and whether that is what the
single-device rule promises. Tokens are never printed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import grpc
from authority_client.reasons import signed_out_text
from authority_client.types import RevocationCause
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc

from authority.cli.admin_client import not_answering
from authority.cli.connection import Connection


async def run_demo(reach: Connection, say: Callable[[str], object]) -> bool:
    """Runs the scenario against the authority ``reach`` names (with an API key holding
    both roles when callers must authenticate); True when every step held."""
    target = reach.target
    subject = f"demo-user-{secrets.token_hex(4)}"
    call: dict[str, Any] = {"timeout": 5, "metadata": reach.metadata}
    held = True

    def step(text: str, outcome: str, expected: bool) -> None:
        nonlocal held
        held = held and expected
        say(f"{'ok ' if expected else 'BAD'}  {text:<58} {outcome}")

    async with reach.channel() as channel:
        stub = authority_pb2_grpc.TokenAuthorityStub(channel)

        async def validate(token: str) -> pb.ValidateTokenResponse:
            answer: pb.ValidateTokenResponse = await stub.ValidateToken(pb.ValidateTokenRequest(token=token), **call)
            return answer

        try:
            say(f"subject {subject}, authority at {target}")
            laptop = await stub.IssueToken(
                pb.IssueTokenRequest(subject=subject, device_id="laptop", device_name="the laptop"), **call
            )
            step("sign in on the laptop", f"session {laptop.session_id}", True)
            checked = await validate(laptop.access_token)
            step("use the laptop's token", "valid" if checked.valid else "invalid", checked.valid)

            phone = await stub.IssueToken(
                pb.IssueTokenRequest(subject=subject, device_id="phone", device_name="the phone"), **call
            )
            replaced = list(phone.replaced_session_ids)
            step("sign in on the phone", f"replaced {replaced}", replaced == [laptop.session_id])
            checked = await validate(laptop.access_token)
            step(
                "use the laptop's token again",
                pb.InvalidReason.Name(checked.reason) if not checked.valid else "valid",
                not checked.valid and checked.reason == pb.INVALID_REASON_REVOKED,
            )
            # What the laptop tells its user, in the words every surface shares.
            told = signed_out_text(RevocationCause(checked.revocation_cause), checked.replaced_by_device_name)
            step(
                "the laptop says why",
                told,
                checked.revocation_cause == pb.REVOCATION_CAUSE_REPLACED_BY_SIGN_IN
                and checked.replaced_by_device_id == "phone",
            )

            logout = await stub.RevokeToken(pb.RevokeTokenRequest(token=phone.access_token), **call)
            step("log out on the phone", f"revoked {logout.revoked_sessions} session", logout.revoked_sessions == 1)
            checked = await validate(phone.access_token)
            step(
                "use the phone's token after logout",
                pb.InvalidReason.Name(checked.reason) if not checked.valid else "valid",
                not checked.valid and checked.reason == pb.INVALID_REASON_REVOKED,
            )

            tablet = await stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id="tablet"), **call)
            step("sign in on the tablet", f"session {tablet.session_id}", True)
            try:
                await stub.IssueToken(
                    pb.IssueTokenRequest(subject=subject, device_id="laptop", policy=pb.SESSION_POLICY_REJECT),
                    **call,
                )
                step("sign in on the laptop with policy REJECT", "issued", False)
            except grpc.aio.AioRpcError as error:
                step(
                    "sign in on the laptop with policy REJECT",
                    error.code().name,
                    error.code() is grpc.StatusCode.FAILED_PRECONDITION,
                )
            await stub.RevokeToken(pb.RevokeTokenRequest(subject=subject, reason="demo finished"), **call)
        except grpc.aio.AioRpcError as error:
            answered = f"the authority at {target} answered {error.code().name}: {error.details()}"
            say(f"BAD  {not_answering(reach, error) or answered}")
            return False
    say("the single-device rule held" if held else "the single-device rule did NOT hold")
    return held
