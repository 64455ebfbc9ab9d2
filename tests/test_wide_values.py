"""Statements sized in bytes against the server's ``max_allowed_packet`` (issue 15, item 1).

A property value may be 65,535 four-byte characters (256 KiB of UTF-8): a second full of them
must import by inserts (a run onto non-empty tables) and by the first import's LOAD DATA
streams, on the default server and on private servers with a small ``max_allowed_packet``. On
a server whose packet cannot hold such a row, its line is a reject, never a failed run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmdb_async.errors import TerminalError
from kmdb_async.pipeline import run_import
from kmdb_async.records import MAX_VALUE, Record
from kmdb_async.resolver import Filters
from kmdb_async.settings import Settings
from kmdb_async.store import open_store
from kmdb_async.store.statements import UPSERT_NOTHING, bulk_insert

from . import reference
from .conftest import Database, settings_for
from .services import PrivateMariaDB

EMOJI = [chr(0x1F600 + i) for i in range(64)]
T0 = 1_325_376_000


def line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def wide_second(t: int, lines: int, props: int, tag: str) -> list[bytes]:
    """``lines`` events of one second, each with ``props`` values of 65,535 emoji (4 bytes
    each in UTF-8); the last value of the last line is quotes and backslashes between emoji
    (escaping doubles them)."""
    out = []
    for i in range(lines):
        record: dict[str, Any] = {"_n": "wide é", "_p": f"{tag}-{i % 3}", "_t": t}
        for k in range(props):
            record[f"k{k} 🔑"] = EMOJI[(i * props + k) % len(EMOJI)] * MAX_VALUE
        if i == lines - 1:
            record[f"k{props - 1} 🔑"] = ("'\\" + EMOJI[i % len(EMOJI)]) * (MAX_VALUE // 3)
        out.append(line(record))
    return out


def long_aliases(t: int, count: int, tag: str) -> list[bytes]:
    """``count`` alias records of one second between names of 255 characters, mostly emoji."""
    return [line({"_p": f"{tag}{i:05d}" + "😀" * 249, "_p2": f"{tag}{i:05d}" + "é" * 249, "_t": t})
            for i in range(count)]


def small_lines(t: int, tag: str) -> list[bytes]:
    return [line({"_n": "visit", "_p": f"{tag}-{i}", "_t": t + i, "ref": "café"}) for i in range(6)]


def write(root: Path, revision: int, lines: list[bytes]) -> None:
    (root / "revisions").mkdir(parents=True, exist_ok=True)
    (root / "revisions" / f"{revision}.json").write_bytes(b"".join(lines))


HEAD = "INSERT INTO `t` (`id`, `v`) VALUES "


@pytest.mark.parametrize("limit", [200, 1000, 4096])
def test_bulk_inserts_are_cut_by_bytes_of_utf8_and_hold_every_row_once_in_order(limit: int) -> None:
    rows = [f"({i},'{'é' * (i % 7)}{'😀' * (i % 5)}{'a' * (i % 11)}')" for i in range(500)]
    statements = list(bulk_insert(HEAD, rows, limit))
    assert all(len(s.encode()) <= limit for s in statements)
    bodies = [s.removeprefix(HEAD).removesuffix(UPSERT_NOTHING) for s in statements]
    assert ",".join(bodies) == ",".join(rows)
    taken = 0
    for statement, body in zip(statements[:-1], bodies, strict=False):  # no room for one more
        taken += body.count("),(") + 1
        assert len(statement.encode()) + 1 + len(rows[taken].encode()) > limit


def test_a_row_that_no_statement_can_hold_is_an_error_not_a_packet_the_server_refuses() -> None:
    with pytest.raises(TerminalError, match="a row of 404 bytes does not fit a statement of 300"):
        list(bulk_insert(HEAD, ["(1,'a')", "('" + "😀" * 100 + "')"], 300))


async def imported(settings: Settings, capsys: pytest.CaptureFixture[str]) -> tuple[int, int]:
    """(rejects, properties) of one import, which went its first way: a first import's bulk
    load was not redone with inserts."""
    summary = await run_import(settings)
    assert "importing again with row inserts" not in capsys.readouterr().err
    return summary.rejects, summary.properties


async def test_a_later_import_of_seconds_full_of_wide_emoji_values_stores_them_byte_for_byte(
        database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """72 rows of 256 KiB in one second: 18 MiB of properties in one batch, more than the
    default max_allowed_packet (16 MiB) holds in one statement."""
    root = tmp_path / "export"
    write(root, 1, small_lines(T0, "first") + wide_second(T0 + 10, 2, 3, "w1"))
    settings = settings_for(database, str(root), rejects=tmp_path / "rejects.jsonl")
    assert await imported(settings, capsys) == (0, 12)  # a first import: the LOAD DATA streams
    write(root, 2, [*wide_second(T0 + 20, 9, 8, "w2"), *wide_second(T0 + 21, 9, 8, "w3"),
                    *small_lines(T0 + 30, "later")])
    assert await imported(settings, capsys) == (0, 150)  # a later import: row inserts

    assert database.dump() == reference.expected(root)


@pytest.fixture(scope="module")
def one_mib_server() -> Iterator[str]:
    """A private MariaDB with a max_allowed_packet of 1 MiB (as many servers are configured)."""
    with PrivateMariaDB("--max-allowed-packet=1M") as server:
        yield server.url


@pytest.mark.parametrize("bulk_load", [True, False], ids=["load-data", "inserts"])
async def test_with_a_1_mib_packet_wide_values_and_long_names_import_on_every_path(
        make_database: Any, one_mib_server: str, tmp_path: Path, bulk_load: bool,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Wide values in the first import (LOAD DATA packets, or inserts) and in a later one, and
    a second of 1,100 alias pairs of 255-character names (2 MB of names to look up and lock)."""
    database = make_database(server=one_mib_server)
    root = tmp_path / "export"
    write(root, 1, [*small_lines(T0, "first"), *wide_second(T0 + 10, 6, 4, "w1"),
                    *long_aliases(T0 + 11, 1100, "a")])
    settings = settings_for(database, str(root), rejects=tmp_path / "rejects.jsonl",
                            bulk_load=bulk_load)
    assert await imported(settings, capsys) == (0, 30)
    write(root, 2, [*wide_second(T0 + 20, 8, 4, "w2"), *long_aliases(T0 + 21, 1100, "b"),
                    *small_lines(T0 + 30, "later")])
    assert await imported(settings, capsys) == (0, 38)

    assert database.dump() == reference.expected(root)


