"""The database: schema (table names, DDL) and the store that talks to it.

``open_store`` picks the implementation from the database URL: MariaDB/MySQL through aiomysql,
or the embedded SQLite default. The pipeline and the commands only see ``SQLStore``'s methods.
"""

from __future__ import annotations

from ..settings import Settings
from .base import SQLStore

__all__ = ["SQLStore", "open_store"]


def open_store(settings: Settings) -> SQLStore:
    """The store for DATABASE_URL (not yet connected: call ``await store.open()``)."""
    path = settings.sqlite_path()
    if path is not None:
        from .sqlite import SQLiteStore

        return SQLiteStore(path, settings)
    from .mysql import MySQLStore

    return MySQLStore(settings.database(), settings)
