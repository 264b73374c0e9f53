"""``authority token ...`` and ``authority sessions ...``: drive a running authority by hand.

Readable tables by default, ``--json`` for scripts. A failed call prints one line (the
gRPC status and its message) and exits 1; ``token validate`` also exits 1 for a token
that is not valid, so scripts can test it. A token given as ``-`` is read from stdin,
which keeps it out of the process list and the shell history.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import datetime
import decimal
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from authority.claims import EXACT_INTEGER_LIMIT, MAX_CLAIM_DEPTH
from authority.cli import connection
from authority.config import duration_text, load_settings, parse_duration
from authority.errors import ConfigError, StoreUnavailable

if TYPE_CHECKING:
    from authority.cli.admin_client import IssuedTokens

COMMANDS = ("token", "sessions")
# The names admin_client.POLICIES maps to the proto's policies; spelled here so that
# building the parser does not load grpc (a refused flag answers at once).
POLICY_NAMES = ("reject", "replace")


def add_commands(commands: Any) -> None:
    """Adds ``token`` and ``sessions`` to the ``authority`` command's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    connection.add_arguments(common, api_key_help="sent as x-api-key metadata, for an authority that asks for one")
    common.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer (default 10)")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")

    token = commands.add_parser("token", help="issue, validate, revoke or refresh tokens").add_subparsers(
        dest="action", required=True
    )
    issue = token.add_parser("issue", parents=[common], help="sign a subject in on a device")
    issue.add_argument("subject")
    issue.add_argument("device")
    issue.add_argument("--policy", choices=POLICY_NAMES, help="what happens to other devices (server default)")
    issue.add_argument("--audience", default="", help="the token's audience (server default)")
    issue.add_argument("--ttl", help="access-token lifetime such as 90s or 15m (server default)")
    issue.add_argument(
        "--claim", action="append", default=[], metavar="NAME=VALUE",
        help="an extra claim, repeatable. VALUE keeps its JSON type: n=3 is the integer 3, flag=true a boolean, "
             "tags='[\"a\"]' a list, x='\"3\"' the string \"3\"; VALUE that is not JSON is a string (name=alice). "
             "A number that cannot be carried exactly (an integer beyond 2^53, too many digits) is refused",
    )

    validate = token.add_parser("validate", parents=[common], help="check a token (exit 1 when it is not valid)")
    validate.add_argument("token", help="the access token, or - to read it from stdin")
    validate.add_argument("--audience", default="", help="the audience expected (server default)")

    revoke = token.add_parser("revoke", parents=[common], help="log out a token, end a session, or a whole subject")
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("--token", help="the access token to log out, or - to read it from stdin")
    target.add_argument("--refresh-token", help="the refresh token of the session to log out, or - to read it from stdin")
    target.add_argument("--session", help="the session id to end")
    target.add_argument("--subject", help="the subject to sign out everywhere")
    revoke.add_argument("--reason", default="", help="why, for the audit log")

    refresh = token.add_parser("refresh", parents=[common], help="trade a refresh token for a new pair")
    refresh.add_argument("refresh_token", help="the refresh token, or - to read it from stdin")

    sessions = commands.add_parser("sessions", help="inspect sessions").add_subparsers(dest="action", required=True)
    listing = sessions.add_parser("list", parents=[common], help="a subject's live sessions")
    listing.add_argument("subject")
    events = sessions.add_parser("events", parents=[common], help="the session event log (needs the auditor role)")
    events.add_argument("--subject", default="", help="only this subject's events")
    events.add_argument("--follow", action="store_true", help="keep printing new events as they happen")
    forget = sessions.add_parser(
        "forget", help="erase a subject on request: sign out everywhere, delete events and device names "
                       "(talks to the database)")
    forget.add_argument("subject")
    forget.add_argument("--database-url", help="store URL (AUTHORITY_DATABASE_URL)")
    forget.add_argument("--json", action="store_true", help="print JSON instead of a line")


