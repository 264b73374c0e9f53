"""The store of record: SQLAlchemy tables, every query, and the Alembic migrations."""

from authority.store.records import KeyRecord, RefreshRecord, Revocation, SessionRecord
from authority.store.store import Store, Tx

__all__ = ["KeyRecord", "RefreshRecord", "Revocation", "SessionRecord", "Store", "Tx"]
