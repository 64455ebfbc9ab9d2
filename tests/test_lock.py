"""One command that changes tables at a time: import, flush, partition, filter changes.

Each holds the database's lock (MariaDB GET_LOCK, the embedded file's ``FILE.lock``) while it
runs; one started meanwhile refuses, naming the holder. The import is held at a known point
by a source that blocks, never raced with a sleep. A run releases its lock before it returns,
so back-to-back runs in one process never find their own previous lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kmdb_async import pipeline
from kmdb_async.cli import _flush
from kmdb_async.errors import TerminalError
from kmdb_async.pipeline import run_import
from kmdb_async.settings import DatabaseURL
from kmdb_async.sources import Revision, Source
from kmdb_async.sources.local import LocalSource
from kmdb_async.store import open_store
from kmdb_async.store.base import LOCK_HOLDERS

from . import reference
from .conftest import Database, settings_for
from .exportgen import write_export
from .faultproxy import TIMEOUT, TcpProxy

CLI_TIMEOUT = 120.0  # seconds: bound of one command's run


class GatedSource:
    """A source whose revision ``gated`` blocks (after its first chunk) until ``go`` is set;
    ``reached`` is set when a read blocks there: the import is then known to be running."""

    def __init__(self, inner: Source, gated: int) -> None:
        self.inner, self.gated = inner, gated
        self.reached, self.go = asyncio.Event(), asyncio.Event()

    async def revisions(self) -> list[Revision]:
        return await self.inner.revisions()

    async def stream(self, revision: Revision, start: int) -> AsyncIterator[bytes]:
        async with contextlib.aclosing(self.inner.stream(revision, start)) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                yield chunk
                if revision.number == self.gated and not self.go.is_set():
                    self.reached.set()
                    await self.go.wait()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def command(*args: str, **env: str) -> tuple[int, str]:
    """``kmdb-async ARGS`` in a real process (this loop keeps running); exit code, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kmdb_async", *args, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        return -1, f"{args[0]}: did not end within {CLI_TIMEOUT} s"
    assert process.returncode is not None
    return process.returncode, err.decode()


@pytest.mark.parametrize("kind,bulk", [("mariadb", False), ("mariadb", True), ("sqlite", False)])
async def test_flush_partition_and_filter_changes_refuse_while_an_import_runs(
        make_database: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
        bulk: bool) -> None:
    database = make_database(kind)
    root = tmp_path / "export"
    write_export(root, 1500, revisions=3, seed=21)
    gate = GatedSource(LocalSource(str(root), chunk_size=4096), gated=3)
    monkeypatch.setattr(pipeline, "source_for", lambda settings: gate)
    settings = settings_for(database, str(root), bulk_load=bulk, files_in_flight=1,
                            rejects=tmp_path / "r.jsonl")
    running = asyncio.create_task(run_import(settings))
    await asyncio.wait_for(gate.reached.wait(), CLI_TIMEOUT)  # revisions 1 and 2 are read

    refusals = {"flush": ["flush", "--yes"], "ignore-user": ["ignore-user", "add", "someone"],
                "blacklist-property": ["blacklist-property", "remove", "x"]}
    if kind == "mariadb":  # the embedded database refuses to be partitioned at all
        refusals["partition"] = ["partition", "--max-date", "2030-01-01"]
    try:
        done = {name: await command(*args, DATABASE_URL=database.url)
                for name, args in refusals.items()}
    finally:
        gate.go.set()
        summary = await asyncio.wait_for(running, CLI_TIMEOUT)

    for name, (code, err) in done.items():
        assert code == 1, (name, err)
        assert "another kmdb-async import is running" in err, (name, err)
        assert "process" in err if kind == "sqlite" else "MariaDB connection" in err
    assert summary.revisions == 3
    intact = database.dump() == reference.expected(root)  # flushed nothing, filtered nothing
    assert intact, "the import's rows differ from the sequential model's"
    assert database.query("SELECT COUNT(*) FROM ignored_users") == [(0,)]


@pytest.mark.parametrize("kind", ["mariadb", "sqlite"])
@pytest.mark.parametrize("holder", [h for h in LOCK_HOLDERS if h != "import"])
async def test_an_import_refuses_while_another_command_changes_tables(
        make_database: Any, tmp_path: Path, kind: str, holder: str) -> None:
    database = make_database(kind)
    root = tmp_path / "export"
    write_export(root, 200, revisions=1, seed=3)
    settings = settings_for(database, str(root))
    store = open_store(settings)  # holds the lock as that command does while it runs
    await store.open()
    try:
        await store.acquire_import_lock(holder)
        code, err = await command("import", str(root), DATABASE_URL=database.url)
        assert code == 1 and f"another kmdb-async {holder} is running" in err, err
        with pytest.raises(TerminalError, match=f"another kmdb-async {holder} is running"):
            await _flush(settings)
    finally:
        await store.close()
    assert (await run_import(settings)).revisions == 1  # and once it is done, it goes


async def back_to_back(settings: Any, times: int) -> None:
    """Import, import again, flush: ``times`` over, in this process."""
    for _ in range(times):
        assert (await run_import(settings)).revisions == 1
        await run_import(settings)
        await _flush(settings)


async def test_back_to_back_runs_in_one_process_never_find_their_own_lock(
        database: Database, tmp_path: Path) -> None:
    root = tmp_path / "export"
    write_export(root, 100, revisions=1, seed=4)
    await back_to_back(settings_for(database, str(root)), times=8)


class LateCloseProxy(TcpProxy):
    """Forwards to MariaDB, but tells it that a client closed its connection only once
    ``notice()`` is called: a server that notices closed connections late, so that a lock
    left to die with its connection is still held when the next run starts."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self._noticed: asyncio.Event | None = None
        self._handling: set[asyncio.Task[None]] = set()

    def notice(self) -> None:
        """Pass every close on, now and from now on."""

        async def now() -> None:
            (await self._event()).set()

        self._call(now())

    def pause(self) -> None:
        """Cut every connection, and let them end before the loop stops (see stop())."""
        self.notice()
        super().pause()

        async def ended() -> None:
            if self._handling:
                await asyncio.wait(self._handling, timeout=TIMEOUT / 2)

        self._call(ended())

    async def _event(self) -> asyncio.Event:
        if self._noticed is None:
            self._noticed = asyncio.Event()
        return self._noticed

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        noticed = await self._event()
        task = asyncio.current_task()
        assert task is not None
        self._handling.add(task)
        up_reader, up_writer = await self._upstream(self.upstream_port)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pipe(up_reader, writer))
                with contextlib.suppress(OSError):  # the client's bytes, then its close, late
                    while data := await reader.read(1 << 16):
                        up_writer.write(data)
                        await up_writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(noticed.wait(), 6 * TIMEOUT)
                up_writer.transport.abort()
        finally:
            self._handling.discard(task)
            self._writers.discard(up_writer)
            up_writer.transport.abort()


async def test_a_run_releases_its_lock_before_it_returns(
        database: Database, tmp_path: Path) -> None:
    root = tmp_path / "export"
    write_export(root, 100, revisions=1, seed=4)
    url = DatabaseURL.parse(database.url)
    with LateCloseProxy(url.port) as proxy:
        try:
            via = database.url.replace(f":{url.port}/", f":{proxy.port}/")
            settings = replace(settings_for(database, str(root)), database_url=via, writers=1)
            await back_to_back(settings, times=2)
        finally:
            proxy.notice()
