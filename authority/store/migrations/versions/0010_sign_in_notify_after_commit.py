"""The sign-in functions notify only when asked: the new code notifies after commit.

A transaction that sends ``NOTIFY`` takes, as it commits, a lock that PostgreSQL holds
until the commit is on disk ("serialize writers by acquiring a special lock that we hold
till after commit", src/backend/commands/async.c), so notifying commits run one at a
time, each waiting for its own WAL flush: every sign-in notified, and sign-ins could not
share a flush. The functions (bodies as in 0009) take a last argument, ``p_notify``,
true by default: replicas of the previous revision call them with the arguments they
know and notify as before, while this revision's replicas pass false and notify after
the commit, at most once per ``revocation_min_read_interval`` for all the sign-ins in
between (``authority/store/log_notifier.py``), outside any sign-in's commit.

Replicas of the previous revision keep serving beside this one during a rolling upgrade:
their calls, without the last argument, resolve to the new functions (the default fills
it in), and the answers are unchanged.

Revision ID: 0010_sign_in_notify_after_commit
Revises: 0009_sign_in_without_rereads
"""

import runpy
from pathlib import Path

from alembic import op

revision = "0010_sign_in_notify_after_commit"
down_revision = "0009_sign_in_without_rereads"
branch_labels = None
depends_on = None

_NOTIFY = "    PERFORM pg_notify('authority_revocations', '');\n"
_ASKED = "    IF p_notify THEN\n        PERFORM pg_notify('authority_revocations', '');\n    END IF;\n"
# The functions as 0009 wrote them, and their argument types there (to drop them).
_PREVIOUS = runpy.run_path(str(Path(__file__).with_name("0009_sign_in_without_rereads.py")))
_ARGUMENTS = {
    "authority_sign_in": "bigint, text, double precision, double precision, text[], jsonb, text, text[], text, "
                         "smallint, text, text, jsonb",
    "authority_sign_in_replacing": "bigint, text, double precision, double precision, jsonb, text, text, smallint, "
                                   "text, text, text, jsonb",
}


def _once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise RuntimeError(f"expected one {old!r} in the function of revision 0009")
    return text.replace(old, new)


def _asking(function: str, last_argument: str) -> str:
    """The function of 0009 with ``p_notify`` after its last argument, notifying only if true."""
    function = _once(function, "CREATE OR REPLACE FUNCTION", "CREATE FUNCTION")
    asking = f"{last_argument}, p_notify boolean DEFAULT true\n) RETURNS"
    function = _once(function, f"{last_argument}\n) RETURNS", asking)
    return _once(function, _NOTIFY, _ASKED)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, arguments in _ARGUMENTS.items():
        op.execute(f"DROP FUNCTION {name}({arguments})")
    op.execute(_asking(_PREVIOUS["SIGN_IN"], "p_events jsonb"))
    op.execute(_asking(_PREVIOUS["SIGN_IN_REPLACING"], "p_signed_in jsonb"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, arguments in _ARGUMENTS.items():
        op.execute(f"DROP FUNCTION {name}({arguments}, boolean)")
    for function in ("SIGN_IN", "SIGN_IN_REPLACING"):
        op.execute(_once(_PREVIOUS[function], "CREATE OR REPLACE FUNCTION", "CREATE FUNCTION"))