@pytest.fixture(scope="module")
def small_packet_server() -> Iterator[str]:
    """A private MariaDB whose max_allowed_packet (128 KiB) cannot hold a 256 KiB row."""
    with PrivateMariaDB("--max-allowed-packet=128K") as server:
        yield server.url


def with_one_too_wide(t: int, tag: str) -> list[bytes]:
    """Lines of one second; the third has one value of 65,535 emoji (256 KiB)."""
    lines = small_lines(t, tag)
    lines.insert(2, line({"_n": "too wide", "_p": f"{tag}-wide", "_t": t + 2, "fine": "x",
                          "only here": "😀" * MAX_VALUE}))
    return lines


async def test_a_row_larger_than_max_allowed_packet_is_a_reject_on_every_path(
        make_database: Any, small_packet_server: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    database = make_database(server=small_packet_server)
    root = tmp_path / "export"
    rejects = tmp_path / "rejects.jsonl"
    first, later = with_one_too_wide(T0, "first"), with_one_too_wide(T0 + 100, "later")
    write(root, 1, first)
    settings = settings_for(database, str(root), rejects=rejects)
    assert await imported(settings, capsys) == (1, 6)  # a first import: the LOAD DATA streams
    write(root, 2, later)
    assert await imported(settings, capsys) == (1, 6)  # a later import: row inserts

    # The lines are rejected whole and leave no trace: no user, no key, no row.
    wide_users = frozenset({"first-wide", "later-wide"})
    assert database.dump() == reference.expected(root, Filters(ignored_users=wide_users))
    keys = {k for (k,) in database.query("SELECT string FROM `keys`")}
    assert "only here" not in keys and "too wide" not in keys
    found = [json.loads(text) for text in rejects.read_text(encoding="utf-8").splitlines()]
    assert [(r["revision"], r["offset"], r["raw"]) for r in found] == [
        (1, len(first[0]) + len(first[1]), first[2][:-1].decode()),
        (2, len(later[0]) + len(later[1]), later[2][:-1].decode())]
    for r in found:
        assert r["reason"].startswith("row of ")
        assert "exceeds the server's max_allowed_packet of 131,072 bytes" in r["reason"]


def long_names(t: int, count: int, tag: str) -> list[bytes]:
    """Events of ``count`` identities and keys of 255 characters (emoji), each identity linked
    to a second one of 255 characters, all in one second (one batch)."""
    out = []
    for i in range(count):
        name = f"{tag}{i:04d}" + "😀" * (255 - len(tag) - 4)
        out.append(line({"_n": "named", "_p": name, "_t": t, name.replace("😀", "🔑"): "v"}))
        out.append(line({"_p": name, "_p2": name.replace("😀", "é"), "_t": t}))
    return out


@pytest.mark.parametrize("bulk_load", [True, False], ids=["load-data", "inserts"])
async def test_with_a_128_kib_packet_every_lookup_of_long_names_is_cut_to_fit(
        make_database: Any, small_packet_server: str, tmp_path: Path, bulk_load: bool,
        capsys: pytest.CaptureFixture[str]) -> None:
    """300 identities, keys and alias pairs of 255 four-byte characters a batch (300 KB of
    names): interned, looked up (a small alias cache) and locked in statements that fit."""
    database = make_database(server=small_packet_server)
    store = open_store(Settings(database_url=database.url))
    await store.open()
    try:
        await store.ensure_schema()
        ignored = [f"ignored{i:03d}" + "😀" * 245 for i in range(300)]
        assert len(await store.add_filter_names("ignored_users", ignored)) == 300
        assert await store.add_filter_names("ignored_users", ignored) == []
    finally:
        await store.close()
    root = tmp_path / "export"
    write(root, 1, [*long_names(T0, 300, "a"), line({"_p": ignored[7], "_t": T0, "k": "v"})])
    settings = settings_for(database, str(root), rejects=tmp_path / "rejects.jsonl",
                            bulk_load=bulk_load, alias_cache_size=16)
    assert await imported(settings, capsys) == (0, 300)
    write(root, 2, [*long_names(T0 + 10, 300, "b"), *long_names(T0 + 11, 300, "a")])
    assert await imported(settings, capsys) == (0, 600)

    assert database.dump() == reference.expected(root, Filters(ignored_users=frozenset(ignored)))


async def test_a_first_imports_keys_of_255_four_byte_characters_go_in_without_lookups(
        make_database: Any, small_packet_server: str) -> None:
    """A first import inserts its new keys without looking them up, in INSERTs that fit a
    128 KiB packet (a failed one would make the store look every key up from then on)."""
    database = make_database(server=small_packet_server)
    store = open_store(settings_for(database))
    await store.open()
    await store.ensure_schema()
    bulk = await store.begin_bulk_load()
    try:
        assert bulk is not None and store._keys.complete  # noqa: SLF001 - the path under test
        ids = await store.key_ids([f"{i:03d}" + "🔑" * 252 for i in range(300)])
        assert store._keys.complete  # noqa: SLF001
    finally:
        if bulk is not None:
            bulk.close()
        await store.close()
    assert ids == dict(database.query("SELECT string, id FROM `keys`"))


async def test_lines_are_checked_only_where_a_row_may_not_fit(
        make_database: Any, small_packet_server: str, one_mib_server: str) -> None:
    """Values are at most 65,535 characters (256 KiB): with a 1 MiB packet every row fits and
    no line is checked; with 128 KiB, a line is rejected only when a row is too large."""
    for server, packet in ((one_mib_server, 1 << 20), (small_packet_server, 128 << 10)):
        store = open_store(settings_for(make_database(server=server)))
        await store.open()
        await store.close()
        assert store.max_packet == packet  # type: ignore[attr-defined]
        check = store.oversized()
        if packet == 1 << 20:
            assert check is None
            continue
        assert check is not None

        def with_value(value: str) -> Record:
            return Record(0, 1, T0, "u", None, "e", [("a", "x"), ("k", value), ("n", None)], 0)

        assert check(with_value("😀" * 32_000)) is None  # 128,002 bytes quoted: fits
        reason = check(with_value("😀" * 32_700))
        assert reason == ("row of 131,101 bytes in its INSERT (property 'k') exceeds the server's "
                          "max_allowed_packet of 131,072 bytes")
        assert check(with_value("a" * MAX_VALUE)) is None  # counted exactly, not bounded
        assert check(with_value("'" * MAX_VALUE)) is not None  # escaping doubles quotes


async def test_under_strict_a_row_larger_than_max_allowed_packet_stops_the_run(
        make_database: Any, small_packet_server: str, tmp_path: Path) -> None:
    database = make_database(server=small_packet_server)
    root = tmp_path / "export"
    write(root, 1, with_one_too_wide(T0, "first"))
    settings = settings_for(database, str(root), strict=True, rejects=tmp_path / "rejects.jsonl")
    with pytest.raises(TerminalError, match=r"--strict: revision 1 byte \d+: row of .* max_allowed_packet"):
        await run_import(settings)


async def test_a_server_whose_packet_cannot_hold_a_name_is_refused_at_once() -> None:
    with PrivateMariaDB("--max-allowed-packet=4K") as server:
        store = open_store(Settings(database_url=f"{server.url}/kmdb_tiny"))
        with pytest.raises(TerminalError, match="max_allowed_packet is 4,096 bytes; kmdb-async "
                                                "needs at least 16,384"):
            await store.open()
        await store.close()
