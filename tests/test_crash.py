"""SPEC section 5: SIGKILL at any moment, then run again: the rows of one clean import."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from . import reference
from .conftest import REDIS, Database
from .exportgen import write_export


def wait_for_rows(database: Database, rows: int, process: subprocess.Popen[bytes],
                  timeout: float = 60.0) -> None:
    """Return once ``events`` holds at least ``rows`` rows (or the process has ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if database.query("SELECT COUNT(*) FROM events")[0][0] >= rows:
                return
        except Exception:  # the schema may not exist yet
            database.close()
        time.sleep(0.02)


def rerun_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of the run that completes a killed or interrupted import: the default
    batch size (the small batches give the runs that are stopped many commits to stop
    between; the run after them only has to finish from the saved progress, and 20-line
    commits made it the slowest part of these tests on a busy machine)."""
    return {k: v for k, v in env.items() if k != "KMDB_BATCH_SIZE"}


@pytest.mark.parametrize("backend,cursor", [("mariadb", "redis"), ("mariadb", "database"),
                                            ("sqlite", "database")])
def test_sigkill_part_way_then_rerun_gives_the_clean_rows(
        make_database: Any, tmp_path: Path, redis_prefix: str, backend: str, cursor: str) -> None:
    database = make_database(backend)
    root = tmp_path / "export"
    write_export(root, 12000, revisions=5, seed=11)
    env = {**os.environ, "DATABASE_URL": database.url, "KMDB_BATCH_SIZE": "20",
           "KMDB_WRITERS": "3", "KMDB_FILES_IN_FLIGHT": "3", "KMDB_BULK_LOAD": "false",
           # Groups dropped and looked up in what the killed runs committed (the named points
           # below run with the default, which holds them all).
           "KMDB_ALIAS_CACHE_SIZE": "64"}
    if cursor == "redis":
        env.update(KMDB_REDIS_URL=REDIS, KMDB_REDIS_PREFIX=redis_prefix)
    command = [sys.executable, "-m", "kmdb_async", "import", str(root)]

    kills = 0
    for rows in (0, 200, 2500, 6000):  # before the first commit, then deeper and deeper
        process = subprocess.Popen(command, env=env, cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if rows == 0:
            time.sleep(0.3)
        else:
            wait_for_rows(database, rows, process)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 3

    final = subprocess.run(command, env=rerun_env(env), cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    database.close()
    assert database.dump() == reference.expected(root)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_save_progress_and_exit_promptly(
        database: Database, tmp_path: Path, signum: int) -> None:
    root = tmp_path / "export"
    write_export(root, 40000, revisions=4, seed=13)  # long enough to be interrupted
    env = {**os.environ, "DATABASE_URL": database.url, "KMDB_BATCH_SIZE": "20", "KMDB_WRITERS": "2",
           "KMDB_BULK_LOAD": "false"}
    command = [sys.executable, "-m", "kmdb_async", "import", str(root)]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_for_rows(database, 500, process)
    assert process.poll() is None, "the import ended before it could be interrupted"
    process.send_signal(signum)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert process.returncode == 128 + signum
    assert "progress saved" in stderr and "Traceback" not in stderr
    saved = database.query("SELECT SUM(`offset`) FROM kmdb_revisions")[0][0]
    assert saved and saved > 0  # committed batches were recorded

    final = subprocess.run(command, env=rerun_env(env), cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert "imported" in final.stdout
    database.close()
    assert database.dump() == reference.expected(root)


def test_sigterm_during_a_bulk_load_commits_what_was_read_and_exits_promptly(
        database: Database, tmp_path: Path) -> None:
    root = tmp_path / "export"
    write_export(root, 40000, revisions=4, seed=14)
    env = {**os.environ, "DATABASE_URL": database.url, "KMDB_BATCH_SIZE": "20", "KMDB_WRITERS": "2",
           "KMDB_FILES_IN_FLIGHT": "1", "KMDB_BULK_LOAD": "true", "KMDB_PROGRESS_INTERVAL": "0.05"}
    command = [sys.executable, "-m", "kmdb_async", "import", str(root)]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    # Interrupt once rows are streaming: the progress log counts bytes of batches handed to
    # the LOAD DATA statements (a signal during the alias read-ahead before them has nothing
    # read to save, and a busy machine can make that phase last).
    lines: list[str] = []
    streaming = threading.Event()

    def watch_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if re.match(r"progress: \S+ (?!0\.0/)[0-9.,]+/", line):
                streaming.set()

    watcher = threading.Thread(target=watch_stderr, daemon=True)
    watcher.start()
    assert streaming.wait(60), "".join(lines)
    assert process.poll() is None, "the import ended before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    process.wait(timeout=30)
    watcher.join(timeout=30)
    process.stderr.close()  # type: ignore[union-attr]
    stderr = "".join(lines)
    assert time.monotonic() - sent < 10
    assert process.returncode == 128 + signal.SIGTERM
    assert "progress saved" in stderr and "Traceback" not in stderr
    saved = database.query("SELECT SUM(`offset`) FROM kmdb_revisions")[0][0]
    assert saved and saved < sum(p.stat().st_size for p in (root / "revisions").iterdir())
    assert database.query("SELECT COUNT(*) FROM events")[0][0] > 0  # the read part committed

    final = subprocess.run(command, env=rerun_env(env), cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    database.close()
    assert database.dump() == reference.expected(root)


# -- SIGKILL at named points, chosen by watching the database and Redis ----------------------
#
# No hook in the importer: the harness reads what a running import has done (PROCESSLIST,
# the cursor, the rows) and kills when the moment has come; where it can, it checks after the
# kill that the state it killed in really was that point. benchmarks/kill_points.py runs the
# same points at random depths many times.

VICTIM, VICTIM_ALIAS, VICTIM_EVENTS = "anon-victim", "99999999", 30
OFFSET_MASK = (1 << 40) - 1
POINTS = ("before-first-commit", "re-pointing", "mid-batch", "after-commit-before-cursor",
          "mid-revision")
#: A first import's bulk load: nothing commits until every batch is streamed; then the rows
#: commit, then the alias pairs with the closing re-pointing pass, then the cursor.
BULK_POINTS = ("before-first-commit", "mid-load", "re-pointing")


def write_crash_export(root: Path, count: int, revisions: int, seed: int) -> None:
    """write_export, plus a victim whose rows open revision 1 and an alias a third of the way
    in that re-points them (the re-pointing UPDATE the harness catches). The alias's key is
    written with a JSON escape, so a first import's read-ahead of aliases does not see it and
    its closing pass must re-point the victim's rows."""
    paths = write_export(root, count, revisions=revisions, seed=seed)
    lines = paths[0].read_bytes().splitlines(keepends=True)
    head = [b'{"_n":"victim","_p":"%s","_t":1325376000,"i":%d}\n' % (VICTIM.encode(), i)
            for i in range(VICTIM_EVENTS)]
    alias = [b'{"_p":"%s","\\u005fp2":"%s","_t":1325376001}\n' % (VICTIM.encode(),
                                                                   VICTIM_ALIAS.encode())]
    third = len(lines) // 3
    paths[0].write_bytes(b"".join(head + lines[:third] + alias + lines[third:]))


class Watch:
    """What a running import has done, read from its database (and its Redis cursor)."""

    def __init__(self, database: Database, root: Path, redis_prefix: str | None = None) -> None:
        from .conftest import MYSQL, connect

        self.database, self.redis_prefix = database, redis_prefix
        self.sizes = {int(p.stem): p.stat().st_size for p in (root / "revisions").iterdir()}
        self.admin = connect(f"{MYSQL}/mysql")

    def close(self) -> None:
        self.admin.close()

    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.admin.cursor() as cur:
            cur.execute(query, args)
            return list(cur.fetchall())

    def has_schema(self) -> bool:
        return bool(self.sql("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                             "AND TABLE_NAME = 'kmdb_runs'", (self.database.name,)))

    def running(self, prefix: str) -> list[int]:
        """Connections of the import running a statement that starts with ``prefix``."""
        rows = self.sql("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND "
                        "INFO LIKE %s", (self.database.name, prefix + "%"))
        return [row[0] for row in rows]

    def lock_held(self) -> bool:
        name = f"kmdb-async import {self.database.name}"
        return self.sql("SELECT IS_USED_LOCK(%s)", (name,))[0][0] is not None

    def events(self) -> int:
        if not self.has_schema():
            return 0
        return int(self.sql(f"SELECT COUNT(*) FROM `{self.database.name}`.events")[0][0])

    def cursor(self) -> dict[int, int]:
        if self.redis_prefix is not None:
            flat = subprocess.run(["redis-cli", "-u", REDIS, "HGETALL", f"{self.redis_prefix}:cursor"],
                                  capture_output=True, text=True, timeout=10).stdout.split()
            return {int(k): int(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
        if not self.has_schema():
            return {}
        rows = self.sql(f"SELECT revision, `offset` FROM `{self.database.name}`.kmdb_revisions")
        return {int(r): int(o) for r, o in rows}

    def committed_past_cursor(self) -> bool:
        """Some committed event lies at or past its revision's saved cursor."""
        if not self.has_schema():
            return False
        ends = self.sql(f"SELECT id >> 40, MAX(id & {OFFSET_MASK}) FROM "
                        f"`{self.database.name}`.events GROUP BY 1")
        cursor = self.cursor()
        return any(end >= cursor.get(int(rev), 0) for rev, end in ends)

    def mid_revision(self) -> bool:
        return any(0 < offset < self.sizes[rev] for rev, offset in self.cursor().items())


def kill_at(point: str, watch: Watch, command: list[str], env: dict[str, str], cwd: Path,
            delay: float = 0.0, timeout: float = 60.0) -> str:
    """Start an import, SIGKILL it at ``point`` (looked for after ``delay`` seconds).

    Returns "confirmed" (the state after the kill shows the point), "reached" (seen just
    before the kill), or "missed" (the import ended first).
    """
    database = watch.database
    predicates = {
        "before-first-commit": lambda: watch.lock_held() and watch.events() == 0,
        "mid-batch": lambda: bool(watch.running("INSERT INTO `events`")
                                  or watch.running("INSERT INTO `properties`")),
        "after-commit-before-cursor": watch.committed_past_cursor,
        "mid-revision": watch.mid_revision,
        "re-pointing": lambda: bool(watch.running("UPDATE `events` SET `user_id`")),
        "mid-load": lambda: bool(watch.running("LOAD DATA LOCAL INFILE")),
    }
    confirms = {
        "before-first-commit": lambda: watch.events() == 0,
        "mid-load": lambda: watch.events() == 0 and not watch.cursor(),
        "after-commit-before-cursor": watch.committed_past_cursor,
        "mid-revision": watch.mid_revision,
        "re-pointing": lambda: not database.query(
            "SELECT 1 FROM aliases WHERE name2 = %s", (VICTIM,)),
    }
    blocker = None
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        time.sleep(delay)
        deadline = time.monotonic() + timeout
        if point == "re-pointing":
            # Hold the victim's rows so the re-pointing UPDATE waits on them, in plain sight.
            blocker = _hold_victim_rows(database, process, deadline)
        while process.poll() is None and time.monotonic() < deadline:
            if blocker is not None or point != "re-pointing":
                if predicates[point]():
                    process.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.005)
        process.wait(timeout=30)
        if process.returncode != -signal.SIGKILL:
            return "missed"
        confirm = confirms.get(point)
        if blocker is not None:
            blocker.rollback()
        return "confirmed" if confirm is not None and confirm() else "reached"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if blocker is not None:
            blocker.close()
        database.close()


def _hold_victim_rows(database: Database, process: subprocess.Popen[bytes],
                      deadline: float) -> Any:
    """Once the victim's events are committed (and not yet re-pointed), lock them in a
    READ COMMITTED transaction (record locks only: other inserts go on). None if too late."""
    from .conftest import MYSQL, connect

    conn = connect(f"{MYSQL}/mysql")  # the import's database may not exist yet
    db = database.name
    query = (f"SELECT e.id FROM `{db}`.events e JOIN `{db}`.users u ON u.id = e.origin_user_id "
             "WHERE u.name = %s AND e.user_id = e.origin_user_id")
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                conn.begin()
                if cur.execute(query + " FOR UPDATE", (VICTIM,)) == VICTIM_EVENTS:
                    return conn
                conn.rollback()
        except Exception:  # the schema may not exist yet
            conn.rollback()
        time.sleep(0.005)
    conn.close()
    return None


def crash_env(database: Database, redis_prefix: str | None, bulk: bool = False) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": database.url, "KMDB_BATCH_SIZE": "20",
           "KMDB_WRITERS": "3", "KMDB_FILES_IN_FLIGHT": "3", "KMDB_BULK_LOAD": str(bulk).lower()}
    for name in ("KMDB_REDIS_URL", "KMDB_REDIS_PREFIX"):
        env.pop(name, None)
    if redis_prefix is not None:
        env.update(KMDB_REDIS_URL=REDIS, KMDB_REDIS_PREFIX=redis_prefix)
    return env


@pytest.mark.parametrize("cursor,load", [("database", "rows"), ("redis", "rows"),
                                         ("database", "bulk"), ("redis", "bulk")])
def test_sigkill_at_each_named_point_then_rerun_gives_the_clean_rows(
        database: Database, tmp_path: Path, redis_prefix: str, cursor: str, load: str) -> None:
    root = tmp_path / "export"
    write_crash_export(root, 12000, revisions=5, seed=17)
    watch = Watch(database, root, redis_prefix if cursor == "redis" else None)
    env = crash_env(database, watch.redis_prefix, bulk=load == "bulk")
    command = [sys.executable, "-m", "kmdb_async", "import", str(root)]
    points = BULK_POINTS if load == "bulk" else POINTS
    try:
        outcomes = {point: kill_at(point, watch, command, env, tmp_path) for point in points}
    finally:
        watch.close()
    assert "missed" not in outcomes.values(), outcomes
    assert outcomes["before-first-commit"] == "confirmed"
    assert outcomes["re-pointing"] == "confirmed"
    assert outcomes.get("mid-load", "confirmed") == "confirmed"

    final = subprocess.run(command, env=rerun_env(env), cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    database.close()
    assert database.dump() == reference.expected(root)


def wait_for_lock(database: Database, lock: str, lost: int, process: subprocess.Popen[str],
                  timeout: float = 60.0) -> int | None:
    """The connection holding ``lock`` once one other than ``lost`` does (None if the process
    ended or time ran out first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        [(holder,)] = database.query("SELECT IS_USED_LOCK(%s)", (lock,))
        if holder is not None and holder != lost:
            return int(holder)
        time.sleep(0.02)
    return None


def test_a_lost_import_lock_is_taken_back_so_a_second_import_still_refuses(
        database: Database, tmp_path: Path) -> None:
    from .conftest import connect

    root = tmp_path / "export"
    write_export(root, 12000, revisions=4, seed=21)
    env = {**os.environ, "DATABASE_URL": database.url, "KMDB_BATCH_SIZE": "20", "KMDB_WRITERS": "2",
           "KMDB_BULK_LOAD": "false"}
    command = [sys.executable, "-m", "kmdb_async", "import", str(root)]
    first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    cursor_rows = None
    try:
        wait_for_rows(database, 300, first)
        lock = f"kmdb-async import {database.name}"
        [(holder,)] = database.query("SELECT IS_USED_LOCK(%s)", (lock,))
        database.query(f"KILL CONNECTION {int(holder)}")  # the lock dies with its connection
        # Taken back on a new connection (at the import's next commit).
        again = wait_for_lock(database, lock, holder, first)
        # Then the import is held, not raced: its next save of the cursor waits on these rows
        # (a statement the server still runs), so it is running while the second import starts.
        cursor_rows = connect(database.url)
        cursor_rows.begin()
        with cursor_rows.cursor() as cur:
            cur.execute("SELECT revision FROM kmdb_revisions FOR UPDATE")
        assert again is not None and again != holder, "the lost lock was not taken back"
        assert first.poll() is None, "the import ended before the test could check the lock"
        second = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 1 and "another kmdb-async import is running" in second.stderr
        assert first.poll() is None
        cursor_rows.rollback()  # the import goes on, and to its end
        _, stderr = first.communicate(timeout=300)
        assert first.returncode == 0, stderr
    finally:
        if cursor_rows is not None:
            cursor_rows.close()
        if first.poll() is None:
            first.kill()
            first.communicate()
    database.close()
    assert database.dump() == reference.expected(root)
