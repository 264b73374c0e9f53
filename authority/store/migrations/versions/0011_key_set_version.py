"""The signing keys' set version: a counter the database raises on every change to them.

Consumers order the key sets replicas announce by it (``key_set_version`` in
GetSigningKeysResponse and in SIGNING_KEYS events): a replica that has not yet reread its
keys announces a lower version, and its set is ignored instead of bringing back a retired
key. The counter is kept by triggers, not by the authority's code, so that every write to
``signing_keys`` raises it, whoever makes it: replicas of the previous revision during a
rolling upgrade (they neither read nor know the counter), ``authority keys`` commands, an
operator's own SQL. Reads take it in the same statement as the keys
(:meth:`authority.store.key_queries.KeyQueries.versioned_keys`), so a set and its version
come from one snapshot. Concurrent changes update the one row, so they wait on each other
and the versions follow their commit order.

Revision ID: 0011_key_set_version
Revises: 0010_sign_in_notify_after_commit
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_key_set_version"
down_revision = "0010_sign_in_notify_after_commit"
branch_labels = None
depends_on = None

_RAISE = "UPDATE key_set_version SET version = version + 1 WHERE id = 1"
_POSTGRES = (
    f"""CREATE FUNCTION authority_key_set_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_RAISE};
    RETURN NULL;
END
$$""",
    """CREATE TRIGGER key_set_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION authority_key_set_changed()""",
)
# SQLite has row triggers only: a statement changing n keys raises the version n times.
_SQLITE_EVENTS = ("INSERT", "UPDATE", "DELETE")


def upgrade() -> None:
    table = op.create_table(
        "key_set_version",
        # One row: id 1. Starts at 1: 0 is what a server that does not say sends.
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(table, [{"id": 1, "version": 1}])
    if op.get_bind().dialect.name == "postgresql":
        for statement in _POSTGRES:
            op.execute(statement)
        return
    for event in _SQLITE_EVENTS:
        op.execute(
            f"CREATE TRIGGER key_set_changed_{event.lower()} AFTER {event} ON signing_keys "
            f"FOR EACH ROW BEGIN {_RAISE}; END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER key_set_changed ON signing_keys")
        op.execute("DROP FUNCTION authority_key_set_changed()")
    else:
        for event in _SQLITE_EVENTS:
            op.execute(f"DROP TRIGGER key_set_changed_{event.lower()}")
    op.drop_table("key_set_version")