def run(args: argparse.Namespace, out: TextIO = sys.stdout, stdin: TextIO = sys.stdin) -> int:
    """Runs one admin command; returns the exit status."""
    from authority.cli.admin_client import AdminCallFailed

    command = f"authority {args.command} {args.action}"
    try:
        return asyncio.run(_run(args, out, stdin))
    except AdminCallFailed as failed:
        print(f"{command}: {failed}", file=sys.stderr)
        return 1
    except ConfigError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    if args.command == "sessions" and args.action == "forget":
        return await _forget(args, out)
    reach = connection.connection(args)

    def show(value: Any, table: Callable[[Any], str]) -> None:
        print(json.dumps(_plain(value), indent=2, sort_keys=True) if args.json else table(value), file=out)

    from authority.cli.admin_client import AdminClient

    async with AdminClient(reach, timeout=args.timeout) as client:
        if args.command == "sessions" and args.action == "events":
            async for event in client.session_events(follow=args.follow, subject=args.subject,
                                                     restarted=_events_restarted):
                print(json.dumps(event, sort_keys=True) if args.json else _event_line(event), file=out, flush=True)
            return 0
        if args.command == "sessions":
            show(await client.sessions(args.subject), _sessions_table)
            return 0
        if args.action == "issue":
            ttl = None if args.ttl is None else parse_duration("--ttl", args.ttl)
            issued = await client.issue(
                args.subject, args.device, policy=args.policy or "", audience=args.audience,
                ttl=ttl, claims=_claims(args.claim),
            )
            show(issued, _tokens_table)
            if ttl is not None and (granted := _granted_ttl(issued.access_token)) is not None and granted < ttl:
                print(f"note: the ttl was capped to {duration_text(granted)} (asked for {duration_text(ttl)}) by the "
                      "authority's max_access_token_ttl", file=sys.stderr)
            return 0
        if args.action == "validate":
            validation = await client.validate(_secret(args.token, stdin), args.audience)
            show(validation, lambda v: _pairs(v.claims) if v.valid else f"not valid: {v.reason} ({v.text})")
            return 0 if validation.valid else 1
        if args.action == "revoke":
            token = _secret(args.token, stdin) if args.token else ""
            refresh_token = _secret(args.refresh_token, stdin) if args.refresh_token else ""
            revoked = await client.revoke(
                token=token,
                refresh_token=refresh_token,
                session_id=args.session or "",
                subject=args.subject or "",
                reason=args.reason,
            )
            show({"revoked_sessions": revoked}, lambda v: f"revoked {v['revoked_sessions']} session(s)")
            return 0
        show(await client.refresh(_secret(args.refresh_token, stdin)), _tokens_table)
        return 0


async def _forget(args: argparse.Namespace, out: TextIO) -> int:
    # Through the store, like `authority keys`: the revocations reach every replica
    # through the log.
    from authority.app import Authority
    from authority.store import Store
    from authority.store.migrate import prepare_schema
    from authority.store.reach import describe, require_existing, why_unavailable

    settings = load_settings(None, database_url=args.database_url)
    url = settings.database_url
    try:
        # A database that is not there (a mistyped URL) is said, never created: an erasure
        # reported done on an empty database would be a lie.
        require_existing(url)
        store = Store.open(url)
        try:
            await prepare_schema(store, upgrade=False, create=False)
        finally:
            await store.close()
        authority = await Authority.open(settings)
        try:
            ended, events = await authority.forget(args.subject)
        finally:
            await authority.close()
    except StoreUnavailable as error:
        raise ConfigError("database_url", f"cannot use {describe(url)}: {why_unavailable(url, error)}") from None
    result = {"ended_sessions": ended, "deleted_events": events}
    print(json.dumps(result) if args.json else f"signed out {ended} session(s), deleted {events} event(s), "
          "erased the device names", file=out)
    return 0


def _events_restarted() -> None:
    print("note: the session event log changed epoch (a restore or a failover); printing it again from its start",
          file=sys.stderr, flush=True)


