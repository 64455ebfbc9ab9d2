"""The embedded store's own edges (the SPEC rules run in test_import on both backends)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from kmdb_async.errors import TerminalError
from kmdb_async.settings import Settings
from kmdb_async.store import open_store
from kmdb_async.store.sqlite import SQLiteStore, hold_lock, release_lock


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


def test_the_lock_file_goes_with_the_import_and_two_holders_never_coexist(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder removes ``FILE.lock`` as it lets go. A process that opened the file just
    before then locks a removed file: it must notice and lock the file the path names. The
    file records the holder's pid and command, which a refusal names."""
    path = tmp_path / "k.sqlite3.lock"
    held = hold_lock(path, "flush")
    assert path.read_text() == f"{os.getpid()} flush"
    running = rf"another kmdb-async flush is running .* \(process {os.getpid()}\)"
    with pytest.raises(TerminalError, match=running):
        hold_lock(path)
    release_lock(path, held)
    assert not path.exists()

    path.write_text("12345 import")  # a lock file some holder is about to remove
    flock = fcntl.flock
    removed: list[Path] = []

    def holder_lets_go_first(fd: Any, operation: int) -> None:
        if not removed:  # between our open and our flock, the holder removes it and lets go
            path.unlink()
            removed.append(path)
        flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", holder_lets_go_first)
    handle = hold_lock(path)
    monkeypatch.undo()
    assert removed and os.fstat(handle.fileno()).st_ino == path.stat().st_ino
    with pytest.raises(TerminalError, match="another kmdb-async import is running"):
        hold_lock(path)  # a third process meets the lock of the second, on the same file
    release_lock(path, handle)
    assert not path.exists()
