"""A first import in slices: progress committed as it goes, indexes built at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kmdb_async.errors import TerminalError
from kmdb_async.pipeline import run_import
from kmdb_async.store import firstimport, mysql, schema

from . import reference
from .conftest import Database, connect, settings_for
from .exportgen import write_export

SLICE_MIB = 0.25  # the 12,000-line export (about 2.4 MB) loads in about ten slices


def indexes(database: Database) -> set[tuple[str, str]]:
    """The secondary indexes of events and properties."""
    return set(database.query(
        "SELECT DISTINCT TABLE_NAME, INDEX_NAME FROM information_schema.STATISTICS WHERE "
        "TABLE_SCHEMA = %s AND TABLE_NAME IN ('events', 'properties') AND INDEX_NAME <> "
        "'PRIMARY'", (database.name,)))


ALL_INDEXES = {(table, name) for table, names in schema.ROW_INDEXES.items() for name in names}


def cursor(database: Database) -> dict[int, int]:
    return dict(database.query("SELECT `revision`, `offset` FROM kmdb_revisions"))


async def test_a_sliced_first_import_stores_the_rows_of_one_load_and_builds_its_indexes(
        database: Database, tmp_path: Path) -> None:
    root = tmp_path / "export"
    write_export(root, 12000, revisions=5, seed=11)
    settings = settings_for(database, str(root), batch_size=100, slice_mib=SLICE_MIB,
                            rejects=tmp_path / "r.jsonl")
    await run_import(settings)
    assert database.dump() == reference.expected(root)
    assert indexes(database) == ALL_INDEXES
    assert database.query("SELECT COUNT(*) FROM kmdb_late_links") == [(0,)]


def run_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kmdb_async", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def import_until(database: Database, env: dict[str, str], cwd: Path, root: Path, slices: int,
                 signum: int) -> subprocess.Popen[bytes]:
    """Start an import of ``root``, send it ``signum`` once ``slices`` slices are committed
    (its cursor has moved that far), and wait for its end."""
    process = subprocess.Popen([sys.executable, "-m", "kmdb_async", "import", str(root)],
                               env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        try:
            saved = sum(cursor(database).values())
        except Exception:  # noqa: BLE001 - the schema may not exist yet
            saved = 0
        if saved >= slices * SLICE_MIB * (1 << 20):
            process.send_signal(signum)
            break
        time.sleep(0.01)
    process.wait(timeout=30)
    return process


def test_sigterm_commits_the_slice_and_leaves_the_index_build_to_the_next_run(
        database: Database, tmp_path: Path) -> None:
    """SIGTERM stops a sliced first import within seconds (SPEC 5): what was read commits,
    and the indexes, a long step on a large history, are left for the next run."""
    root = tmp_path / "export"
    write_export(root, 12000, revisions=5, seed=11)
    env = {**os.environ, "DATABASE_URL": database.url, "KMDB_SLICE_MIB": str(SLICE_MIB),
           "KMDB_BATCH_SIZE": "100", "KMDB_PROGRESS_INTERVAL": "600"}
    process = import_until(database, env, tmp_path, root, 1, signal.SIGTERM)
    assert process.returncode == 128 + signal.SIGTERM, "the import ended before a slice"
    database.close()
    assert database.query("SELECT COUNT(*) FROM events")[0][0] > 0
    assert indexes(database) < ALL_INDEXES  # not built on the way out
    rerun = run_cli(env, tmp_path, "import", str(root))
    assert rerun.returncode == 0, rerun.stderr
    database.close()
    assert database.dump() == reference.expected(root)
    assert indexes(database) == ALL_INDEXES


def test_a_killed_sliced_first_import_keeps_its_slices_and_the_next_run_completes_it(
        database: Database, tmp_path: Path) -> None:
    root = tmp_path / "export"
    write_export(root, 12000, revisions=5, seed=11)
    total = sum(p.stat().st_size for p in (root / "revisions").iterdir())
    env = {**os.environ, "DATABASE_URL": database.url, "KMDB_SLICE_MIB": str(SLICE_MIB),
           "KMDB_BATCH_SIZE": "100", "KMDB_PROGRESS_INTERVAL": "600"}
    process = import_until(database, env, tmp_path, root, 2, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL, "the import ended before two slices"
    database.close()
    kept = database.query("SELECT COUNT(*) FROM events")[0][0]
    assert kept > 0 and sum(cursor(database).values()) < total  # part-way, and saved
    assert indexes(database) < ALL_INDEXES  # unfinished: the indexes wait for its end

    status = run_cli(env, tmp_path, "status", str(root), "--json")
    assert status.returncode == 3, status.stderr  # pending
    assert json.loads(status.stdout)["first_import_unfinished"] is True

    rerun = run_cli(env, tmp_path, "import", str(root))
    assert rerun.returncode == 0, rerun.stderr
    assert "kmdb-async: building the first import's indexes" in rerun.stderr  # a long step
    lines = int(rerun.stdout.split(" lines, ")[0].rsplit(" ", 1)[1])
    assert 0 < lines < 12000  # only what the killed run had not committed was read again
    database.close()
    assert database.dump() == reference.expected(root)
    assert indexes(database) == ALL_INDEXES
    done = run_cli(env, tmp_path, "status", str(root), "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["first_import_unfinished"] is False


async def test_rows_committed_past_the_cursor_are_loaded_again_without_duplicates(
        database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill between a slice's commit and its cursor write leaves rows past the cursor: the
    next run, resuming, loads them again (a duplicate key would fail the load)."""
    root = tmp_path / "export"
    write_export(root, 6000, revisions=3, seed=5)
    settings = settings_for(database, str(root), batch_size=100, slice_mib=SLICE_MIB,
                            rejects=tmp_path / "r.jsonl")
    # The first run stops where a kill would leave it: the rows loaded, the end not reached.
    monkeypatch.setattr(mysql.MySQLStore, "complete_first_import", _never)
    await run_import(settings)
    monkeypatch.undo()
    assert indexes(database) < ALL_INDEXES
    database.query("UPDATE kmdb_revisions SET `offset` = `offset` DIV 3")  # cursor behind rows
    await run_import(settings)
    assert database.dump() == reference.expected(root)
    assert indexes(database) == ALL_INDEXES


