"""The `kmdb-async` command as a user runs it: a real process, real services."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .conftest import REDIS, Database
from .exportgen import write_export
from .test_import import export_files, write_dir

SECRET_PASSWORD = "Pa55-w0rd-s3cr3t"
SECRET_KEY = "AKIA-SECRET-KEY-DO-NOT-PRINT"


def cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``kmdb-async`` with exactly the given KMDB/AWS/DATABASE variables."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("KMDB_", "AWS_", "DATABASE_URL"))}
    base.update(env)
    return subprocess.run([sys.executable, "-m", "kmdb_async", *args], env=base, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def counts(database: Database) -> dict[str, int]:
    return {t: database.query(f"SELECT COUNT(*) FROM `{t}`")[0][0]
            for t in ("events", "properties", "users", "aliases", "kmdb_revisions")}


def redis_keys(pattern: str) -> list[str]:
    out = subprocess.run(["redis-cli", "-u", REDIS, "--scan", "--pattern", pattern],
                         capture_output=True, text=True, check=True)
    return sorted(out.stdout.split())


def test_import_prints_a_summary_and_exits_zero_with_rejects(
        database: Database, tmp_path: Path) -> None:
    source = write_dir(tmp_path / "export", export_files())
    done = cli("import", source, cwd=tmp_path, DATABASE_URL=database.url)
    assert done.returncode == 0, done.stderr
    assert "imported 3 revisions: 27 lines" in done.stdout and "1 rejects" in done.stdout
    assert (tmp_path / "kmdb-rejects.jsonl").read_text().count("\n") == 1
    assert "Traceback" not in done.stderr


def test_flush_refuses_without_yes_and_empties_only_this_database(
        database: Database, make_database: Any, tmp_path: Path, redis_prefix: str) -> None:
    source = write_dir(tmp_path / "export", export_files())
    env = {"DATABASE_URL": database.url, "KMDB_REDIS_URL": REDIS, "KMDB_REDIS_PREFIX": redis_prefix}
    assert cli("import", "--source", source, cwd=tmp_path, **env).returncode == 0
    database.query("INSERT INTO ignored_users (name) VALUES ('kept')")
    other = f"{redis_prefix}-other"  # another database's keys on the same Redis
    subprocess.run(["redis-cli", "-u", REDIS, "HSET", f"{other}:cursor", "1", "5"], check=True,
                   capture_output=True)
    try:
        refused = cli("flush", **env)
        assert refused.returncode != 0 and "--yes" in refused.stderr
        assert counts(database)["events"] > 0 and redis_keys(f"{redis_prefix}:*")

        flushed = cli("flush", "--yes", **env)
        assert flushed.returncode == 0, flushed.stderr
        assert set(counts(database).values()) == {0}
        assert database.query("SELECT name FROM ignored_users") == [("kept",)]
        assert redis_keys(f"{redis_prefix}:*") == []
        assert redis_keys(f"{other}:*") == [f"{other}:cursor"]
    finally:
        subprocess.run(["redis-cli", "-u", REDIS, "DEL", f"{other}:cursor"], capture_output=True)

    fresh = make_database()  # flush creates the schema when it is missing
    assert cli("flush", "--yes", DATABASE_URL=fresh.url).returncode == 0
    assert counts(fresh)["events"] == 0


def test_errors_are_one_line_without_secrets(database: Database, tmp_path: Path) -> None:
    source = write_dir(tmp_path / "export", export_files())
    bad_password = database.url.replace("root@", f"root:{SECRET_PASSWORD}@")
    cases = [
        cli("import", source, DATABASE_URL=bad_password),
        cli("import", source, "--retry-attempts", "2",
            DATABASE_URL=f"mysql://root:{SECRET_PASSWORD}@127.0.0.1:1/db"),
        cli("import", str(tmp_path / "missing"), DATABASE_URL=database.url),
        cli("import", "s3://no-such-bucket-kmdb", "--retry-attempts", "1",
            "--s3-endpoint-url", "http://127.0.0.1:1", DATABASE_URL=database.url,
            AWS_ACCESS_KEY_ID=SECRET_KEY, AWS_SECRET_ACCESS_KEY=SECRET_PASSWORD),
    ]  # (values wrong in themselves are bad usage, exit 2: tests/test_usage.py)
    for done in cases:
        output = done.stdout + done.stderr
        assert done.returncode == 1, output
        assert "Traceback" not in output
        assert SECRET_PASSWORD not in output and SECRET_KEY not in output
        assert [line for line in done.stderr.splitlines() if line.startswith("kmdb-async: error:")]
    assert "access denied" in cases[0].stderr
    assert "127.0.0.1:1" in cases[1].stderr
    assert "missing" in cases[2].stderr


def test_a_second_import_on_the_same_database_refuses(database: Database, tmp_path: Path) -> None:
    root = tmp_path / "export"
    write_export(root, 30000, revisions=3, seed=5)
    env = {"DATABASE_URL": database.url, "KMDB_BATCH_SIZE": "20", "KMDB_WRITERS": "1",
           "KMDB_BULK_LOAD": "false"}  # rows commit as it goes: the test sees it running
    first = subprocess.Popen([sys.executable, "-m", "kmdb_async", "import", str(root)],
                             env={**os.environ, **env}, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from .test_crash import wait_for_rows

        wait_for_rows(database, 1, first)
        second = cli("import", str(root), cwd=tmp_path, **env)
        assert second.returncode == 1
        assert "another kmdb-async import is running" in second.stderr
    finally:
        first.kill()
        first.wait()


def test_without_database_url_commands_use_the_embedded_default(tmp_path: Path) -> None:
    source = write_dir(tmp_path / "export", export_files())
    done = cli("import", source, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "imported 3 revisions: 27 lines" in done.stdout
    embedded = tmp_path / "kmdb.sqlite3"
    with sqlite3.connect(embedded) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (18,)  # no filters here
    again = cli("import", source, cwd=tmp_path)
    assert "imported 0 revisions: 0 lines" in again.stdout
    assert not (tmp_path / "kmdb.sqlite3.lock").exists()  # removed as the import let go

    flushed = cli("flush", "--yes", cwd=tmp_path)
    assert flushed.returncode == 0 and "sqlite:///kmdb.sqlite3" in flushed.stdout
    with sqlite3.connect(embedded) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)


def test_two_imports_on_one_embedded_file_refuse(tmp_path: Path) -> None:
    root = tmp_path / "export"
    write_export(root, 30000, revisions=3, seed=5)
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'k.sqlite3'}", "KMDB_BATCH_SIZE": "20"}
    first = subprocess.Popen([sys.executable, "-m", "kmdb_async", "import", str(root)],
                             env={**os.environ, **env}, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "k.sqlite3.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        second = cli("import", str(root), cwd=tmp_path, **env)
        assert second.returncode == 1
        assert "another kmdb-async import is running" in second.stderr
        assert f"process {first.pid}" in second.stderr
    finally:
        first.kill()
        first.wait()
