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
