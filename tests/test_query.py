"""kmdb_async.query on a known imported export: every scope, relationship and helper.

The Python queries run on MariaDB, on SQLite tables created from the models' metadata (the same
rows copied over) and on the embedded store's SQLite file after a real import. (The examples of
docs/data-model.md run on the bundled sample: tests/test_docs.py.)
"""

from __future__ import annotations

import asyncio
import calendar
import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, select
from sqlalchemy.orm import Session

from kmdb_async.pipeline import run_import
from kmdb_async.query import (
    Alias,
    Base,
    Event,
    Key,
    Property,
    User,
    canonical_name,
    canonical_user,
    events_with_properties,
    open_engine,
    sqlalchemy_url,
)
from kmdb_async.settings import Settings

from .conftest import Database, settings_for
from .test_import import write_dir


def at(text: str) -> int:
    """Unix seconds of a UTC ``YYYY-MM-DD HH:MM:SS``."""
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def visit(p: str, t: str, referer: str | None = None) -> dict[str, Any]:
    return {"_n": "visited site", "_p": p, "_t": at(t), **({"referer": referer} if referer else {})}


GOOGLE_FLATS, GOOGLE_ROOMS = "https://google.com/?q=flats", "https://google.com/?q=rooms"
HN, TWITTER = "https://news.ycombinator.com/", "https://twitter.com/"
# A small export: anon-1 becomes 101 (also mobile-abc), anon-3 is also bob@example.com.
SAMPLE: dict[int, list[Any]] = {
    1: [
        visit("anon-1", "2011-12-31 23:59:59", GOOGLE_FLATS),
        visit("anon-2", "2012-01-01 00:00:00", HN),
        {"_n": "signed up", "_p": "anon-1", "_t": at("2012-01-03 10:00:00"), "plan": "free"},
        {"_p": "anon-1", "_p2": "101", "_t": at("2012-01-03 10:00:01")},
        visit("101", "2012-01-10 08:00:00", TWITTER),
        {"_n": "signed up", "_p": "anon-2", "_t": at("2012-01-09 12:00:00"), "plan": "pro"},
        visit("anon-3", "2012-01-15 09:30:00", GOOGLE_ROOMS),
    ],
    2: [
        visit("bob@example.com", "2012-01-16 18:00:00"),
        {"_p": "bob@example.com", "_p2": "anon-3", "_t": at("2012-01-16 18:00:05")},
        {"_p": "101", "_t": at("2012-01-20 00:00:00"), "plan": "pro"},
        visit("anon-2", "2012-02-01 00:00:00", GOOGLE_FLATS),
        {"_p": "101", "_p2": "mobile-abc", "_t": at("2012-01-21 00:00:00")},
        "not json",
        visit("anon-4", "2012-01-23 11:00:00", GOOGLE_ROOMS),
    ],
}


def export(revisions: dict[int, list[Any]]) -> dict[str, bytes]:
    return {f"revisions/{n}.json": b"".join(
        (line if isinstance(line, str) else json.dumps(line)).encode() + b"\n" for line in lines)
        for n, lines in revisions.items()}


def import_export(database: Database, root: Path, revisions: dict[int, list[Any]]) -> None:
    source = write_dir(root, export(revisions))
    asyncio.run(run_import(settings_for(database, source, rejects=root / "rejects.jsonl")))


def import_sample(database: Database, root: Path) -> None:
    import_export(database, root, SAMPLE)


def copy_to_sqlite(database: Database, path: Path) -> str:
    """The imported rows, copied into a SQLite file whose tables come from the models."""
    url = f"sqlite:///{path}"
    source, target = create_engine(sqlalchemy_url(database.url)), create_engine(url)
    try:
        Base.metadata.create_all(target)
        with source.connect() as src, target.begin() as dst:
            for table in Base.metadata.sorted_tables:
                rows = [dict(row._mapping) for row in src.execute(select(table))]
                if rows:
                    dst.execute(insert(table), rows)
    finally:
        source.dispose()
        target.dispose()
    return url


def import_embedded(root: Path) -> str:
    """The sample imported by the embedded store (skipped while that store is not there)."""
    pytest.importorskip("kmdb_async.store.sqlite")
    url = f"sqlite:///{root / 'embedded.sqlite3'}"
    source = write_dir(root / "export", export(SAMPLE))
    asyncio.run(run_import(Settings(database_url=url, source=source, batch_size=5,
                                    rejects=root / "rejects.jsonl")))
    return url


