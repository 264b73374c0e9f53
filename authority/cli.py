"""The ``authority`` command line: serve, migrate, keys, demo, api-key new.

Every option of ``serve`` and ``migrate`` is also an ``AUTHORITY_*`` environment
variable; a flag wins over its variable. Errors print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from authority import keys_command
from authority.callers import API_KEY_HEADER, Role, api_key_entry, new_api_key, parse_roles
from authority.config import Settings, load_settings
from authority.errors import AuthorityError, ConfigError

log = logging.getLogger("authority")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authority", description="A gRPC token authority.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the authority")
    serve.add_argument("--listen", help="HOST:PORT to listen on (AUTHORITY_LISTEN, default 127.0.0.1:50051)")
    serve.add_argument("--database-url", help="store URL (AUTHORITY_DATABASE_URL, default sqlite+aiosqlite:///authority.db)")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (AUTHORITY_LOG_LEVEL)")
    serve.add_argument("--allow-unauthenticated-callers", action="store_const", const="true",
                       help="serve a non-loopback address with no caller authentication: anyone who reaches it "
                            "may issue and revoke tokens (AUTHORITY_ALLOW_UNAUTHENTICATED_CALLERS)")
    serve.add_argument("--allow-plaintext-keys", action="store_const", const="true",
                       help="on PostgreSQL, store private signing keys unencrypted when no key-encryption key "
                            "is configured (AUTHORITY_ALLOW_PLAINTEXT_KEYS)")

    migrate = commands.add_parser("migrate", help="bring the database schema up to date (safe to repeat)")
    migrate.add_argument("--database-url", help="store URL (AUTHORITY_DATABASE_URL)")

    demo = commands.add_parser("demo", help="run the single-device scenario against a running authority")
    demo.add_argument("--target", default="127.0.0.1:50051", help="the authority's HOST:PORT")
    demo.add_argument("--api-key", default=os.environ.get("AUTHORITY_API_KEY"),
                      help="an API key with the issuer and verifier roles, when the authority authenticates "
                           "callers (AUTHORITY_API_KEY)")

    keys_command.add_parser(commands)

    api_key = commands.add_parser("api-key", help="API keys for calling services")
    api_key_commands = api_key.add_subparsers(dest="api_key_command", required=True)
    new_key = api_key_commands.add_parser("new", help="make a key; prints it once, and the entry that configures it")
    new_key.add_argument("--name", required=True, help="the calling service, as logs will name it")
    new_key.add_argument("--role", required=True, action="append", choices=[r.value for r in Role],
                         help="issuer or verifier; repeat for both")
    return parser


def _new_api_key(name: str, roles: list[str]) -> int:
    key = new_api_key()
    entry = api_key_entry(name, parse_roles("+".join(roles)), key)
    print(f"API key for {name} (shown only now; hand it to the service as its {API_KEY_HEADER}):")
    print(f"  {key}")
    print("Add this entry to AUTHORITY_API_KEYS (comma-separated) or as a line of AUTHORITY_API_KEYS_FILE:")
    print(f"  {entry}")
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        listen=getattr(args, "listen", None),
        database_url=getattr(args, "database_url", None),
        log_level=getattr(args, "log_level", None),
        allow_unauthenticated_callers=getattr(args, "allow_unauthenticated_callers", None),
        allow_plaintext_keys=getattr(args, "allow_plaintext_keys", None),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        if args.command == "demo":
            from authority.demo import run_demo

            return 0 if asyncio.run(run_demo(args.target, print, args.api_key)) else 1
        if args.command == "api-key":
            try:
                return _new_api_key(args.name, args.role)
            except ValueError as problem:
                raise ConfigError("name", str(problem)) from None
        settings = _settings(args)
        logging.getLogger().setLevel(settings.log_level.upper())
        if args.command == "keys":
            return keys_command.run(args, settings)
        if args.command == "migrate":
            from authority.store.migrate import migrate

            migrated_from = asyncio.run(migrate(settings.database_url))
            print("schema is up to date" if migrated_from is None else f"migrated the schema (was: {migrated_from})")
            return 0
        from authority.server import serve

        asyncio.run(serve(settings))
        return 0
    except AuthorityError as error:
        print(f"authority {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
