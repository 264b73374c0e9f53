"""Device-bound sign-ins for the server's tests: a device key, and IssueToken with its proof."""

from __future__ import annotations

from authority_client.proof import DeviceKey
from authority_client.v1 import authority_pb2 as pb

from tests.support.calls import Stub

# Where the login service received the device's sign-in: the authority checks the proof
# against the method and URI the login service names.
SIGN_IN_URI = "https://login.example.com/sign-in"


def proof_message(key: DeviceKey, method: str, uri: str, access_token: str | None = None) -> pb.ProofOfPossession:
    """A fresh proof by ``key`` for the request, as the proto carries it."""
    return pb.ProofOfPossession(proof=key.proof(method, uri, access_token=access_token), http_method=method,
                                http_uri=uri)


async def bound_sign_in(stub: Stub, subject: str, device_id: str, **fields: object) -> tuple[DeviceKey, pb.IssueTokenResponse]:
    """A device key and the tokens of a sign-in bound to it."""
    key = DeviceKey.generate()
    issued = await stub.IssueToken(pb.IssueTokenRequest(
        subject=subject, device_id=device_id, proof=proof_message(key, "POST", SIGN_IN_URI), **fields))
    assert issued.token_type == "DPoP"
    return key, issued
