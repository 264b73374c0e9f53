"""The ``authority`` command line: serve, migrate, config, demo, and the admin commands
(``token``, ``sessions``; see :mod:`authority.admin`).

Every option of ``serve``, ``migrate`` and ``config`` is also an ``AUTHORITY_*``
environment variable; a flag wins over its variable. Errors print one line and exit
non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from authority import admin, logs
from authority.config import Settings, describe, load_settings, sources
from authority.errors import AuthorityError

log = logging.getLogger("authority")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authority", description="A gRPC token authority.")
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
            "--metrics-listen", help="HOST:PORT or PORT for /metrics (AUTHORITY_METRICS_LISTEN, default off)"
        )
    config = commands.choices["config"]
    config.add_argument("--json", action="store_true", help="print JSON instead of a table")

    migrate = commands.add_parser("migrate", help="bring the database schema up to date (safe to repeat)")
    migrate.add_argument("--database-url", help="store URL (AUTHORITY_DATABASE_URL)")

    demo = commands.add_parser("demo", help="run the single-device scenario against a running authority")
    demo.add_argument("--target", default="127.0.0.1:50051", help="the authority's HOST:PORT")
    admin.add_commands(commands)
    return parser


_FLAGS = ("listen", "database_url", "log_level", "log_format", "metrics_listen")


def _overrides(args: argparse.Namespace) -> dict[str, str | None]:
    return {flag: getattr(args, flag, None) for flag in _FLAGS}


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(None, **_overrides(args))


def _show_config(args: argparse.Namespace) -> None:
    shown, origin = describe(_settings(args)), sources(None, **_overrides(args))
    if args.json:
        print(json.dumps(shown, indent=2))
        return
    width = max(len(name) for name in shown)
    for name, value in shown.items():
        print(f"{name:<{width}}  {value or '-':<40}  {origin[name]}".rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the exit status."""
    args = _parser().parse_args(argv)
    logs.install("INFO", "auto")
    try:
        if args.command in admin.COMMANDS:
            return admin.run(args)
        if args.command == "demo":
            from authority.demo import run_demo

            return 0 if asyncio.run(run_demo(args.target, print)) else 1
        if args.command == "config":
            _show_config(args)
            return 0
        settings = _settings(args)
        logs.install(settings.log_level, settings.log_format)
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
