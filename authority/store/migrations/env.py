"""Alembic environment: migrations run on a connection handed in by authority.store.migrate."""

from alembic import context

from authority.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `authority migrate`, which hands Alembic its connection")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
