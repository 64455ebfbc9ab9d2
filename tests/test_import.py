"""`kmdb-async import` end to end: MariaDB, Redis and moto's S3 server, all real."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kmdb_async.pipeline import run_import
from kmdb_async.resolver import Filters, row_id
from kmdb_async.settings import Settings
from kmdb_async.state import open_cursor
from kmdb_async.store import open_store

from . import reference
from .conftest import REDIS, Database, settings_for
from .exportgen import write_export

REV1 = [
    b'{"_n":"Signed Up","_p":"anon-a","_t":1000,"plan":"free","n":3}',
    b'{"_p":"anon-a","_t":1000,"color":"red","secret":"s"}',
    b"not json",
    b'{"_n":"visit","_p":"anon-b","_t":"1002.9","ref":null}',
    b'{"_n":"noise","_p":"anon-b","_t":1003}',
    b'{"_n":"visit","_p":"admin","_t":1004}',
    b'{"_p":"admin","_p2":"anon-a","_t":1005}',
]
REV2 = [
    b'{"_p":"anon-a","_p2":"bob@x.com","_t":2000}',
    b'{"_p":"bob@x.com","_p2":42,"_t":2001}',
    b'{"_p":"7","_p2":"8","_t":2002}',
    b'{"_n":"visit","_p":"anon-c","_t":2003,"nested":{"b":1,"a":"\xc3\xa9"}}',
    b'{"_p":"anon-c","_p2":"anon-b","_t":2004}',
    b"",
    b'{"_p":"anon-b","_p2":"anon-c","_t":1500}',
    b'{"_n":"Signed Up","_p":"caf\\303\\251","_t":2005}',
]
# A burst of one second larger than the batch size (5), then an alias re-pointing it.
REV3 = [b'{"_n":"visit","_p":"u1","_t":3000,"i":%d}' % i for i in range(12)] + [
    b'{"_p":"u1","_p2":"anon-a","_t":3001}'
]
FILTERS = {
    "whitelisted_events": ["Signed Up", "visit"],
    "blacklisted_properties": ["secret"],
    "ignored_users": ["admin"],
}


def body(lines: list[bytes], crlf: bool = False) -> bytes:
    return b"".join(line + (b"\r\n" if crlf else b"\n") for line in lines)


def ids(revision: int, lines: list[bytes], crlf: bool = False) -> list[int]:
    """Row id of each line of a revision file written by ``body``."""
    out, offset = [], 0
    for line in lines:
        out.append(row_id(revision, offset))
        offset += len(line) + (2 if crlf else 1)
    return out


def t(seconds: int) -> str:
    return {1000: "1970-01-01 00:16:40", 1002: "1970-01-01 00:16:42", 1500: "1970-01-01 00:25:00",
            2000: "1970-01-01 00:33:20", 2001: "1970-01-01 00:33:21", 2002: "1970-01-01 00:33:22",
            2003: "1970-01-01 00:33:23", 2005: "1970-01-01 00:33:25", 3000: "1970-01-01 00:50:00",
            3001: "1970-01-01 00:50:01"}[seconds]


def expected_rows() -> dict[str, list[tuple[Any, ...]]]:
    r1, r2, r3 = ids(1, REV1), ids(2, REV2, crlf=True), ids(3, REV3)
    events = [
        (r1[0], t(1000), "Signed Up", "42", "anon-a"),
        (r1[3], t(1002), "visit", "anon-b", "anon-b"),
        (r2[3], t(2003), "visit", "anon-b", "anon-c"),
        (r2[7], t(2005), "Signed Up", "café", "café"),
        *[(r3[i], t(3000), "visit", "42", "u1") for i in range(12)],
    ]
    properties = [
        (r1[0], t(1000), "42", r1[0], "plan", "free"),
        (r1[0] + 1, t(1000), "42", r1[0], "n", "3"),
        (r1[1], t(1000), "42", None, "color", "red"),
        (r1[3], t(1002), "anon-b", r1[3], "ref", None),
        (r2[3], t(2003), "anon-b", r2[3], "nested", '{"b":1,"a":"é"}'),
        *[(r3[i], t(3000), "42", r3[i], "i", str(i)) for i in range(12)],
    ]
    users = ["42", "7", "8", "anon-a", "anon-b", "anon-c", "bob@x.com", "café", "u1"]
    aliases = [
        ("42", "bob@x.com", t(2001)),
        ("7", "8", t(2002)),
        ("anon-a", "bob@x.com", t(2000)),
        ("anon-a", "u1", t(3001)),
        ("anon-b", "anon-c", t(1500)),
    ]
    return {"events": sorted(events), "properties": sorted(properties, key=repr),
            "users": sorted((u,) for u in users), "aliases": sorted(aliases)}


def write_dir(root: Path, files: dict[str, bytes]) -> str:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return str(root)


def export_files() -> dict[str, bytes]:
    return {
        "revisions/1.json": body(REV1),
        "revisions/2.json": body(REV2, crlf=True),
        "revisions/3.json": body(REV3)[:-1],  # the last line lacks its newline
        "index.csv": b"ignored\n",
        "hello.txt": b"ignored",
    }


async def prepare(database: Database, filters: dict[str, list[str]]) -> None:
    """Create the schema and fill the filter tables, as a user would before importing."""
    store = open_store(Settings(database_url=database.url))
    await store.open()
    try:
        await store.ensure_schema()
        for table, names in filters.items():
            for name in names:
                await store.execute(f"INSERT INTO `{table}` (`name`) VALUES (%s)", (name,))
    finally:
        await store.close()


@pytest.fixture(params=["mariadb", "sqlite"])
def database(make_database: Any, request: pytest.FixtureRequest) -> Database:
    """Every SPEC rule here is checked on MariaDB and on the embedded default alike."""
    return make_database(request.param)  # type: ignore[no-any-return]


@pytest.fixture(params=["directory", "s3"])
def source_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_source(source_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """Writes files into a fresh export of the parametrized kind; returns settings changes."""
    if source_kind == "directory":
        root = tmp_path / "export"

        def make_dir(files: dict[str, bytes]) -> dict[str, Any]:
            return {"source": write_dir(root, files)}

        return make_dir
    bucket = request.getfixturevalue("s3_bucket")

    def make_s3(files: dict[str, bytes]) -> dict[str, Any]:
        for name, data in files.items():
            bucket.put(f"some/prefix/{name}", data)
        return {"source": f"{bucket.url}/some/prefix", "s3_endpoint_url": bucket.endpoint_url,
                "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

    return make_s3


async def test_import_stores_exactly_the_rows_spec_asks_for(
        database: Database, make_source: Any, redis_prefix: str, tmp_path: Path) -> None:
    await prepare(database, FILTERS)
    rejects = tmp_path / "rejects.jsonl"
    settings = settings_for(database, redis_url=REDIS, redis_prefix=redis_prefix,
                            rejects=rejects, **make_source(export_files()))
    summary = await run_import(settings)

    assert database.dump() == expected_rows()
    keys = {k for (k,) in database.query("SELECT string FROM `keys`")}
    assert keys == {"Signed Up", "visit", "plan", "n", "color", "ref", "nested", "i"}
    assert (summary.revisions, summary.lines, summary.events, summary.properties) == (3, 27, 16, 17)
    assert (summary.aliases, summary.rejects, summary.skipped) == (6, 1, 3)
    [reject] = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert reject == {"revision": 1, "offset": len(REV1[0]) + len(REV1[1]) + 2,
                      "reason": reject["reason"], "raw": "not json"}
    assert reject["reason"]


async def test_rerun_adds_nothing_and_later_or_grown_revisions_are_continued(
        database: Database, make_source: Any, redis_prefix: str) -> None:
    await prepare(database, FILTERS)
    files = export_files()
    files["revisions/3.json"] = body(REV3[:7])  # revision 3 is still being written
    del files["revisions/2.json"]  # and revision 2 appears later
    settings = settings_for(database, redis_url=REDIS, redis_prefix=redis_prefix,
                            **make_source(files))
    first = await run_import(settings)
    assert first.lines == len(REV1) + 7

    again = await run_import(settings)
    assert (again.lines, again.revisions) == (0, 0)

    make_source({"revisions/2.json": body(REV2, crlf=True), "revisions/3.json": body(REV3)})
    grown = await run_import(settings)
    assert grown.lines == (len(REV2) - 1) + (len(REV3) - 7)  # one blank line in REV2
    assert database.dump() == expected_rows()


async def test_losing_the_redis_cursor_costs_reading_only(
        database: Database, tmp_path: Path, redis_prefix: str) -> None:
    source = write_dir(tmp_path / "export", export_files())
    await prepare(database, FILTERS)
    settings = settings_for(database, source, redis_url=REDIS, redis_prefix=redis_prefix)
    await run_import(settings)
    cursor = open_cursor(settings, open_store(settings))
    assert await cursor.load()  # the cursor lives in Redis under the test's prefix
    await cursor.clear()
    await cursor.close()

    again = await run_import(settings)
    assert again.lines == 27  # everything was read again ...
    assert database.dump() == expected_rows()  # ... and nothing doubled


async def test_without_redis_the_cursor_is_kept_in_the_database(
        database: Database, tmp_path: Path) -> None:
    source = write_dir(tmp_path / "export", export_files())
    settings = settings_for(database, source)
    await run_import(settings)
    sizes = {int(p.stem): p.stat().st_size for p in (tmp_path / "export/revisions").iterdir()}
    assert dict(database.query("SELECT `revision`, `offset` FROM kmdb_revisions")) == sizes
    assert (await run_import(settings)).lines == 0


@pytest.mark.parametrize("writers,files", [(1, 1), (4, 3)])
async def test_generated_export_matches_the_sequential_model(
        database: Database, tmp_path: Path, writers: int, files: int) -> None:
    root = tmp_path / "export"
    write_export(root, 4000, revisions=5, seed=7)
    settings = settings_for(database, str(root), batch_size=25, writers=writers,
                            files_in_flight=files, rejects=tmp_path / "r.jsonl")
    summary = await run_import(settings)
    want = reference.expected(root)
    got = database.dump()
    assert got["users"] == want["users"]
    assert got["aliases"] == want["aliases"]
    assert got["events"] == want["events"]
    assert got["properties"] == want["properties"]
    assert summary.events == len(want["events"]) and summary.properties == len(want["properties"])


async def test_filters_apply_to_the_generated_export(
        database: Database, tmp_path: Path) -> None:
    root = tmp_path / "export"
    write_export(root, 1500, revisions=2, seed=3)
    filters = Filters(ignored_users=frozenset({"0", "anon-1"}),
                      whitelisted_events=frozenset({f"Event {i}" for i in range(50)}),
                      blacklisted_properties=frozenset({"prop_1", "prop_2"}))
    await prepare(database, {"ignored_users": sorted(filters.ignored_users),
                             "whitelisted_events": sorted(filters.whitelisted_events),
                             "blacklisted_properties": sorted(filters.blacklisted_properties)})
    await run_import(settings_for(database, str(root), rejects=tmp_path / "r.jsonl"))
    assert database.dump() == reference.expected(root, filters)


async def test_strict_stops_at_the_first_reject(
        database: Database, tmp_path: Path) -> None:
    source = write_dir(tmp_path / "export", export_files())
    from kmdb_async.errors import TerminalError

    with pytest.raises(TerminalError, match="revision 1 byte"):
        await run_import(replace(settings_for(database, source), strict=True))


async def test_exact_strings_duplicates_and_long_values_survive_the_round_trip(
        database: Database, tmp_path: Path) -> None:
    long_value = "é" * 70_000  # 140,000 bytes: cut to 65,535 characters, and counted
    lines = [
        b'{"_n":"Signed Up","_p":"Anon-X","_t":10}',
        b'{"_n":"signed up","_p":"anon-x","_t":10}',
        b'{"_n":"signed up ","_p":"anon-x ","_t":10}',
        b'{"_n":"Signed Up","_p":"Anon-X","_t":10}',  # an exact duplicate line: kept
        json.dumps({"_p": "\U0001f600'; DROP TABLE events; --", "_t": 11, "q\\\"k": long_value,
                    "emoji \U0001f680": "\U0001f680"}, ensure_ascii=False).encode(),
    ]
    source = write_dir(tmp_path / "export", {"revisions/1.json": body(lines)})
    summary = await run_import(settings_for(database, source))

    assert summary.truncated == 1
    names = {n for (n,) in database.query("SELECT name FROM users")}
    assert names == {"Anon-X", "anon-x", "anon-x ", "\U0001f600'; DROP TABLE events; --"}
    keys = {k for (k,) in database.query("SELECT string FROM `keys`")}
    assert {"Signed Up", "signed up", "signed up ", 'q\\"k', "emoji \U0001f680"} <= keys
    rows = database.dump()
    assert [(name, user) for _, _, name, user, _ in rows["events"]] == [
        ("Signed Up", "Anon-X"), ("signed up", "anon-x"), ("signed up ", "anon-x "),
        ("Signed Up", "Anon-X")]
    values = {key: value for _, _, _, _, key, value in rows["properties"]}
    assert values["emoji \U0001f680"] == "\U0001f680"
    assert values['q\\"k'] == "é" * 65_535


@pytest.mark.parametrize("bulk_load", [True, False], ids=["load-data", "inserts"])
async def test_past_its_bound_the_alias_cache_looks_groups_up_and_dealiases_exactly(
        database: Database, tmp_path: Path, bulk_load: bool) -> None:
    """16 names for a few hundred aliased identities: groups are dropped and looked up again
    in the aliases table, in a first import (read ahead) and in a later one, concurrently."""
    root = tmp_path / "export"
    write_export(root, 4000, revisions=5, seed=7)
    later = {path: path.read_bytes() for path in sorted((root / "revisions").iterdir())[3:]}
    for path in later:
        path.unlink()
    settings = settings_for(database, str(root), batch_size=25, writers=4, files_in_flight=3,
                            alias_cache_size=16, bulk_load=bulk_load, rejects=tmp_path / "r.jsonl")
    await run_import(settings)
    assert database.dump() == reference.expected(root)
    for path, data in later.items():
        path.write_bytes(data)
    await run_import(settings)
    assert database.dump() == reference.expected(root)
