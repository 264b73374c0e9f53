"""The store of record: SQLAlchemy tables, every query, and the Alembic migrations.

Holds no business rule: the domain decides, the store reads and writes. May import only
the bottom layer (:mod:`authority.config`, :mod:`authority.errors`); SQLAlchemy's and the
drivers' exceptions stop here, translated into :mod:`authority.errors`.
"""

from authority.store.records import (
    KeyRecord,
    LogState,
    RefreshRecord,
    RetainedKeyRecord,
    Revocation,
    RevocationCause,
    RevocationDetail,
    SessionEvent,
    SessionEventKind,
    SessionRecord,
)
from authority.store.store import Store, Tx

__all__ = [
    "KeyRecord",
    "LogState",
    "RefreshRecord",
    "RetainedKeyRecord",
    "Revocation",
    "RevocationCause",
    "RevocationDetail",
    "SessionEvent",
    "SessionEventKind",
    "SessionRecord",
    "Store",
    "Tx",
]
