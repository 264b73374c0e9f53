"""The admin commands and ``authority demo`` over TLS and mutual TLS: real processes
against a real authority with real certificates. A refused option is one line naming it
(exit 2) before any call; a call that cannot get through says why (exit 1)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.conftest import Running, StartServer
from tests.support.pki import CertificateAuthority
from tests.test_admin import cli

# The transport, not the store, is under test.
sqlite_only = pytest.mark.parametrize("store", ["sqlite"])


@dataclasses.dataclass
class Files:
    directory: Path

    def __getitem__(self, name: str) -> str:
        return str(self.directory / name)


@pytest.fixture(scope="module")
def pki_files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    """A CA, the authority's certificate, a client certificate with both roles, and a CA
    that signed neither."""
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority("authority test CA")
    (directory / "ca.crt").write_bytes(ca.certificate_pem)
    ca.issue("authority", dns=("localhost",), ips=("127.0.0.1",)).write(directory, "server")
    ca.issue("operator.internal", client=True).write(directory, "client")
    # Valid for a name only, not for the address the tests call.
    ca.issue("authority", dns=("authority.internal",)).write(directory, "named")
    (directory / "other-ca.crt").write_bytes(CertificateAuthority("someone else's CA").certificate_pem)
    (directory / "not-pem.crt").write_text("not a certificate\n")
    (directory / "garbled.crt").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    client_key = serialization.load_pem_private_key((directory / "client.key").read_bytes(), password=None)
    (directory / "encrypted.key").write_bytes(client_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ))
    return Files(directory)


def tls_settings(files: Files) -> dict[str, Any]:
    return {"tls_cert_file": files["server.crt"], "tls_key_file": files["server.key"]}


def mtls_settings(files: Files) -> dict[str, Any]:
    return {**tls_settings(files), "tls_client_ca_file": files["ca.crt"],
            "client_roles": ("operator.internal=issuer+verifier",)}


async def list_sessions(authority: Running, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    return await cli("sessions", "list", "nobody", "--target", authority.target, "--json", *args, env=env)


@sqlite_only
async def test_the_commands_call_a_tls_authority_trusting_the_ca_given(
    start_server: StartServer, pki_files: Files
) -> None:
    authority = await start_server(**tls_settings(pki_files))

    by_flag = await list_sessions(authority, "--tls-ca-file", pki_files["ca.crt"])
    by_variable = await list_sessions(authority, env={"AUTHORITY_TLS_CA_FILE": pki_files["ca.crt"]})

    assert (by_flag[0], json.loads(by_flag[1])) == (0, []), by_flag[2]
    assert (by_variable[0], json.loads(by_variable[1])) == (0, []), by_variable[2]


@sqlite_only
async def test_the_commands_present_a_client_certificate_to_a_mutual_tls_authority(
    start_server: StartServer, pki_files: Files
) -> None:
    authority = await start_server(**mtls_settings(pki_files))
    subject = "mtls-subject"

    code, out, err = await cli(
        "token", "issue", subject, "laptop", "--target", authority.target, "--json",
        "--tls-ca-file", pki_files["ca.crt"], "--tls-client-cert-file", pki_files["client.crt"],
        "--tls-client-key-file", pki_files["client.key"],
    )

    assert code == 0, err
    assert json.loads(out)["session_id"]


@sqlite_only
async def test_the_server_name_checked_can_be_given_when_the_target_is_an_address(
    start_server: StartServer, pki_files: Files
) -> None:
    authority = await start_server(tls_cert_file=pki_files["named.crt"], tls_key_file=pki_files["named.key"])

    by_address = await list_sessions(authority, "--tls-ca-file", pki_files["ca.crt"])
    by_name = await list_sessions(authority, "--tls-ca-file", pki_files["ca.crt"],
                                  env={"AUTHORITY_TLS_SERVER_NAME": "authority.internal"})

    assert by_address[0] == 1 and "the TLS handshake with" in by_address[2]
    assert (by_name[0], json.loads(by_name[1])) == (0, []), by_name[2]


@sqlite_only
@pytest.mark.parametrize(
    ("configure", "args", "said"),
    [
        (tls_settings, (), "closed the connection (does it serve TLS? give --tls or --tls-ca-file)"),
        (tls_settings, ("--tls",), "the TLS handshake with {target} failed (check --tls-ca-file"),
        (tls_settings, ("--tls-ca-file", "other-ca.crt"), "the TLS handshake with {target} failed"),
        (mtls_settings, ("--tls-ca-file", "ca.crt"), "closed the connection during TLS (does it ask for a client "
                                                     "certificate?"),
    ],
    ids=["plaintext-to-tls", "system-cas", "another-ca", "no-client-certificate"],
)
async def test_a_call_that_cannot_get_through_says_why_in_one_line(
    start_server: StartServer, pki_files: Files, configure: Any, args: tuple[str, ...], said: str
) -> None:
    authority = await start_server(**configure(pki_files))
    args = tuple(pki_files[arg] if arg.endswith(".crt") else arg for arg in args)

    code, out, err = await list_sessions(authority, *args)

    assert (code, out) == (1, "")
    assert err.strip().splitlines() == [err.strip()], err
    assert err.startswith("authority sessions list: ")
    assert said.format(target=authority.target) in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (("--tls-client-cert-file", "client.crt"), {}, "--tls-client-key-file: is needed too"),
        (("--tls-client-key-file", "client.key"), {}, "--tls-client-cert-file: is needed too"),
        (("--tls-ca-file", "missing.crt"), {}, "--tls-ca-file: cannot read {dir}/missing.crt: No such file"),
        (("--tls-ca-file", "not-pem.crt"), {}, "--tls-ca-file: {dir}/not-pem.crt holds no PEM certificate"),
        (("--tls-ca-file", "/dev/zero"), {}, "--tls-ca-file: /dev/zero is larger than 1 MiB"),
        (("--tls-client-cert-file", "client.crt", "--tls-client-key-file", "client.crt"), {},
         "--tls-client-key-file: {dir}/client.crt holds no PEM private key"),
        (("--tls-ca-file", "garbled.crt"), {}, "--tls-ca-file: {dir}/garbled.crt holds a certificate that does not "
                                                "parse"),
        (("--tls-client-cert-file", "client.crt", "--tls-client-key-file", "encrypted.key"), {},
         "--tls-client-key-file: {dir}/encrypted.key is encrypted; give the key unencrypted"),
        (("--tls-client-cert-file", "client.crt", "--tls-client-key-file", "server.key"), {},
         "--tls-client-key-file: {dir}/server.key is not the key of {dir}/client.crt"),
        ((), {"AUTHORITY_TLS": "maybe"}, "AUTHORITY_TLS: must be 1 or 0"),
        ((), {"AUTHORITY_API_KEY": "k-1\nsecret"}, "--api-key: must be printable ASCII"),
        (("--api-key", "k-1 secret"), {}, "--api-key: must be printable ASCII"),
        (("--tls-server-name", "authority internal"), {}, "--tls-server-name: must be a DNS name or an IP address"),
    ],
    ids=["cert-without-key", "key-without-cert", "missing-file", "not-pem", "too-large", "cert-as-key",
         "garbled-certificate", "encrypted-key", "another-certificates-key",
         "bad-tls-variable", "key-with-newline", "key-with-space", "bad-server-name"],
)
async def test_a_bad_connection_option_is_refused_before_any_call(
    pki_files: Files, args: tuple[str, ...], env: dict[str, str], said: str
) -> None:
    # Nothing listens on port 1: a call made anyway would say so instead.
    args = tuple(pki_files[arg] if arg.endswith((".crt", ".key")) else arg for arg in args)

    code, out, err = await cli("sessions", "list", "nobody", "--target", "127.0.0.1:1", *args, env=env)

    assert (code, out) == (2, "")
    assert err.strip() == err.strip().splitlines()[0]
    assert said.format(dir=pki_files.directory) in err
    assert "secret" not in err


@sqlite_only
async def test_demo_runs_over_tls(start_server: StartServer, pki_files: Files) -> None:
    authority = await start_server(**tls_settings(pki_files))

    code, out, err = await cli("demo", "--target", authority.target,
                               env={"AUTHORITY_TLS": "1", "AUTHORITY_TLS_CA_FILE": pki_files["ca.crt"]})

    assert code == 0, out + err
    assert "the single-device rule held" in out


def test_the_tls_variables_are_known_to_the_configuration() -> None:
    from authority.config import known_variables

    names = {"AUTHORITY_TLS", "AUTHORITY_TLS_CA_FILE", "AUTHORITY_TLS_CLIENT_CERT_FILE",
             "AUTHORITY_TLS_CLIENT_KEY_FILE", "AUTHORITY_TLS_SERVER_NAME"}
    assert names <= known_variables()
    assert not names & set(os.environ)  # the tests above set them per process only
