"""The embedded store's own edges (the SPEC rules run in test_import on both backends)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

from kmdb_async.settings import Settings
from kmdb_async.store import open_store
from kmdb_async.store.sqlite import SQLiteStore


async def test_a_cancelled_call_finishes_in_its_thread_before_the_store_moves_on(tmp_path: Path) -> None:
    store = open_store(Settings(database_url=f"sqlite:///{tmp_path / 'k.sqlite3'}"))
    assert isinstance(store, SQLiteStore)
    await store.open()
    release, finished = threading.Event(), threading.Event()

    def gate() -> int:  # a statement that runs until the test lets it finish
        release.wait(10)
        finished.set()
        return 1

    assert store._db is not None
    store._db.create_function("gate", 0, gate)
    call = asyncio.ensure_future(store.execute("SELECT gate()"))
    await asyncio.sleep(0.1)
    call.cancel()
    await asyncio.sleep(0.1)
    # Still waiting for its thread: closing now would free the connection under it.
    assert not call.done()
    release.set()
    with contextlib.suppress(asyncio.CancelledError):
        await call
    assert finished.is_set()
    await store.close()