async def _never(self: Any, repoints: Any) -> None:
    return None


async def test_an_index_build_waits_a_bounded_time_for_a_table_held_open(
        database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction left open on ``events`` (a reporting tool's) holds its metadata lock: the
    index build waits INDEX_LOCK_WAIT, then the run fails in one line, still unfinished, and
    the next run builds the indexes. Without the bound it would wait for the server's default,
    a year."""
    root = tmp_path / "export"
    write_export(root, 4000, revisions=2, seed=9)
    settings = settings_for(database, str(root), batch_size=100, slice_mib=SLICE_MIB,
                            retry_attempts=2, rejects=tmp_path / "r.jsonl")
    monkeypatch.setattr(mysql.MySQLStore, "complete_first_import", _never)
    await run_import(settings)
    monkeypatch.undo()
    monkeypatch.setattr(firstimport, "INDEX_LOCK_WAIT", 1)
    reader = connect(database.url)
    try:
        with reader.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT COUNT(*) FROM events")
        with pytest.raises(TerminalError, match="building the indexes of `events`.*next import"):
            await run_import(settings)
        assert indexes(database) < ALL_INDEXES
    finally:
        reader.close()
    await run_import(settings)
    assert indexes(database) == ALL_INDEXES
    assert database.dump() == reference.expected(root)


def late_export(root: Path) -> None:
    """Rows of anon-late in early slices; then an alias the read-ahead cannot see (its key
    written with an escape) links anon-late to 42, in the last revision."""
    (root / "revisions").mkdir(parents=True)
    write_export(root / "bulk", 6000, revisions=2, seed=3)
    for number, path in enumerate(sorted((root / "bulk" / "revisions").iterdir()), start=1):
        extra = b'{"_n":"Late Event","_p":"anon-late","_t":1325376001}\n' if number == 1 else b""
        (root / "revisions" / f"{number}.json").write_bytes(extra + path.read_bytes())
    (root / "revisions" / "3.json").write_bytes(
        b'{"_p":"anon-late","\\u005fp2":"42","_t":1325400000}\n'
        b'{"_n":"After","_p":"anon-late","_t":1325400001}\n')


@pytest.mark.parametrize("completed_by", ["the same run", "the next run", "a run of inserts"])
async def test_groups_linked_late_are_re_pointed_once_the_indexes_exist(
        database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        completed_by: str) -> None:
    root = tmp_path / "export"
    late_export(root)
    # One revision read at a time: the row of anon-late is resolved before its late link (with
    # revisions read at once, the link may come first and the row needs no re-pointing).
    settings = settings_for(database, str(root), batch_size=100, slice_mib=SLICE_MIB,
                            files_in_flight=1, rejects=tmp_path / "r.jsonl")
    if completed_by != "the same run":
        monkeypatch.setattr(mysql.MySQLStore, "complete_first_import", _never)
        await run_import(settings)
        monkeypatch.undo()
        assert database.query("SELECT name FROM kmdb_late_links") == [("anon-late",)]
        owner = database.query("SELECT u.name FROM events e JOIN `keys` k ON k.id = e.n JOIN "
                               "users u ON u.id = e.user_id WHERE k.string = 'Late Event'")
        assert owner == [("anon-late",)]  # not re-pointed yet: no index to find its rows by
        if completed_by == "a run of inserts":
            settings = settings_for(database, str(root), batch_size=100, bulk_load=False,
                                    files_in_flight=1, rejects=tmp_path / "r.jsonl")
    await run_import(settings)
    assert database.dump() == reference.expected(root)
    assert indexes(database) == ALL_INDEXES
    assert database.query("SELECT COUNT(*) FROM kmdb_late_links") == [(0,)]
