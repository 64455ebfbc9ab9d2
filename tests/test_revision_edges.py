"""The edges of a revision object: a byte-order mark at its start, an unfinished last line.

Run through whole imports on both databases, from a directory and from S3 (moto), with the
revision growing between runs as KissMetrics (or a sync) writes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kmdb_async.pipeline import run_import
from kmdb_async.resolver import row_id
from kmdb_async.status import read_status

from . import reference
from .conftest import settings_for

BOM = b"\xef\xbb\xbf"
SIGNED_UP = b'{"_n":"Signed Up","_p":"anon-1","_t":1325376000,"plan":"pro"}'
ALIAS = b'{"_p":"anon-1","_p2":"42","_t":1325376001}'
VISIT = b'{"_n":"visit","_p":"anon-1","_t":1325376002,"page":"/caf\\303\\251"}'


@pytest.mark.parametrize("kind", ["mariadb", "sqlite"])
async def test_a_revision_opening_with_a_byte_order_mark_imports_its_first_line(
        make_database: Any, tmp_path: Path, kind: str) -> None:
    database = make_database(kind)
    root = tmp_path / "export"
    (root / "revisions").mkdir(parents=True)
    path = root / "revisions/1.json"
    path.write_bytes(BOM + SIGNED_UP + b"\n" + ALIAS + b"\n")
    settings = settings_for(database, str(root), rejects=tmp_path / "rejects.jsonl")
    first = await run_import(settings)
    path.write_bytes(path.read_bytes() + VISIT + b"\n")  # grown: read again from a later offset
    again = await run_import(settings)

    assert (first.lines, first.rejects, again.lines, again.rejects) == (2, 0, 1, 0)
    assert not (tmp_path / "rejects.jsonl").exists()
    assert database.dump() == reference.expected(root)
    ids = sorted(i for (i,) in database.query("SELECT id FROM events"))
    assert ids[0] == row_id(1, 0)  # the first line keeps offset 0: its ids do not move


# -- an unfinished last line -----------------------------------------------------------------

REV1 = b"".join(line + b"\n" for line in (SIGNED_UP, ALIAS, VISIT))
BEFORE = (b'{"_p":"anon-2","_p2":"anon-3","_t":1325376100}\n'
          b'{"_n":"visit","_p":"anon-3","_t":1325376101}\n')
LAST = b'{"_p":"anon-3","_p2":"77","_t":1325376102,"page":"/caf\\303\\251"}'  # an alias: not
AFTER = b'{"_n":"bought","_p":"77","_t":1325376103,"amount":3}\n'  # linked ahead while cut
REV3 = b'{"_n":"visit","_p":"anon-9","_t":1325376200}\n'


class Export:
    """An export in a directory or in a bucket of moto's S3, written and grown by the test."""

    def __init__(self, where: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.root = tmp_path / "export"  # the whole export, for the sequential model
        (self.root / "revisions").mkdir(parents=True)
        self.bucket = request.getfixturevalue("s3_bucket") if where == "s3" else None

    def put(self, number: int, data: bytes) -> None:
        (self.root / f"revisions/{number}.json").write_bytes(data)
        if self.bucket is not None:
            self.bucket.put(f"pre/revisions/{number}.json", data)

    def settings(self, database: Any, tmp_path: Path) -> Any:
        where: dict[str, Any] = {"source": str(self.root)}
        if self.bucket is not None:
            where = {"source": f"{self.bucket.url}/pre", "s3_endpoint_url": self.bucket.endpoint_url,
                     "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        return settings_for(database, rejects=tmp_path / "rejects.jsonl", **where)


@pytest.fixture(params=["directory", "s3"])
def export(request: pytest.FixtureRequest, tmp_path: Path) -> Export:
    return Export(request.param, tmp_path, request)


@pytest.mark.parametrize("kind", ["mariadb", "sqlite"])  # MariaDB: a first import's bulk load
@pytest.mark.parametrize("cut", [1, 20, len(LAST) - 1])
async def test_a_cut_last_line_waits_for_its_end_and_nothing_is_rejected(
        make_database: Any, export: Export, tmp_path: Path, kind: str, cut: int) -> None:
    database = make_database(kind)
    settings = export.settings(database, tmp_path)
    export.put(1, REV1)
    export.put(2, BEFORE + LAST[:cut])  # revision 2, the latest, is still being written
    first = await run_import(settings)
    assert (first.lines, first.rejects, first.revisions) == (5, 0, 1)  # 2 is not read to its end
    assert first.held_back == {"revision": 2, "offset": len(BEFORE), "bytes": cut}
    assert database.query("SELECT COUNT(*) FROM aliases") == [(2,)]  # the cut alias is not in
    report = await read_status(settings)
    assert (report["verdict"], report["revisions"]["held_back"]) == ("up to date", first.held_back)
    again = await run_import(settings)  # nothing new: nothing read, nothing rejected
    assert (again.lines, again.rejects, again.held_back) == (0, 0, first.held_back)

    export.put(2, BEFORE + LAST + b"\n" + AFTER)  # the line is complete, and more came
    grown = await run_import(settings)
    assert (grown.lines, grown.rejects, grown.revisions, grown.held_back) == (2, 0, 1, None)
    assert not (tmp_path / "rejects.jsonl").exists()
    assert database.dump() == reference.expected(export.root)
    report = await read_status(settings)
    assert (report["verdict"], report["revisions"]["held_back"]) == ("up to date", None)


async def test_once_a_later_revision_exists_a_cut_last_line_is_a_reject(
        make_database: Any, export: Export, tmp_path: Path) -> None:
    database = make_database("sqlite")
    settings = export.settings(database, tmp_path)
    export.put(1, REV1)
    export.put(2, BEFORE + LAST[:20])
    assert (await run_import(settings)).held_back is not None
    export.put(3, REV3)  # KissMetrics moved on: revision 2 is final as it is
    later = await run_import(settings)
    assert (later.lines, later.rejects, later.revisions, later.held_back) == (2, 1, 2, None)
    [reject] = (tmp_path / "rejects.jsonl").read_text().splitlines()
    assert '"reason":"not JSON"' in reject and f'"offset":{len(BEFORE)}' in reject
    assert database.dump() == reference.expected(export.root)


async def test_an_unterminated_last_line_that_parses_is_imported_at_once(
        make_database: Any, export: Export, tmp_path: Path) -> None:
    database = make_database("sqlite")
    settings = export.settings(database, tmp_path)
    export.put(1, BEFORE + LAST)  # SPEC: the last line may lack its newline
    first = await run_import(settings)
    assert (first.lines, first.rejects, first.revisions, first.held_back) == (3, 0, 1, None)
    export.put(1, BEFORE + LAST + b"\n" + AFTER)
    grown = await run_import(settings)
    assert (grown.lines, grown.rejects) == (1, 0)
    assert database.dump() == reference.expected(export.root)