def _event_line(event: dict[str, Any]) -> str:
    parts = [_when(event["occurred_at"]), event["kind"], event["subject"], event["session_id"] or "-",
             event["device_id"] or "-"]
    if event["device_name"]:
        parts.append(repr(event["device_name"]))
    if event["replaced_session_ids"]:
        parts.append("replaced " + ",".join(event["replaced_session_ids"]))
    if event["cause"]:
        parts.append(event["cause"])
    if event["caller"]:
        parts.append("by " + event["caller"])
    return f"{event['sequence']:>6}  " + "  ".join(parts)


def _secret(given: str, stdin: TextIO) -> str:
    return stdin.readline().strip() if given == "-" else given


def _claims(pairs: Sequence[str]) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ConfigError("--claim", f"{pair!r} is not NAME=VALUE")
        if _nesting(text) > MAX_CLAIM_DEPTH:
            # Checked before parsing: json.loads (and the Struct after it) recurse once a
            # level, and a few thousand levels end in a RecursionError.
            raise ConfigError(f"--claim {name}", f"nests lists or objects more than {MAX_CLAIM_DEPTH} levels deep, "
                              "more than a token's claims may")
        try:
            claims[name] = json.loads(text, parse_int=_exact_integer, parse_float=_exact_number,
                                      parse_constant=_no_constant)
        except _Inexact as inexact:
            raise ConfigError(f"--claim {name}", f"{inexact} cannot be carried exactly (a claim's number travels "
                              "as a double); quote it to send it as a string") from None
        except ValueError:
            claims[name] = text
    return claims


def _nesting(text: str) -> int:
    """How deep ``[`` and ``{`` nest in ``text``, outside strings, if it looks like a JSON
    list or object (a scalar, or text that is not JSON, nests nothing). Stops counting one
    past MAX_CLAIM_DEPTH."""
    if not text.lstrip().startswith(("[", "{")):
        return 0
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif in_string:
            escaped = char == "\\"
            in_string = char != '"'
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_CLAIM_DEPTH:
                break
        elif char in "]}":
            depth -= 1
    return deepest


class _Inexact(ValueError):
    """A number in a claim that a double would change."""


def _exact_integer(text: str) -> int:
    if abs(int(text)) >= EXACT_INTEGER_LIMIT:
        raise _Inexact(text)
    return int(text)


def _exact_number(text: str) -> float:
    value = float(text)
    # The shortest text of the double must be the number that was written: 0.1 passes,
    # 0.10000000000000000001 and 1e400 (infinity) do not.
    if not math.isfinite(value) or decimal.Decimal(repr(value)) != decimal.Decimal(text):
        raise _Inexact(text)
    if value.is_integer() and abs(value) >= EXACT_INTEGER_LIMIT:
        raise _Inexact(text)
    return value


def _no_constant(text: str) -> float:
    raise _Inexact(text)  # NaN, Infinity: no JSON number at all


def _granted_ttl(access_token: str) -> int | None:
    """exp - iat of a token, read (not verified: for display only) from its payload."""
    try:
        payload = access_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return int(claims["exp"]) - int(claims["iat"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _when(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pairs(values: dict[str, Any]) -> str:
    width = max((len(name) for name in values), default=0)
    lines = []
    for name, shown in values.items():
        if name.endswith("_at") and isinstance(shown, int):
            shown = _when(shown)
        elif isinstance(shown, (dict, list)):
            shown = json.dumps(shown, sort_keys=True) if shown else "-"
        lines.append(f"{name:<{width}}  {shown}")
    return "\n".join(lines)


def _tokens_table(issued: IssuedTokens) -> str:
    return _pairs(dataclasses.asdict(issued))


def _sessions_table(sessions: list[Any]) -> str:
    if not sessions:
        return "no live sessions"
    rows = [("SESSION", "DEVICE", "CLASS", "NAME", "CREATED", "LAST-USED", "EXPIRES")] + [
        (s.session_id, s.device_id, s.device_class or "-", s.device_name or "-", _when(s.created_at),
         _when(s.last_used_at), _when(s.expires_at))
        for s in sessions
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
