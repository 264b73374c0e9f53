"""``authority keys list|rotate|retire``: the signing keys in the database, rotating them,
and deleting a compromised one at once.

Keys live in the store every replica shares, so these commands talk to the database
(like ``authority migrate``), not to one server: a rotation reaches every replica
through the store, each picking the new key up without a restart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from authority.config import Settings, parse_duration

if TYPE_CHECKING:
    from authority.keys import KeyStatus


def add_parser(commands: Any) -> None:
    """Adds ``keys list`` and ``keys rotate`` to the command line."""
    keys = commands.add_parser("keys", help="list or rotate the signing keys (talks to the database)")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    for name, help_text in (("list", "every stored key and where it is in its life"),
                            ("rotate", "store a new signing key, published now, signing after --publish-ahead"),
                            ("retire", "delete a key at once (a compromised key): its tokens stop validating")):
        action = actions.add_parser(name, help=help_text)
        if name == "retire":
            action.add_argument("kid", help="the key to delete, as `authority keys list` names it")
        action.add_argument("--database-url", help="store URL (AUTHORITY_DATABASE_URL)")
        action.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if name == "rotate":
            action.add_argument("--publish-ahead",
                                help="how long the new key is published before it signs, such as 60s or 10m "
                                     "(default: AUTHORITY_KEY_PUBLISH_AHEAD, 60s)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Runs ``keys list`` or ``keys rotate``; prints the result."""
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here, not above: the command line builds its parser for every command, and
    # the store's drivers are not needed to refuse a bad flag or a busy port.
    from authority.keys import check_key_protection, key_statuses, retire_key, rotate_key
    from authority.store import Store
    from authority.store.migrate import prepare_schema
    from authority.store.reach import describe, require_existing

    # Only a rotation writes: listing and retiring need keys that are there already.
    writes = args.keys_command == "rotate"
    if not writes:
        require_existing(settings.database_url)
    where = describe(settings.database_url)
    store = Store.open(settings.database_url)
    try:
        await prepare_schema(store, upgrade=False, create=writes)
        now = time.time()
        if args.keys_command == "rotate":
            publish_ahead = (
                settings.key_publish_ahead
                if args.publish_ahead is None
                else parse_duration("publish_ahead", args.publish_ahead)
            )
            kek = settings.key_encryption_key_bytes()
            check_key_protection(store, kek, settings.allow_plaintext_keys)
            key = await rotate_key(store, settings.signing_algorithm, now, publish_ahead, kek)
            if args.json:
                print(json.dumps({"kid": key.kid, "algorithm": key.algorithm.value, "activates_at": key.activates_at}))
            else:
                print(f"new signing key {key.kid} ({key.algorithm.value}) in {where}, published now, signs from "
                      f"{_when(key.activates_at)}")
            return 0
        if args.keys_command == "retire":
            await retire_key(store, args.kid, now)
            print(f"retired signing key {args.kid} in {where}: running replicas drop it at once on PostgreSQL (within "
                  "five poll intervals where notifications are lost, or on SQLite)")
            return 0
        verify_for = settings.max_access_token_ttl + settings.leeway
        statuses = key_statuses(await store.keys(), settings.signing_algorithm, now, verify_for)
        if args.json:
            print(json.dumps([_as_dict(status) for status in statuses], indent=2))
        elif not statuses:
            print(f"no signing keys yet in {where}: the first server start creates one")
        else:
            print(f"signing keys in {where}:")
            _print_table(statuses)
        return 0
    finally:
        await store.close()


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _as_dict(status: KeyStatus) -> dict[str, object]:
    return {
        "kid": status.kid,
        "algorithm": status.algorithm,
        "state": status.state,
        "created_at": status.created_at,
        "activates_at": status.activates_at,
        "deletable_after": status.deletable_after,
    }


def _print_table(statuses: list[KeyStatus]) -> None:
    rows = [("KID", "ALG", "STATE", "SIGNS FROM", "DELETABLE AFTER")]
    rows += [(s.kid, s.algorithm, s.state, _when(s.activates_at), _when(s.deletable_after)) for s in statuses]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
