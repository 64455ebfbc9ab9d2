"""The database: schema (table names, DDL) and the store that talks to it.

``open_store`` picks the implementation from the database URL; the pipeline and the commands
only ever see the object it returns.
"""

from __future__ import annotations

from ..settings import Settings
from .mysql import MySQLStore


def open_store(settings: Settings) -> MySQLStore:
    """The store for ``settings.database_url`` (not yet connected: call ``await store.open()``)."""
    return MySQLStore(settings.database(), settings)
