"""`kmdb-async partition`: the pure plan, then real MariaDB tables before and after."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from kmdb_async.errors import TerminalError
from kmdb_async.pipeline import run_import
from kmdb_async.store.partitions import (
    MAX_PARTITIONS,
    Layout,
    advice,
    check_limit,
    events_per_partition,
    grid,
    parse_date,
    partition_tables,
    plan_table,
    read_layout,
)

from . import reference
from .conftest import REDIS, Database, settings_for
from .exportgen import write_export
from .test_cli import cli

D = date.fromisoformat
TABLES = ("events", "properties", "aliases")

# -- the pure plan -------------------------------------------------------------------------


def test_grid_steps_until_a_bound_reaches_the_max() -> None:
    assert grid(D("2020-01-01"), D("2020-01-15"), 7) == [D("2020-01-08"), D("2020-01-15")]
    assert grid(D("2020-01-01"), D("2020-01-16"), 7) == [D("2020-01-08"), D("2020-01-15"),
                                                          D("2020-01-22")]
    assert grid(D("2020-01-22"), D("2020-01-15"), 7) == []


def test_a_new_layout_starts_at_the_min_date_and_changes_the_keys() -> None:
    plan = plan_table("aliases", None, D("2020-01-01"), D("2020-01-15"), 7)
    assert plan.bounds == (D("2020-01-08"), D("2020-01-15")) and plan.total == 3
    sql = plan.sql()
    assert sql is not None
    assert sql.startswith("ALTER TABLE `aliases` DROP PRIMARY KEY, ADD PRIMARY KEY (`id`, `t`)")
    assert "PARTITION BY RANGE COLUMNS(`t`)" in sql
    assert ("(PARTITION `p20200101` VALUES LESS THAN ('2020-01-08'), PARTITION `p20200108` "
            "VALUES LESS THAN ('2020-01-15'), PARTITION `pmax` VALUES LESS THAN (MAXVALUE))") in sql


def test_an_existing_layout_grows_from_its_last_bound_and_ignores_the_min_date() -> None:
    before = Layout((D("2020-01-08"), D("2020-01-15")), "pmax")
    plan = plan_table("events", before, D("2019-01-01"), D("2020-01-29"), 7)
    assert plan.added == (D("2020-01-22"), D("2020-01-29")) and plan.total == 5
    assert plan.sql() == (
        "ALTER TABLE `events` REORGANIZE PARTITION `pmax` INTO (PARTITION `p20200115` VALUES "
        "LESS THAN ('2020-01-22'), PARTITION `p20200122` VALUES LESS THAN ('2020-01-29'), "
        "PARTITION `pmax` VALUES LESS THAN (MAXVALUE))")
    same = plan_table("events", before, D("2020-01-01"), D("2020-01-15"), 7)
    assert same.added == () and same.sql() is None  # the same arguments change nothing
    no_catch_all = plan_table("events", Layout(before.bounds, None), None, D("2020-01-15"), 7)
    assert no_catch_all.sql() == ("ALTER TABLE `events` ADD PARTITION "
                                  "(PARTITION `pmax` VALUES LESS THAN (MAXVALUE))")


def test_read_layout_from_information_schema_rows() -> None:
    assert read_layout("events", [(None, None, None, None)]) is None
    assert read_layout("events", []) is None
    rows = [("p1", "RANGE COLUMNS", "`t`", "'2020-01-08'"),
            ("p2", "RANGE COLUMNS", "`t`", "'2020-01-15 00:00:00'"),
            ("rest", "RANGE COLUMNS", "`t`", "MAXVALUE")]
    assert read_layout("events", rows) == Layout((D("2020-01-08"), D("2020-01-15")), "rest")
    with pytest.raises(TerminalError, match="HASH"):
        read_layout("events", [("p0", "HASH", "`id`", None)])
    with pytest.raises(TerminalError, match="midnight"):
        read_layout("events", [("p0", "RANGE COLUMNS", "`t`", "'2020-01-08 12:00:00'")])


def test_bad_dates_and_missing_min_date_are_refused_clearly() -> None:
    with pytest.raises(TerminalError, match="KMDB_MAX_DATE must be a date YYYY-MM-DD"):
        parse_date("01/02/2020", "KMDB_MAX_DATE")
    with pytest.raises(TerminalError, match="KMDB_MIN_DATE .* is required"):
        plan_table("events", None, None, D("2020-01-01"), 7)
    with pytest.raises(TerminalError, match="must be after"):
        plan_table("events", None, D("2020-01-01"), D("2020-01-01"), 7)


def test_the_server_limit_is_checked_on_the_plan() -> None:
    ok = plan_table("events", None, D("2000-01-01"),
                    D("2000-01-01") + timedelta(days=MAX_PARTITIONS - 1), 1)
    assert ok.total == MAX_PARTITIONS
    check_limit([ok])
    over = plan_table("events", None, D("2000-01-01"), D("2030-01-01"), 1)
    with pytest.raises(TerminalError, match=f"{over.total:,} partitions.*limit of 8,192"):
        check_limit([over])


def test_events_per_partition_and_the_advice() -> None:
    bounds = [D("2020-01-08"), D("2020-01-15")]
    days = {D("2019-05-01"): 5, D("2020-01-07"): 1, D("2020-01-08"): 2, D("2021-01-01"): 3}
    assert events_per_partition(bounds, days) == [6, 2, 3]
    assert "11 events in 3 of 3 partitions, at most 6" in advice(bounds, days)
    assert "no events yet" in advice(bounds, {})
    assert "km-db advises under about 1,000,000" in advice(bounds, {D("2020-01-09"): 1_000_001})
    assert "km-db advises" not in advice(bounds, days)


# -- real tables ---------------------------------------------------------------------------

MIN, MAX, DAYS = "2011-12-01", "2012-01-03", 2  # the generated export spans Dec 2011


def layout(database: Database, table: str) -> list[tuple[Any, ...]]:
    return database.query(
        "SELECT PARTITION_NAME, PARTITION_DESCRIPTION FROM information_schema.PARTITIONS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY PARTITION_ORDINAL_POSITION",
        (database.name, table))


def counts(database: Database) -> dict[str, int]:
    return {t: database.query(f"SELECT COUNT(*) FROM `{t}`")[0][0]
            for t in ("events", "properties", "aliases", "users")}


async def partition(database: Database, **dates: Any) -> list[str]:
    said: list[str] = []
    settings = settings_for(database, **{"min_date": MIN, "max_date": MAX,
                                         "days_per_partition": DAYS, **dates})
    await partition_tables(settings, said.append)
    return said


async def test_partitioning_full_tables_keeps_every_row_and_reimport_adds_none(
        database: Database, tmp_path: Path, redis_prefix: str) -> None:
    root = tmp_path / "export"
    write_export(root, 3000, revisions=3, seed=2)
    settings = settings_for(database, str(root), redis_url=REDIS, redis_prefix=redis_prefix,
                            rejects=tmp_path / "r.jsonl")
    await run_import(settings)
    before, rows = database.dump(), counts(database)
    assert before == reference.expected(root) and rows["events"] > 1000

    said = await partition(database)
    assert any("events per partition with the current data" in line for line in said)
    for table in TABLES:
        parts = layout(database, table)
        assert len(parts) == 17 + 1 and parts[0] == ("p20111201", "'2011-12-03'")
        assert parts[-1] == ("pmax", "MAXVALUE")
    assert counts(database) == rows and database.dump() == before

    # Lose the Redis cursor: the next import reads everything again into partitioned tables.
    from kmdb_async.state import open_cursor
    from kmdb_async.store import open_store

    cursor = open_cursor(settings, open_store(settings))
    await cursor.clear()
    await cursor.close()
    again = await run_import(settings)
    assert again.lines > 2900
    assert counts(database) == rows and database.dump() == before

    # The same arguments change nothing; a later max date adds partitions and keeps rows.
    create = {t: database.query(f"SHOW CREATE TABLE `{t}`")[0][1] for t in TABLES}
    said = await partition(database)
    assert {t: database.query(f"SHOW CREATE TABLE `{t}`")[0][1] for t in TABLES} == create
    assert "events: unchanged (18 partitions up to 2012-01-04 plus pmax)" in said
    said = await partition(database, min_date="2000-01-01", max_date="2012-01-10")
    assert any("KMDB_MIN_DATE is ignored" in line for line in said)
    for table in TABLES:
        parts = layout(database, table)
        assert parts[0] == ("p20111201", "'2011-12-03'")  # the min date did not move
        assert parts[-2] == ("p20120108", "'2012-01-10'")
        assert parts[-1] == ("pmax", "MAXVALUE") and len(parts) == 21
    assert counts(database) == rows and database.dump() == before


@pytest.mark.parametrize("slice_mib", [1024, 0.1], ids=["one-load", "sliced"])
async def test_import_into_partitioned_tables_matches_the_model(
        database: Database, tmp_path: Path, slice_mib: float) -> None:
    """Alias pairs stay unique with their earliest t though the table has no unique pair key,
    with concurrent writers; a first import in slices drops and builds the indexes of the
    partitioned tables."""
    await partition(database)
    assert database.query(
        "SELECT NON_UNIQUE FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND "
        "TABLE_NAME = 'aliases' AND INDEX_NAME = 'index_aliases_on_name1_and_name2' LIMIT 1",
        (database.name,)) == [(1,)]
    root = tmp_path / "export"
    write_export(root, 4000, revisions=5, seed=7)
    settings = settings_for(database, str(root), batch_size=25, writers=4, files_in_flight=3,
                            slice_mib=slice_mib, rejects=tmp_path / "r.jsonl")
    await run_import(settings)
    assert database.query(
        "SELECT COUNT(DISTINCT INDEX_NAME) FROM information_schema.STATISTICS WHERE "
        "TABLE_SCHEMA = %s AND TABLE_NAME IN ('events', 'properties')", (database.name,)) == [(7,)]
    want = reference.expected(root)
    assert database.dump() == want
    # Alias pairs seen again with an earlier t moved back across partitions: run again from
    # scratch into the same tables and nothing changes.
    database.query("DELETE FROM kmdb_revisions")
    await run_import(replace(settings, writers=2))
    assert database.dump() == want


async def test_over_the_limit_nothing_changes(database: Database) -> None:
    with pytest.raises(TerminalError, match="over the server's limit of 8,192.*nothing was changed"):
        await partition(database, min_date="1990-01-01", max_date="2030-01-01", days_per_partition=1)
    for table in TABLES:
        assert layout(database, table) == [(None, None)]


async def test_a_time_range_query_reads_only_its_partitions(
        database: Database, tmp_path: Path) -> None:
    await partition(database)
    root = tmp_path / "export"
    write_export(root, 500, revisions=1, seed=4)
    await run_import(settings_for(database, str(root), rejects=tmp_path / "r.jsonl"))
    [(plan,)] = database.query(
        "EXPLAIN FORMAT=JSON SELECT COUNT(*) FROM events "
        "WHERE t >= '2011-12-10 00:00:00' AND t < '2011-12-12 00:00:00'")
    assert _partitions(json.loads(plan)) == ["p20111209", "p20111211"]


def _partitions(node: Any) -> list[str] | None:
    if isinstance(node, dict):
        if "partitions" in node:
            return list(node["partitions"])
        node = list(node.values())
    if isinstance(node, list):
        for item in node:
            found = _partitions(item)
            if found is not None:
                return found
    return None


def test_the_command_partitions_and_refuses_clearly(database: Database, make_database: Any,
                                                    tmp_path: Path) -> None:
    done = cli("partition", "--min-date", MIN, "--max-date", MAX, cwd=tmp_path,
               DATABASE_URL=database.url, KMDB_DAYS_PER_PARTITION="7")
    assert done.returncode == 0, done.stderr
    assert "events: 6 partitions up to 2012-01-05 plus pmax" in done.stdout
    assert len(layout(database, "events")) == 6

    refused = cli("partition", "--max-date", "2012-01-05", cwd=tmp_path,
                  DATABASE_URL=make_database().url)
    assert refused.returncode == 1
    assert "kmdb-async: error: table `events` is not partitioned yet: KMDB_MIN_DATE" in refused.stderr

    embedded = cli("partition", "--min-date", MIN, "--max-date", MAX, cwd=tmp_path,
                   DATABASE_URL=make_database("sqlite").url)
    assert embedded.returncode == 1 and "MariaDB/MySQL" in embedded.stderr
