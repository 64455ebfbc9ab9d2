"""Real services for the tests: a database per test, a Redis key prefix per test, moto's S3.

KMDB_TEST_MYSQL (default ``mysql://root@127.0.0.1:3306``) and KMDB_TEST_REDIS (default
``redis://127.0.0.1:6379/15``: a database of the suite's own) name the servers; when one does
not answer, a private throwaway instance is started for the session. Each test gets its own
database (``kmdb_test_*``) and Redis key prefix (``kmdb-test:*``) and removes them afterwards.

What the suite may do to the shared servers is only that: anything server-wide (a global
variable, a user, FLUSHALL, a restart) happens on a private server (``private_mysql``,
``tests/faultproxy.RedisServer``), and ``_servers_left_as_found`` checks at the end of the
session that no global variable of the shared MariaDB changed and that no Redis key outside
the suite's prefix was created, changed or removed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pymysql
import pytest

from kmdb_async.settings import DatabaseURL, RedisURL, Settings
from kmdb_async.state import RedisCursor

from . import services
from .services import RedisProbe

pytest_plugins = ["tests.s3_server"]

MYSQL = os.environ.get("KMDB_TEST_MYSQL", "mysql://root@127.0.0.1:3306")
REDIS = os.environ.get("KMDB_TEST_REDIS", "redis://127.0.0.1:6379/15")
PREFIX = "kmdb-test:"  # every Redis key the suite writes on the shared Redis starts so
# Global variables that a server changes by itself (replication positions): not ours.
CHANGING_BY_THEMSELVES = frozenset({"gtid_binlog_pos", "gtid_binlog_state", "gtid_current_pos",
                                    "gtid_slave_pos"})
# No server answering: start private throwaway ones for this session (see tests/services.py).
if not services.answers(MYSQL):
    MYSQL = os.environ["KMDB_TEST_MYSQL"] = services.start_mariadb()
if not services.answers(REDIS):
    REDIS = os.environ["KMDB_TEST_REDIS"] = services.start_redis()


def connect(url: str) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    u = DatabaseURL.parse(url)
    return pymysql.connect(host=u.host, port=u.port, user=u.user, password=u.password,
                           database=u.database, charset="utf8mb4", autocommit=True)


def admin_query(sql: str, args: tuple[Any, ...] = (), server: str | None = None) -> list[tuple[Any, ...]]:
    """One statement on a fresh connection to the ``mysql`` database of ``server`` (default:
    the shared test server; a test's own database may not exist yet); its rows."""
    admin = connect(f"{server or MYSQL}/mysql")
    try:
        with admin.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        admin.close()


def database_exists(name: str) -> bool:
    """Whether the MariaDB database ``name`` exists (commands that only read must not create it)."""
    return bool(admin_query("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                            (name,)))


class Database:
    """A throwaway MariaDB database: its URL and a sync connection for assertions."""

    kind = "mariadb"

    def __init__(self, name: str, server: str | None = None) -> None:
        self.name = name
        self.server = server or MYSQL
        self.url = f"{self.server}/{name}"
        self._conn: Any = None

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._conn is None:
            self._conn = connect(self.url)
        with self._conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def drop(self) -> None:
        self.close()
        admin_query(f"DROP DATABASE IF EXISTS `{self.name}`", server=self.server)

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every imported fact by content (names, not users.id), sorted: for equality checks.

        Joined here rather than in SQL so the comparison never depends on a query plan.
        """
        users = dict(self.query("SELECT id, name FROM users"))
        keys = dict(self.query("SELECT id, string FROM `keys`"))
        events = self.query("SELECT id, CAST(t AS CHAR), n, user_id, origin_user_id FROM events")
        properties = self.query(
            "SELECT id, CAST(t AS CHAR), user_id, event_id, `key`, value FROM properties")
        return {
            "events": sorted((i, t, keys[n], users[u], users[o]) for i, t, n, u, o in events),
            "properties": sorted(((i, t, users[u], e, keys[k], v)
                                  for i, t, u, e, k, v in properties), key=repr),
            "users": sorted((name,) for name in users.values()),
            "aliases": sorted(self.query("SELECT name1, name2, CAST(t AS CHAR) FROM aliases")),
        }

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class EmbeddedDatabase(Database):
    """A throwaway embedded (SQLite) database file."""

    kind = "sqlite"

    def __init__(self, name: str) -> None:
        self.name = name
        self.folder = Path(tempfile.mkdtemp(prefix="kmdb-test-"))
        self.url = f"sqlite:///{self.folder / name}.sqlite3"
        self._conn = None

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._conn is None:
            self._conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=30)
        return list(self._conn.execute(sql.replace("%s", "?"), args).fetchall())

    def drop(self) -> None:
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def global_variables(server: str) -> dict[str, str]:
    """``SHOW GLOBAL VARIABLES`` of ``server``, but those it changes by itself."""
    return {name: value for name, value in admin_query("SHOW GLOBAL VARIABLES", server=server)
            if name not in CHANGING_BY_THEMSELVES}


def foreign_keys(url: str) -> dict[bytes, Any]:
    """The keys of the Redis database ``url`` outside the suite's prefix, with their values
    (serialized by DUMP)."""
    probe = RedisProbe(url)
    try:
        return {key: probe.call("DUMP", key) for key in probe.keys()
                if not key.startswith(PREFIX.encode())}
    finally:
        probe.close()


@pytest.fixture(scope="session", autouse=True)
def _servers_left_as_found() -> Iterator[None]:
    """The shared MariaDB and Redis end the session as they began: no global variable
    changed, no Redis key outside the suite's prefix created, changed or removed."""
    variables, keys = global_variables(MYSQL), foreign_keys(REDIS)
    yield
    after = global_variables(MYSQL)
    changed = {name: (variables.get(name), after.get(name))
               for name in variables.keys() | after.keys() if variables.get(name) != after.get(name)}
    assert not changed, f"the tests changed global variables of {MYSQL}: {changed}"
    assert foreign_keys(REDIS) == keys, f"the tests touched Redis keys outside {PREFIX}* at {REDIS}"


@pytest.fixture(scope="session")
def private_mysql() -> Iterator[str]:
    """Base URL of a MariaDB of the test session's own (started on first use): the one place
    where a test may change global settings (``SET GLOBAL``), which it must restore."""
    with services.PrivateMariaDB() as server:
        yield server.url


@pytest.fixture
def make_database() -> Iterator[Any]:
    """Factory of throwaway databases, MariaDB by default or ``make("sqlite")`` (created on
    first import, dropped at teardown); ``make(server=url)`` puts it on another MariaDB (a
    private one)."""
    made: list[Database] = []

    def make(kind: str = "mariadb", server: str | None = None) -> Database:
        name = f"kmdb_test_{uuid.uuid4().hex[:12]}"
        db = EmbeddedDatabase(name) if kind == "sqlite" else Database(name, server)
        made.append(db)
        return db

    yield make
    for db in made:
        db.drop()


@pytest.fixture
def database(make_database: Any) -> Database:
    """A MariaDB database of the test's own."""
    return make_database()  # type: ignore[no-any-return]


@pytest.fixture
def private_database(make_database: Any, private_mysql: str) -> Database:
    """A MariaDB database of the test's own on the session's private server: for a test that
    changes the server itself (creates a user, sets a global variable)."""
    return make_database(server=private_mysql)  # type: ignore[no-any-return]


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"{PREFIX}{uuid.uuid4().hex[:12]}"
    yield prefix
    settings = Settings(redis_url=REDIS, redis_prefix=prefix)
    cursor = RedisCursor(RedisURL.parse(REDIS), prefix, settings)

    async def clear() -> None:
        await cursor.clear()
        await cursor.close()

    asyncio.run(clear())


def settings_for(database: Database, source: str = "", **changes: Any) -> Settings:
    """Settings of a quick test import (small batches, fast retries)."""
    base = Settings(database_url=database.url, source=source, batch_size=5, files_in_flight=3,
                    writers=3, queue_depth=4, retry_attempts=3, retry_max_wait=0.2,
                    progress_interval=60.0)
    return replace(base, **changes)


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files a command writes to its working directory (rejects, .env) stay in the test's tmp."""
    monkeypatch.chdir(tmp_path)
