"""`kmdb-async status`: the pure verdict, then a real export on moto's S3, Redis and MariaDB."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from kmdb_async.pipeline import run_import
from kmdb_async.sources import Revision
from kmdb_async.state import open_cursor
from kmdb_async.status import (
    EXIT_INCONSISTENT,
    EXIT_PENDING,
    EXIT_UP_TO_DATE,
    Facts,
    assess,
    ranges,
    read_status,
    render,
)
from kmdb_async.store import open_store

from .conftest import REDIS, Database, database_exists, settings_for
from .test_cli import cli
from .test_import import REV1, REV3, body, export_files

ROWS = {"events": 5, "properties": 7, "users": 3, "aliases": 1, "keys": 4}


def facts(positions: dict[int, int], **changes: Any) -> Facts:
    base = Facts(database="db", source="src", cursor_kind="redis",
                 revisions=[Revision(1, 100), Revision(2, 50), Revision(3, 80)],
                 min_revision=1, positions=positions, tables=ROWS)
    return replace(base, **changes)


def test_ranges() -> None:
    assert ranges([7, 1, 2, 3, 9, 10]) == "1-3, 7, 9-10"
    assert ranges([]) == ""


def test_everything_imported_is_up_to_date() -> None:
    report = assess(facts({1: 100, 2: 50, 3: 80}))
    assert (report["verdict"], report["exit_code"]) == ("up to date", EXIT_UP_TO_DATE)
    assert report["revisions"] == {"count": 3, "highest": 3, "below_min_revision": 0,
                                        "imported": 3, "in_progress": [], "pending": [],
                                        "pending_bytes": 0, "held_back": None}
    assert report["cursor"]["agrees"] is True


def test_work_left_is_pending_with_offsets() -> None:
    report = assess(facts({1: 100, 3: 30}))
    assert (report["verdict"], report["exit_code"]) == ("pending", EXIT_PENDING)
    revs = report["revisions"]
    assert revs["in_progress"] == [{"revision": 3, "offset": 30, "size": 80}]
    assert revs["pending"] == [2] and revs["pending_bytes"] == 50 + 50 and revs["imported"] == 1
    below = assess(facts({1: 100, 3: 80}, min_revision=3))  # revisions below the min are skipped
    assert below["verdict"] == "up to date" and below["revisions"]["below_min_revision"] == 2


def test_a_held_back_last_line_is_shown_and_is_not_pending() -> None:
    held = {"revision": 3, "offset": 30, "bytes": 50}
    report = assess(facts({1: 100, 2: 50, 3: 30}, held_back=held))
    assert (report["verdict"], report["exit_code"]) == ("up to date", EXIT_UP_TO_DATE)
    assert report["revisions"] | {"held_back": None} == assess(facts({1: 100, 2: 50, 3: 80}))[
        "revisions"] | {"imported": 2}
    assert report["revisions"]["held_back"] == held
    assert ("held back: revision 3 ends in an unfinished line (50 bytes from byte 30, no "
            "newline, not JSON yet)") in render(report)
    other = assess(facts({1: 100, 3: 30}, held_back=held))  # revision 2 is still to read
    assert other["verdict"] == "pending" and other["revisions"]["pending_bytes"] == 50


def test_rows_past_the_cursor_are_reported_as_harmless() -> None:
    report = assess(facts({1: 100, 2: 50, 3: 30}, rows_past={3: 70}))
    assert report["verdict"] == "pending"
    assert report["cursor"] == {"kind": "redis", "agrees": False, "problems": [],
                                "behind": [{"revision": 3, "cursor": 30, "rows_up_to": 70}]}
    assert "the next import reads them again, without duplicates" in render(report)


def test_a_cursor_the_database_or_source_contradicts_is_inconsistent() -> None:
    past_end = assess(facts({1: 100, 2: 60, 3: 80}))
    assert (past_end["verdict"], past_end["exit_code"]) == ("inconsistent", EXIT_INCONSISTENT)
    assert "revision 2: the cursor is at byte 60 but revisions/2.json has 50" in \
        past_end["cursor"]["problems"][0]
    unknown = assess(facts({1: 100, 2: 50, 3: 80, 4: 10, 5: 3}))
    assert unknown["cursor"]["problems"] == [
        "the cursor names revisions the source does not list: 4-5"]
    emptied = assess(facts({1: 100, 2: 50, 3: 80}, tables=dict.fromkeys(ROWS, 0)))
    assert emptied["verdict"] == "inconsistent"
    assert "holds no imported row" in emptied["cursor"]["problems"][0]
    no_schema = assess(facts({1: 100}, tables=None))
    assert no_schema["verdict"] == "inconsistent"
    fresh = assess(facts({}, tables=None))
    assert fresh["verdict"] == "pending" and fresh["revisions"]["pending"] == [1, 2, 3]


def status_cli(settings: Any, *args: str) -> Any:
    env = {"DATABASE_URL": settings.database_url, "KMDB_SOURCE": settings.source,
           "AWS_ENDPOINT_URL": settings.s3_endpoint_url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "KMDB_REDIS_URL": REDIS,
           "KMDB_REDIS_PREFIX": settings.redis_prefix}
    return cli("status", *args, **env)


async def test_status_follows_an_s3_import_with_a_redis_cursor(
        database: Database, s3_bucket: Any, redis_prefix: str, tmp_path: Path) -> None:
    files = export_files()
    s3_bucket.put("pre/revisions/1.json", files["revisions/1.json"])
    s3_bucket.put("pre/revisions/3.json", body(REV3[:7]))  # revision 2 comes later
    settings = settings_for(database, f"{s3_bucket.url}/pre", s3_endpoint_url=s3_bucket.endpoint_url,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            redis_url=REDIS, redis_prefix=redis_prefix, rejects=tmp_path / "r")

    missing = status_cli(settings)  # nothing imported: the database is not even created
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert not database_exists(database.name)

    await run_import(settings)
    s3_bucket.put("pre/revisions/2.json", files["revisions/2.json"])
    s3_bucket.put("pre/revisions/3.json", files["revisions/3.json"])
    before = database.dump(), await _cursor(settings)
    report = await read_status(settings)
    assert before == (database.dump(), await _cursor(settings))  # status changed nothing
    assert report["verdict"] == "pending"
    assert report["revisions"] == {
        "count": 3, "highest": 3, "below_min_revision": 0, "imported": 1,
        "in_progress": [{"revision": 3, "offset": len(body(REV3[:7])),
                         "size": len(files["revisions/3.json"])}],
        "pending": [2],
        "pending_bytes": len(files["revisions/2.json"]) + len(files["revisions/3.json"])
        - len(body(REV3[:7])), "held_back": None}
    assert report["last_run"] | {"started_at": 0, "finished_at": 0, "duration": 0} == {
        "started_at": 0, "finished_at": 0, "status": "ok", "lines": len(REV1) + 7,
        "rejects": 1, "duration": 0, "giant_groups": {}}
    assert report["tables"]["events"] == database.query("SELECT COUNT(*) FROM events")[0][0] > 0
    assert report["events"] == {"first": "1970-01-01 00:16:40", "last": "1970-01-01 00:50:00"}
    assert report["cursor"] == {"kind": "redis", "agrees": True, "problems": [], "behind": []}
    pending = status_cli(settings, "--json")
    assert pending.returncode == EXIT_PENDING, pending.stderr
    assert json.loads(pending.stdout) == report | {"last_run": json.loads(pending.stdout)["last_run"]}

    await run_import(settings)
    done = status_cli(settings)
    assert done.returncode == EXIT_UP_TO_DATE, done.stdout + done.stderr
    assert "imported: 3 revisions fully" in done.stdout
    assert "cursor (redis): agrees with the database" in done.stdout

    cursor = open_cursor(settings, open_store(settings))  # Redis lost: harmless, more reading
    await cursor.clear()
    await cursor.close()
    lost = await read_status(settings)
    assert lost["verdict"] == "pending" and lost["revisions"]["pending"] == [1, 2, 3]
    assert [b["revision"] for b in lost["cursor"]["behind"]] == [1, 2, 3]
    assert lost["cursor"]["problems"] == []
    await run_import(settings)
    assert (await read_status(settings))["verdict"] == "up to date"

    for table in ("events", "properties", "users", "aliases"):  # emptied behind the cursor's back
        database.query(f"TRUNCATE TABLE `{table}`")
    broken = status_cli(settings)
    assert broken.returncode == EXIT_INCONSISTENT
    assert "holds no imported row" in broken.stdout and "status: inconsistent" in broken.stdout


async def _cursor(settings: Any) -> dict[int, int]:
    cursor = open_cursor(settings, open_store(settings))
    try:
        return await cursor.load()
    finally:
        await cursor.close()
