"""How the admin commands and ``authority demo`` reach a running authority: the target,
plaintext or TLS (with a client certificate for mutual TLS), and the API key.

Everything is checked before a channel is opened, so a bad option is one line naming
it (exit 2) and never a call half made: the target must be HOST:PORT, the API key
printable ASCII (gRPC refuses anything else in metadata, and its own error would quote
the key), and every TLS file readable PEM of at most 1 MiB that parses (the client key
unencrypted, and the client certificate's). Any TLS option implies TLS.
A call that never reached the service is said as such, naming the target and the option
to check: nothing listening, a failed handshake, or a connection the authority closed
(plaintext to a TLS port, or no client certificate where one is asked for).

grpc is imported only where a channel is made: building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from authority.credentials import API_KEY_HEADER
from authority.errors import ConfigError

if TYPE_CHECKING:
    import grpc

TARGET_VARIABLE = "AUTHORITY_TARGET"
API_KEY_VARIABLE = "AUTHORITY_API_KEY"
TLS_VARIABLE = "AUTHORITY_TLS"
TLS_CA_VARIABLE = "AUTHORITY_TLS_CA_FILE"
TLS_CERT_VARIABLE = "AUTHORITY_TLS_CLIENT_CERT_FILE"
TLS_KEY_VARIABLE = "AUTHORITY_TLS_CLIENT_KEY_FILE"
TLS_SERVER_NAME_VARIABLE = "AUTHORITY_TLS_SERVER_NAME"
DEFAULT_TARGET = "127.0.0.1:50051"
MAX_PEM_BYTES = 1024 * 1024
# How grpc words an UNAVAILABLE that never reached a server (refused, unresolvable).
_NOT_REACHED = ("failed to connect to all addresses", "DNS resolution failed", "Connection refused")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def add_arguments(parser: argparse.ArgumentParser, *, api_key_help: str) -> None:
    """Adds --target, --api-key and the TLS options, each defaulting to its variable."""
    parser.add_argument("--target", default=os.environ.get(TARGET_VARIABLE, DEFAULT_TARGET),
                        help=f"the authority's HOST:PORT ({TARGET_VARIABLE}, default {DEFAULT_TARGET})")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_VARIABLE, ""),
                        help=f"{api_key_help} ({API_KEY_VARIABLE})")
    parser.add_argument("--tls", action="store_true", default=None,
                        help=f"connect with TLS, trusting the system's CAs unless --tls-ca-file ({TLS_VARIABLE}=1)")
    parser.add_argument("--tls-ca-file", default=os.environ.get(TLS_CA_VARIABLE, ""),
                        help=f"PEM CA certificates the authority's certificate must chain to ({TLS_CA_VARIABLE})")
    parser.add_argument("--tls-client-cert-file", default=os.environ.get(TLS_CERT_VARIABLE, ""),
                        help=f"PEM client certificate, for an authority that asks for one ({TLS_CERT_VARIABLE})")
    parser.add_argument("--tls-client-key-file", default=os.environ.get(TLS_KEY_VARIABLE, ""),
                        help=f"PEM private key of the client certificate ({TLS_KEY_VARIABLE})")
    parser.add_argument("--tls-server-name", default=os.environ.get(TLS_SERVER_NAME_VARIABLE, ""),
                        help="the name the authority's certificate must hold, when the target does not say it "
                             f"(an address, a tunnel) ({TLS_SERVER_NAME_VARIABLE})")


@dataclasses.dataclass(frozen=True)
class Connection:
    """Where and how to call: checked, with the TLS files read."""

    target: str
    api_key: str
    tls: bool = False
    ca_pem: bytes | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    # The name the server's certificate is checked for; "" is the target's host.
    server_name: str = ""

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((API_KEY_HEADER, self.api_key),) if self.api_key else ()

    def unreached(self, details: str) -> str | None:
        """What to say for an UNAVAILABLE whose ``details`` (grpc's words) show the call never
        reached the authority's service; None when they do not."""
        words = details.lower()
        if any(word in words for word in ("handshake", "certificate", "ssl_error", "verification check")):
            return (f"the TLS handshake with {self.target} failed (check --tls-ca-file and the name in the "
                    "authority's certificate)")
        if "socket closed" in words or "connection reset" in words:
            if self.tls:
                return (f"the authority at {self.target} closed the connection during TLS (does it ask for a client "
                        "certificate? give --tls-client-cert-file and --tls-client-key-file)")
            return (f"the authority at {self.target} closed the connection (does it serve TLS? give --tls or "
                    "--tls-ca-file)")
        if any(phrase in details for phrase in _NOT_REACHED):
            return f'no authority answering at {self.target} (is "authority serve" running?)'
        return None

    def channel(self) -> grpc.aio.Channel:
        """A new channel to the target (the caller closes it)."""
        import grpc

        if not self.tls:
            return grpc.aio.insecure_channel(self.target)
        credentials = grpc.ssl_channel_credentials(self.ca_pem, self.client_key_pem, self.client_cert_pem)
        options = (("grpc.ssl_target_name_override", self.server_name),) if self.server_name else ()
        return grpc.aio.secure_channel(self.target, credentials, options)


def connection(args: argparse.Namespace) -> Connection:
    """The checked connection the parsed options describe; ConfigError naming the option."""
    check_target(args.target)
    api_key = args.api_key or ""
    if any(not " " < character < "\x7f" for character in api_key):
        raise ConfigError("--api-key", "must be printable ASCII without spaces, as API keys are")
    cert, key = args.tls_client_cert_file, args.tls_client_key_file
    if bool(cert) != bool(key):
        raise ConfigError("--tls-client-cert-file" if key else "--tls-client-key-file",
                          "is needed too: a client certificate goes with its key")
    server_name = args.tls_server_name or ""
    if server_name and not _is_host_name(server_name):
        raise ConfigError("--tls-server-name", "must be a DNS name or an IP address, as certificates name servers")
    tls = _flag(args.tls) or bool(args.tls_ca_file or cert or server_name)
    ca_pem = _pem("--tls-ca-file", args.tls_ca_file, "CERTIFICATE")
    cert_pem = _pem("--tls-client-cert-file", cert, "CERTIFICATE")
    key_pem = _pem("--tls-client-key-file", key, "PRIVATE KEY")
    _check_pem(args.tls_ca_file, ca_pem, cert, cert_pem, key, key_pem)
    return Connection(
        target=args.target,
        api_key=api_key,
        tls=tls,
        ca_pem=ca_pem,
        client_cert_pem=cert_pem,
        client_key_pem=key_pem,
        server_name=server_name,
    )


def check_target(target: str) -> None:
    """ConfigError naming ``--target`` unless it is HOST:PORT with a port grpc will not wrap."""
    # grpc takes a port above 65535 modulo 65536 and calls someone else; a name-resolver
    # target (dns:///host:port) is grpc's to check.
    if ":/" in target:
        return
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError("--target", f"{target!r} is not HOST:PORT")


def _check_pem(
    ca_path: str, ca_pem: bytes | None, cert_path: str, cert_pem: bytes | None, key_path: str, key_pem: bytes | None
) -> None:
    """ConfigError naming the option unless the certificates parse, the key opens without a
    password, and it is the client certificate's key: what grpc would otherwise find only
    in the handshake, and blame on the other side."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    certificates = {}
    for option, path, pem in (("--tls-ca-file", ca_path, ca_pem), ("--tls-client-cert-file", cert_path, cert_pem)):
        if pem is None:
            continue
        try:
            certificates[option] = x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise ConfigError(option, f"{path} holds a certificate that does not parse") from None
    if key_pem is None or cert_pem is None:
        return
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ConfigError("--tls-client-key-file", f"{key_path} is encrypted; give the key unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError("--tls-client-key-file", f"{key_path} holds a private key that does not parse") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    leaf = certificates["--tls-client-cert-file"][0]
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise ConfigError("--tls-client-key-file", f"{key_path} is not the key of {cert_path}")


def _is_host_name(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    labels = name.removesuffix(".").split(".")
    return len(name) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def _flag(given: bool | None) -> bool:
    if given is not None:
        return given
    value = os.environ.get(TLS_VARIABLE, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(TLS_VARIABLE, "must be 1 or 0 (true or false)")


def _pem(option: str, path: str, label: str) -> bytes | None:
    if not path:
        return None
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as error:
        raise ConfigError(option, f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > MAX_PEM_BYTES:
        raise ConfigError(option, f"{path} is larger than 1 MiB")
    if b"-----BEGIN " not in data or label.encode() not in data:
        raise ConfigError(option, f"{path} holds no PEM {label.lower()}")
    return data
