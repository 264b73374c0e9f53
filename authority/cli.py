"""The ``authority`` command line: serve, migrate, demo.

Every option of ``serve`` and ``migrate`` is also an ``AUTHORITY_*`` environment
variable; a flag wins over its variable. Errors print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from authority.config import Settings, load_settings
from authority.errors import AuthorityError

log = logging.getLogger("authority")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authority", description="A gRPC token authority.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the authority")
    serve.add_argument("--listen", help="HOST:PORT to listen on (AUTHORITY_LISTEN, default 127.0.0.1:50051)")
    serve.add_argument("--database-url", help="store URL (AUTHORITY_DATABASE_URL, default sqlite+aiosqlite:///authority.db)")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (AUTHORITY_LOG_LEVEL)")

    migrate = commands.add_parser("migrate", help="bring the database schema up to date (safe to repeat)")
    migrate.add_argument("--database-url", help="store URL (AUTHORITY_DATABASE_URL)")

    demo = commands.add_parser("demo", help="run the single-device scenario against a running authority")
    demo.add_argument("--target", default="127.0.0.1:50051", help="the authority's HOST:PORT")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        listen=getattr(args, "listen", None),
        database_url=getattr(args, "database_url", None),
        log_level=getattr(args, "log_level", None),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        if args.command == "demo":
            from authority.demo import run_demo

            return 0 if asyncio.run(run_demo(args.target, print)) else 1
        settings = _settings(args)
        logging.getLogger().setLevel(settings.log_level.upper())
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
