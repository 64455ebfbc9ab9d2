"""Every connection forces and checks utf8mb4 (issue 15, item 2).

A server's ``init_connect`` runs for users without SUPER before the client's first statement;
``SET NAMES latin1`` there would make every string the import writes through that connection
garbled (``cafÃ©``), while LOAD DATA (``CHARACTER SET utf8mb4``) stays right. On such a server,
with such a user, accents and emoji must round-trip through every write path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomysql
import pytest

from kmdb_async.errors import TerminalError
from kmdb_async.pipeline import run_import
from kmdb_async.resolver import Filters
from kmdb_async.settings import DatabaseURL, Settings
from kmdb_async.store import open_store

from . import reference
from .conftest import admin_query, settings_for
from .services import PrivateMariaDB

USER, PASSWORD = "kmdb_app", "app-pw"
T0 = 1_325_376_000


@pytest.fixture(scope="module")
def latin1_server() -> Iterator[str]:
    """A private MariaDB whose init_connect sets latin1, and a user without SUPER (nor any
    global privilege that skips init_connect): ALL on the test databases only. Yields the
    server's base URL as that user (root skips init_connect: the tests read as root)."""
    with PrivateMariaDB("--init-connect=SET NAMES latin1") as server:
        admin_query(f"CREATE USER '{USER}'@'%%' IDENTIFIED BY '{PASSWORD}'", server=server.url)
        admin_query(f"GRANT ALL ON `kmdb\\_test\\_%%`.* TO '{USER}'@'%%'", server=server.url)
        yield server.url


def as_user(url: str) -> str:
    """``url`` (root's, on the latin1 server) as the user init_connect applies to."""
    return url.replace("mysql://root@", f"mysql://{USER}:{PASSWORD}@", 1)


def line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def revision(t: int, tag: str) -> list[bytes]:
    """Accented and emoji identities, event names, keys and values; alias records joining
    them into groups (one with a numeric identity); an ignored identity; octal escapes."""
    zoe, anon, numeric = f"zoé-{tag}", f"anon-😀-{tag}", f"{t % 1000}{len(tag)}"
    return [
        line({"_n": "Inscrit à l'offre 🎉", "_p": zoe, "_t": t, "clé 🔑": "café", "ß": "Ünïcödé 𝔘"}),
        line({"_n": "visité", "_p": anon, "_t": t + 1, "référent": "https://exemple.fr/é?q=ü"}),
        line({"_p": "ignorée 🙈", "_t": t + 1, "clé 🔑": "never stored"}),
        line({"_p": zoe, "_p2": anon, "_t": t + 2}),
        line({"_p": anon, "_t": t + 3, "clé 🔑": "naïve 🐍", "nested": {"é": ["ü", 1]}}),
        line({"_p": anon, "_p2": numeric, "_t": t + 4}),
        line({"_n": "visité", "_p": f"Zoé-{tag}", "_t": t + 5, "clé 🔑": "Zoé, not zoé"}),
        b'{"_n":"caf\\303\\251","_p":"octal-\\303\\251-' + tag.encode() + b'","_t":%d}\n' % (t + 6),
        line({"_p": f"Zoé-{tag}", "_p2": zoe, "_t": t + 7}),
    ]


def write(root: Path, number: int, lines: list[bytes]) -> None:
    (root / "revisions").mkdir(parents=True, exist_ok=True)
    (root / "revisions" / f"{number}.json").write_bytes(b"".join(lines))


@pytest.mark.parametrize("bulk_load", [True, False], ids=["load-data", "inserts"])
async def test_accents_and_emoji_round_trip_through_every_write_path_despite_init_connect(
        make_database: Any, latin1_server: str, tmp_path: Path, bulk_load: bool,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A first import (LOAD DATA streams, or inserts), then a later one (inserts); users and
    keys interned, alias pairs upserted, groups looked up in the aliases table (a cache of 2
    identities) and the filter tables written and read, all as the init_connect user."""
    database = make_database(server=latin1_server)  # read and dropped as root: utf8mb4
    url = f"{as_user(latin1_server)}/{database.name}"
    store = open_store(Settings(database_url=url))
    await store.open()
    try:
        await store.ensure_schema()
        assert await store.add_filter_names("ignored_users", ["ignorée 🙈"]) == ["ignorée 🙈"]
        assert await store.filter_names("ignored_users") == ["ignorée 🙈"]
    finally:
        await store.close()
    root = tmp_path / "export"
    write(root, 1, revision(T0, "1"))
    settings = settings_for(database, str(root), database_url=url, bulk_load=bulk_load,
                            alias_cache_size=2, rejects=tmp_path / "rejects.jsonl")
    await run_import(settings)
    write(root, 2, revision(T0 + 100, "2") + revision(T0 + 200, "1"))
    await run_import(settings)
    assert "importing again with row inserts" not in capsys.readouterr().err

    rows = database.dump()
    assert rows == reference.expected(root, Filters(ignored_users=frozenset({"ignorée 🙈"})))
    assert ("zoé-1",) in rows["users"] and ("octal-é-2",) in rows["users"]
    assert database.query("SELECT name FROM ignored_users") == [("ignorée 🙈",)]
    keys = {k for (k,) in database.query("SELECT string FROM `keys`")}
    assert {"Inscrit à l'offre 🎉", "clé 🔑", "café", "visité"} <= keys


async def test_a_connection_whose_character_set_is_not_utf8mb4_is_refused(
        make_database: Any, latin1_server: str) -> None:
    """The check each connection passes once: one left at init_connect's latin1 (no SET
    NAMES) would store text garbled, and is refused with a clear error."""
    database = make_database(server=latin1_server)
    url = f"{as_user(latin1_server)}/{database.name}"
    store = open_store(Settings(database_url=url))
    await store.open()
    u = DatabaseURL.parse(url)
    conn = await aiomysql.connect(host=u.host, port=u.port, user=u.user, password=u.password,
                                  charset="utf8mb4")
    try:
        with pytest.raises(TerminalError, match=r"character sets \(client, connection, results\) "
                                                r"are latin1, latin1, latin1 and its collation "
                                                r"latin1_swedish_ci"):
            await store._check_charset(conn)  # noqa: SLF001 - the check under test
    finally:
        conn.close()
        await store.close()


def test_the_query_module_reads_text_exactly_despite_init_connect(
        make_database: Any, latin1_server: str, tmp_path: Path) -> None:
    """kmdb_async.query's connections set utf8mb4 after the server's init_connect: names come
    back as stored, not as latin1 mojibake."""
    from sqlalchemy import select

    from kmdb_async.query import User, open_session

    database = make_database(server=latin1_server)
    admin_query(f"CREATE DATABASE `{database.name}` CHARACTER SET utf8mb4", server=latin1_server)
    admin_query(f"CREATE TABLE `{database.name}`.users (id BIGINT PRIMARY KEY, name VARCHAR(255)) "
                "CHARACTER SET utf8mb4", server=latin1_server)
    admin_query(f"INSERT INTO `{database.name}`.users VALUES (1, %s)", ("zoé 😀",),
                server=latin1_server)
    with open_session(as_user(database.url)) as session:
        assert session.scalars(select(User.name)).all() == ["zoé 😀"]