@pytest.fixture(params=["mariadb", "sqlite", "embedded"])
def backend_url(request: pytest.FixtureRequest, make_database: Any, tmp_path: Path) -> str:
    """The sample imported into MariaDB; for "sqlite" the same rows copied into a SQLite file
    made from the models' metadata; for "embedded" imported by the embedded SQLite store."""
    if request.param == "embedded":
        return import_embedded(tmp_path)
    database = make_database()
    import_sample(database, tmp_path / "export")
    if request.param == "sqlite":
        return copy_to_sqlite(database, tmp_path / "kmdb.sqlite3")
    return str(database.url)


@pytest.fixture
def session(backend_url: str) -> Iterator[Session]:
    engine = open_engine(backend_url)
    try:
        with Session(engine) as s:
            yield s
    finally:
        engine.dispose()


def when(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S")


# -- scopes ----------------------------------------------------------------------------------

def test_events_named_in_a_half_open_date_range_ordered_by_date(session: Session) -> None:
    stmt = (select(Event)
            .where(Event.named("visited site"), Event.after(datetime(2012, 1, 1)),
                   Event.before(datetime(2012, 2, 1)))
            .order_by(*Event.by_date()))
    assert [(e.t, e.name, e.user.name) for e in session.scalars(stmt)] == [
        (when("2012-01-01 00:00:00"), "visited site", "anon-2"),  # at the start: included
        (when("2012-01-10 08:00:00"), "visited site", "101"),
        (when("2012-01-15 09:30:00"), "visited site", "anon-3"),
        (when("2012-01-16 18:00:00"), "visited site", "anon-3"),
        (when("2012-01-23 11:00:00"), "visited site", "anon-4"),
    ]  # 2011-12-31 23:59:59 and 2012-02-01 00:00:00 (the end) are outside


def test_named_matches_exactly_and_unknown_names_match_nothing(session: Session) -> None:
    assert session.scalars(select(Event).where(Event.named("Visited Site"))).all() == []
    assert session.scalars(select(Event).where(Event.named("nope"))).all() == []
    assert len(session.scalars(select(Event).where(Event.named("signed up"))).all()) == 2


def test_properties_named_and_by_date(session: Session) -> None:
    stmt = select(Property).where(Property.named("plan")).order_by(*Property.by_date())
    assert [(p.t, p.user.name, p.value, p.event is None) for p in session.scalars(stmt)] == [
        (when("2012-01-03 10:00:00"), "101", "free", False),
        (when("2012-01-09 12:00:00"), "anon-2", "pro", False),
        (when("2012-01-20 00:00:00"), "101", "pro", True),  # a property set
    ]
    in_january = (select(Property.value)
                  .where(Property.named("referer"), Property.after(datetime(2012, 1, 1)),
                         Property.before(datetime(2012, 1, 16)))
                  .order_by(*Property.by_date()))
    assert session.scalars(in_january).all() == [HN, TWITTER, GOOGLE_ROOMS]


# -- relationships and instance helpers ------------------------------------------------------

def test_user_history_relationships_and_props(session: Session) -> None:
    user = session.scalars(select(User).where(User.named("101"))).one()
    assert [(e.t, e.name, e.origin_user.name) for e in user.events] == [
        (when("2011-12-31 23:59:59"), "visited site", "anon-1"),
        (when("2012-01-03 10:00:00"), "signed up", "anon-1"),
        (when("2012-01-10 08:00:00"), "visited site", "101"),
    ]
    assert [(p.name, p.value) for p in user.properties] == [
        ("referer", GOOGLE_FLATS), ("plan", "free"), ("referer", TWITTER), ("plan", "pro")]
    signed_up = user.events[1]
    assert signed_up.user is user and signed_up.prop("plan") == "free"
    assert signed_up.prop("referer") is None
    assert [p.event for p in signed_up.properties] == [signed_up]
    assert user.prop("plan") == "pro"  # "free" at sign-up, then "pro" in a later property set
    assert user.prop("referer") == TWITTER and user.prop("color") is None
    # An identity dealiased into 101 keeps its row, but its history is 101's.
    anon_1 = session.scalars(select(User).where(User.named("anon-1"))).one()
    assert anon_1.events == [] and anon_1.properties == []


def test_keys_and_aliases_models(session: Session) -> None:
    assert sorted(session.scalars(select(Key.string))) == [
        "plan", "referer", "signed up", "visited site"]
    aliases = session.scalars(select(Alias).order_by(Alias.name1, Alias.name2)).all()
    assert [(a.name1, a.name2, a.t) for a in aliases] == [
        ("101", "anon-1", when("2012-01-03 10:00:01")),
        ("101", "mobile-abc", when("2012-01-21 00:00:00")),
        ("anon-3", "bob@example.com", when("2012-01-16 18:00:05")),
    ]


def test_events_with_properties_one_column_each(session: Session) -> None:
    rows = session.execute(
        events_with_properties("referer", "plan").order_by(*Event.by_date())).mappings().all()
    assert [tuple(r.values())[1:] for r in rows] == [
        (when("2011-12-31 23:59:59"), "visited site", "101", GOOGLE_FLATS, None),
        (when("2012-01-01 00:00:00"), "visited site", "anon-2", HN, None),
        (when("2012-01-03 10:00:00"), "signed up", "101", None, "free"),
        (when("2012-01-09 12:00:00"), "signed up", "anon-2", None, "pro"),
        (when("2012-01-10 08:00:00"), "visited site", "101", TWITTER, None),
        (when("2012-01-15 09:30:00"), "visited site", "anon-3", GOOGLE_ROOMS, None),
        (when("2012-01-16 18:00:00"), "visited site", "anon-3", None, None),
        (when("2012-01-23 11:00:00"), "visited site", "anon-4", GOOGLE_ROOMS, None),
        (when("2012-02-01 00:00:00"), "visited site", "anon-2", GOOGLE_FLATS, None),
    ]
    assert list(rows[0].keys()) == ["event_id", "t", "event", "user", "referer", "plan"]
    assert {r["event_id"] for r in rows} == set(session.scalars(select(Event.id)))
    with_referer = events_with_properties("referer", inner=True).where(
        Event.named("visited site"), Event.before(datetime(2012, 1, 16)))
    assert [(r.user, r.referer) for r in session.execute(with_referer.order_by(Event.t))] == [
        ("101", GOOGLE_FLATS), ("anon-2", HN), ("101", TWITTER), ("anon-3", GOOGLE_ROOMS)]
    with pytest.raises(ValueError):
        events_with_properties("user")


# -- identities ------------------------------------------------------------------------------

def test_any_identity_lands_on_its_canonical_user(session: Session) -> None:
    expected = {
        "anon-1": "101",  # has rows of its own (re-pointed to 101)
        "mobile-abc": "101",  # seen only in an alias record: no rows to follow
        "101": "101",
        "bob@example.com": "anon-3",
        "anon-3": "anon-3",
        "anon-4": "anon-4",
    }
    for identity, canonical in expected.items():
        assert canonical_name(session, identity) == canonical
        user = canonical_user(session, identity)
        assert user is not None and user.name == canonical
    assert canonical_name(session, "nobody") is None and canonical_user(session, "nobody") is None
    bob = canonical_user(session, "bob@example.com")
    assert bob is not None and [(e.t, e.origin_user.name) for e in bob.events] == [
        (when("2012-01-15 09:30:00"), "anon-3"), (when("2012-01-16 18:00:00"), "bob@example.com")]


def test_canonical_user_applies_the_numeric_rules(database: Database, tmp_path: Path) -> None:
    """x~5, 5~y, y~3: numerics never merge groups, so x's canonical is 5 and y's is 3; 5 and 7
    (numeric~numeric) stay themselves."""
    import_export(database, tmp_path / "export", {1: [
        {"_p": "x", "_p2": "5", "_t": 10}, {"_p": "5", "_p2": "y", "_t": 11},
        {"_p": "y", "_p2": "3", "_t": 12}, {"_p": "5", "_p2": "7", "_t": 13},
        {"_p": "z", "_p2": "y", "_t": 14}]})
    engine = open_engine(database.url)
    try:
        with Session(engine) as s:
            assert {name: canonical_name(s, name) for name in ("x", "y", "z", "5", "3", "7")} == {
                "x": "5", "y": "3", "z": "3", "5": "5", "3": "3", "7": "7"}
    finally:
        engine.dispose()


# -- connecting ------------------------------------------------------------------------------

def test_open_engine_defaults_to_the_importers_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert str(open_engine().url) == "sqlite:///kmdb.sqlite3"  # the embedded default
    monkeypatch.setenv("DATABASE_URL", "mysql://me@db.example/kmdb")
    assert str(open_engine().url) == "mysql+pymysql://me@db.example:3306/kmdb?charset=utf8mb4"


def test_sqlalchemy_url_from_database_url() -> None:
    url = sqlalchemy_url("mysql2://me:p%40ss@db.example:3307/kmdb")
    assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == (
        "mysql+pymysql", "me", "p@ss", "db.example", 3307, "kmdb")
    assert url.query == {"charset": "utf8mb4"}
    assert "p@ss" not in str(url)  # SQLAlchemy hides it too
    assert sqlalchemy_url("mysql://root@127.0.0.1/x").render_as_string(hide_password=False) == (
        "mysql+pymysql://root@127.0.0.1:3306/x?charset=utf8mb4")
    assert str(sqlalchemy_url("sqlite:////tmp/k.sqlite3")) == "sqlite:////tmp/k.sqlite3"
