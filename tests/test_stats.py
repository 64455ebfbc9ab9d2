"""`kmdb-async stats` on the small export of tests/test_query.py: exact figures."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from kmdb_async import stats as stats_module
from kmdb_async.settings import DatabaseURL, Settings
from kmdb_async.stats import LastRun, Ranked, read_stats

from .conftest import Database, connect
from .test_cli import cli
from .test_import import prepare
from .test_query import import_embedded, import_sample

SAMPLE_COUNTS = {"events": 9, "properties": 9, "users": 7, "aliases": 3, "keys": 4}
SAMPLE_TOP_EVENTS = [Ranked("visited site", 7), Ranked("signed up", 2)]
# Ties (101 and anon-2 have 3 events each) are ordered by name.
SAMPLE_TOP_USERS = [Ranked("101", 3), Ranked("anon-2", 3), Ranked("anon-3", 2), Ranked("anon-4", 1)]


def test_stats_of_an_imported_export(database: Database, tmp_path: Path) -> None:
    import_sample(database, tmp_path / "export")
    stats = asyncio.run(read_stats(Settings(database_url=database.url)))
    assert stats.counts == SAMPLE_COUNTS
    assert stats.users_with_events == 4  # canonical users: 101, anon-2, anon-3, anon-4
    assert (stats.first_event, stats.last_event) == ("2011-12-31 23:59:59", "2012-02-01 00:00:00")
    assert stats.top_events == SAMPLE_TOP_EVENTS
    assert stats.top_users == SAMPLE_TOP_USERS
    run = stats.last_import
    assert run is not None and (run.status, run.lines, run.rejects) == ("ok", 14, 1)
    assert stats.last_check == run.finished_at
    assert run.reject_share == 1 / 14
    assert stats.database == str(DatabaseURL.parse(database.url))

    top1 = asyncio.run(read_stats(Settings(database_url=database.url), top=1))
    assert (top1.top_events, top1.top_users) == (SAMPLE_TOP_EVENTS[:1], SAMPLE_TOP_USERS[:1])


def test_stats_of_the_embedded_database(tmp_path: Path) -> None:
    url = import_embedded(tmp_path)  # skipped while the embedded store is not there
    stats = asyncio.run(read_stats(Settings(database_url=url)))
    assert (stats.counts, stats.users_with_events) == (SAMPLE_COUNTS, 4)
    assert (stats.first_event, stats.last_event) == ("2011-12-31 23:59:59", "2012-02-01 00:00:00")
    assert (stats.top_events, stats.top_users) == (SAMPLE_TOP_EVENTS, SAMPLE_TOP_USERS)
    assert stats.last_import is not None
    assert (stats.last_import.lines, stats.last_import.rejects) == (14, 1)
    assert stats.database == url


def test_stats_shows_the_last_import_past_runs_that_found_nothing_new(
        database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_module, "RUNS_PAGE", 2)  # the look back spans pages
    import_sample(database, tmp_path / "export")
    imported = database.query("SELECT CAST(finished_at AS CHAR) FROM kmdb_runs")[0][0]
    for _ in range(4):
        import_sample(database, tmp_path / "export")  # nothing new: 0 lines read
    database.query("UPDATE kmdb_runs SET finished_at = '2030-01-02 03:04:05' "
                   "WHERE id = (SELECT MAX(id) FROM (SELECT id FROM kmdb_runs) r)")
    stats = asyncio.run(read_stats(Settings(database_url=database.url)))
    assert stats.counts == SAMPLE_COUNTS
    run = stats.last_import
    assert run is not None and (run.lines, run.rejects, run.finished_at) == (14, 1, imported)
    assert stats.last_check == "2030-01-02 03:04:05"
    text = stats.text().splitlines()
    assert text[7].startswith("last import ") and text[7].endswith(" ok: 14 lines, 1 rejected (7.14%)")
    assert text[8] == "last check  2030-01-02 03:04:05 (UTC, the latest run)"
    assert len(database.query("SELECT id FROM kmdb_runs")) == 5


def test_stats_of_an_empty_database(database: Database) -> None:
    asyncio.run(prepare(database, {}))
    stats = asyncio.run(read_stats(Settings(database_url=database.url)))
    assert stats.counts == dict.fromkeys(SAMPLE_COUNTS, 0)
    assert (stats.users_with_events, stats.first_event, stats.last_event) == (0, None, None)
    assert (stats.top_events, stats.top_users, stats.last_import, stats.last_check) == (
        [], [], None, None)
    assert "time range  (no events)" in stats.text() and "last import (none recorded)" in stats.text()


def test_reject_share_of_a_run() -> None:
    assert LastRun("a", "b", "ok", lines=8, rejects=2).reject_share == 0.25
    assert LastRun("a", "b", "ok", lines=0, rejects=0).reject_share == 0.0


def test_stats_command_text_and_json_without_the_password(
        private_database: Database, tmp_path: Path) -> None:
    database = private_database  # a user is created: on the session's private server
    import_sample(database, tmp_path / "export")
    user, password = f"kmdb_stats_{uuid.uuid4().hex[:8]}", f"S3cret-{uuid.uuid4().hex[:8]}"
    admin = connect(database.url)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
            cur.execute(f"GRANT ALL ON `{database.name}`.* TO '{user}'@'%'")
        url = database.url.replace("root@", f"{user}:{password}@")

        text = cli("stats", DATABASE_URL=url)
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        assert lines[0] == f"database    {DatabaseURL.parse(url)}"  # no password
        assert lines[0].startswith(f"database    mysql://{user}@")
        assert lines[1:7] == [
            "events      9", "properties  9", "users       7 identities, 4 with events",
            "aliases     3", "keys        4",
            "time range  2011-12-31 23:59:59 .. 2012-02-01 00:00:00 (UTC)"]
        assert lines[7].startswith("last import ")
        assert lines[7].endswith(" ok: 14 lines, 1 rejected (7.14%)")
        assert lines[8].startswith("last check  ")
        assert lines[9:] == [
            "", "top events",
            "  visited site           7",
            "  signed up              2",
            "", "top users by events",
            "  101              3",
            "  anon-2           3",
            "  anon-3           2",
            "  anon-4           1"]

        as_json = cli("stats", "--json", "--top", "2", "--database-url", url)
        assert as_json.returncode == 0, as_json.stderr
        data = json.loads(as_json.stdout)
        assert data["counts"] == SAMPLE_COUNTS and data["users_with_events"] == 4
        assert (data["first_event"], data["last_event"]) == (
            "2011-12-31 23:59:59", "2012-02-01 00:00:00")
        assert data["top_events"] == [{"name": "visited site", "events": 7},
                                      {"name": "signed up", "events": 2}]
        assert data["top_users"] == [{"name": "101", "events": 3}, {"name": "anon-2", "events": 3}]
        run = data["last_import"]
        assert data["last_check"] == run["finished_at"]
        assert (run["status"], run["lines"], run["rejects"]) == ("ok", 14, 1)
        assert run["reject_share"] == round(1 / 14, 6)
        for out in (text, as_json):
            assert password not in out.stdout + out.stderr
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()


def test_stats_command_fails_cleanly_on_a_missing_server(tmp_path: Path) -> None:
    done = cli("stats", DATABASE_URL="mysql://root:Hidden-pw@127.0.0.1:1/kmdb")
    assert done.returncode == 1
    assert done.stderr.startswith("kmdb-async: error: ") and "Hidden-pw" not in done.stderr
