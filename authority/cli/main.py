"""The ``authority`` command line: serve, migrate, config, keys, demo, api-key new, and the
admin commands (``token``, ``sessions``; see :mod:`authority.cli.admin`).

Every option of ``serve``, ``migrate`` and ``config`` is also an ``AUTHORITY_*``
environment variable; a flag wins over its variable. Errors print one line and exit
non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence

from authority.cli import admin, connection
from authority.cli import keys as keys_commands
from authority.config import Settings, describe, load_settings, sources, unknown_variables
from authority.credentials import API_KEY_HEADER, Role, api_key_entry, new_api_key, parse_roles
from authority.errors import AuthorityError, ConfigError, StoreUnavailable
from authority.ops import logs

log = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    """Refuses an unknown argument with the usage of the (sub)command it was given to.

    argparse leaves a subcommand's unknown arguments to the top-level parser, which then
    prints its own usage: `authority token issue --polcy` would show `authority [-h] ...`.
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="authority", description="A gRPC token authority.")
    commands = parser.add_subparsers(dest="command", required=True)

    for name, text in (("serve", "run the authority"), ("config", "print the effective configuration, secrets masked")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--listen", help="HOST:PORT to listen on (AUTHORITY_LISTEN, default 127.0.0.1:50051)")
        command.add_argument(
            "--database-url", help="store URL (AUTHORITY_DATABASE_URL, default sqlite+aiosqlite:///authority.db)"
        )
        command.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (AUTHORITY_LOG_LEVEL)")
        command.add_argument("--log-format", help="json, text or auto (AUTHORITY_LOG_FORMAT, default auto)")
        command.add_argument(
            "--log-sample-validate", help="log one OK ValidateToken / ext_authz Check line in N; metrics still "
                                          "count every call (AUTHORITY_LOG_SAMPLE_VALIDATE, default 1: every line)"
        )
        command.add_argument(
            "--metrics-listen", help="HOST:PORT or PORT for /metrics (AUTHORITY_METRICS_LISTEN, default off)"
        )
        command.add_argument(
            "--http-listen", help="HOST:PORT for the HTTP endpoints: JWKS, introspection, revocation "
                                  "(AUTHORITY_HTTP_LISTEN, default off)"
        )
        command.add_argument(
            "--require-proof-of-possession",
            help="false, true, or comma-separated audiences whose sign-ins must bind the session to a device "
                 "key with a DPoP proof (AUTHORITY_REQUIRE_PROOF_OF_POSSESSION, default false)",
        )
        command.add_argument(
            "--proof-max-age", help="how far a DPoP proof's iat may be from now, either way "
                                    "(AUTHORITY_PROOF_MAX_AGE, default 60s)"
        )
        command.add_argument(
            "--proof-replay-cache-size", help="the most DPoP proof jtis remembered at once; when full, proofs "
                                              "are refused (AUTHORITY_PROOF_REPLAY_CACHE_SIZE, default 100000)"
        )
        command.add_argument(
            "--allow-unauthenticated-callers", action="store_const", const="true",
            help="serve a non-loopback address with no caller authentication: anyone who reaches it "
                 "may issue and revoke tokens (AUTHORITY_ALLOW_UNAUTHENTICATED_CALLERS)",
        )
        command.add_argument(
            "--allow-plaintext-keys", action="store_const", const="true",
            help="on PostgreSQL, store private signing keys unencrypted when no key-encryption key "
                 "is configured (AUTHORITY_ALLOW_PLAINTEXT_KEYS)",
        )
        command.add_argument(
            "--workers", help="processes serving the port, one core each: a number, or auto for one per core "
                              "(AUTHORITY_WORKERS, default 1)",
        )
    config = commands.choices["config"]
    config.add_argument("--json", action="store_true", help="print JSON instead of a table")

    migrate = commands.add_parser("migrate", help="bring the database schema up to date (safe to repeat)")
    migrate.add_argument("--database-url", help="store URL (AUTHORITY_DATABASE_URL)")
    migrate.add_argument("--renew-epoch", action="store_true",
                         help="give the revocation log a new epoch, after restoring the database from a copy: "
                              "every replica and consumer then reads it again from 0")

    demo = commands.add_parser("demo", help="run the single-device scenario against a running authority")
    connection.add_arguments(demo, api_key_help="an API key with the issuer and verifier roles, when the "
                                                "authority authenticates callers")

    keys_commands.add_parser(commands)

    api_key = commands.add_parser("api-key", help="API keys for calling services")
    api_key_commands = api_key.add_subparsers(dest="api_key_command", required=True)
    new_key = api_key_commands.add_parser("new", help="make a key; prints it once, and the entry that configures it")
    new_key.add_argument("--name", required=True, help="the calling service, as logs will name it")
    new_key.add_argument("--role", required=True, action="append", choices=[r.value for r in Role],
                         help="issuer or verifier; repeat for both")

    admin.add_commands(commands)
    return parser


def _new_api_key(name: str, roles: list[str]) -> int:
    key = new_api_key()
    entry = api_key_entry(name, parse_roles("+".join(roles)), key)
    print(f"API key for {name} (shown only now; hand it to the service as its {API_KEY_HEADER}):")
    print(f"  {key}")
    print("Add this entry to AUTHORITY_API_KEYS (comma-separated) or as a line of AUTHORITY_API_KEYS_FILE:")
    print(f"  {entry}")
    return 0


_FLAGS = (
    "listen",
    "database_url",
    "log_level",
    "log_format",
    "log_sample_validate",
    "metrics_listen",
    "http_listen",
    "require_proof_of_possession",
    "proof_max_age",
    "proof_replay_cache_size",
    "allow_unauthenticated_callers",
    "allow_plaintext_keys",
    "workers",
)


def _overrides(args: argparse.Namespace) -> dict[str, str | None]:
    return {flag: getattr(args, flag, None) for flag in _FLAGS}


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(None, **_overrides(args))


def _show_config(args: argparse.Namespace) -> None:
    settings = _settings(args)
    shown, origin = describe(settings), sources(None, **_overrides(args))
    if args.json:
        print(json.dumps(shown, indent=2))
    else:
        width = max(len(name) for name in shown)
        for name, value in shown.items():
            print(f"{name:<{width}}  {value or '-':<40}  {origin[name]}".rstrip())
    # On stderr, so that the table and the JSON stay what they were.
    print(f"database: {asyncio.run(_database_state(settings.database_url))}", file=sys.stderr)


async def _database_state(url: str) -> str:
    """Whether the configured database is there, without creating it."""
    from authority.store import Store, reach

    where = reach.describe(url)
    path = reach.sqlite_path(url)
    if path is not None:
        return f"{where} (exists)" if path.exists() else f"{where} (not there yet: `authority serve` creates it)"
    store = Store.open(url)
    try:
        async with store.transaction(read_only=True):
            return f"{where} (reachable)"
    except StoreUnavailable as error:
        return f"{where} is unavailable: {reach.why_unavailable(url, error)}"
    finally:
        await store.close()


def _warn_about_unknown_variables() -> None:
    for warning in unknown_variables():
        log.warning("%s", warning)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the exit status."""
    args = _parser().parse_args(argv)
    logs.install("INFO", "auto")
    _warn_about_unknown_variables()
    database_url = ""
    try:
        if args.command in admin.COMMANDS or args.command == "demo":
            # grpc's core logs a failed handshake at INFO on stderr, beside the one line
            # these commands print for it; read before grpc is first imported.
            os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        if args.command in admin.COMMANDS:
            return admin.run(args)
        if args.command == "demo":
            from authority.cli.demo import run_demo

            return 0 if asyncio.run(run_demo(connection.connection(args), print)) else 1
        if args.command == "api-key":
            try:
                return _new_api_key(args.name, args.role)
            except ValueError as problem:
                raise ConfigError("name", str(problem)) from None
        if args.command == "config":
            _show_config(args)
            return 0
        settings = _settings(args)
        database_url = settings.database_url
        logs.install(settings.log_level, settings.log_format)
        if args.command == "keys":
            return keys_commands.run(args, settings)
        if args.command == "migrate":
            from authority.store.migrate import migrate, renew_epoch

            from authority.store.reach import describe as describe_store

            migrated_from = asyncio.run(migrate(settings.database_url))
            where = describe_store(settings.database_url)
            print(f"the schema of {where} is up to date" if migrated_from is None
                  else f"migrated the schema of {where} (was: {migrated_from})")
            if args.renew_epoch:
                print(f"the revocation log's epoch is now {asyncio.run(renew_epoch(settings.database_url))}")
            return 0
        from authority.api import loops

        # Before any worker or port: a loop that cannot be had is refused in one line.
        loops.loop_factory(settings.event_loop)
        if settings.workers > 1:
            from authority.api.workers import run_workers

            return run_workers(settings)
        from authority.api.ports import refuse_taken_port

        # Before the server's imports (grpc, the store's drivers): a busy port is said at once.
        refuse_taken_port(settings.listen)
        from authority.api.server import serve

        loops.run(serve(settings), settings.event_loop)
        return 0
    except StoreUnavailable as error:
        from authority.store import reach

        print(f"authority {args.command}: cannot use the database ({reach.describe(database_url)}): "
              f"{reach.why_unavailable(database_url, error)}", file=sys.stderr)
        return 2
    except AuthorityError as error:
        print(f"authority {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

