"""Query the imported history from Python: SQLAlchemy 2 models of km-db's tables and its scopes.

Install with ``pip install kmdb-async[query]`` (the importer itself does not need SQLAlchemy).

    Key       keys        interned event names and property keys
    User      users       one row per identity; ``events`` / ``properties`` are its canonical history
    Event     events      ``name`` (through keys), ``user`` (canonical), ``origin_user``, ``properties``
    Property  properties  ``name`` (through keys), ``value``, ``event`` (None for property sets)
    Alias     aliases     each alias pair once, preferred name first

km-db's scopes are SQL expressions to put in ``where()`` / ``order_by()``: ``Event.named(name)``,
``Event.after(t)`` (``t >= …``), ``Event.before(t)`` (``t < …``), ``Event.by_date()``, the same
on ``Property``; ``event.prop(name)``, ``user.prop(name)`` (its latest value), and
``events_with_properties(*names)`` (one LEFT JOIN per property: rows for a DataFrame).
``canonical_user(session, identity)`` lands on the user whose history holds any raw identity.

The models only read: they are mapped on the importer's tables and never create or alter them
(``Base.metadata`` holds the same tables, for an empty test database). Times are naive UTC
``datetime`` objects. The SQL is portable (MariaDB/MySQL and SQLite); ``keys`` and ``key`` are
quoted by SQLAlchemy.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    ForeignKey,
    Integer,
    ScalarSelect,
    Select,
    String,
    Text,
    UnaryExpression,
    create_engine,
    make_url,
    or_,
    select,
)
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    aliased,
    column_property,
    mapped_column,
    object_session,
    relationship,
)
from sqlalchemy.sql.elements import quoted_name

from .errors import TerminalError
from .identity import AliasGraph, is_numeric
from .settings import DEFAULT_DATABASE, DatabaseURL, redact
from .store.schema import ALIASES, EVENTS, KEYS, PROPERTIES, USERS

__all__ = [
    "Alias", "Base", "Event", "Key", "Property", "User", "canonical_name", "canonical_user",
    "events_with_properties", "key_id", "latest_value", "open_engine", "open_session",
    "sqlalchemy_url",
]

# SQLite keeps DATETIME as text; store and compare it as the importer writes it (no
# microseconds), or '… 00:00:00' < '… 00:00:00.000000' would break half-open date ranges.
_SQLITE_TIME = SQLITE_DATETIME(  # type: ignore[no-untyped-call]
    storage_format="%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d")
Time = DateTime().with_variant(_SQLITE_TIME, "sqlite")
# SQLite only auto-numbers an INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")
Name = String(255)


class Base(DeclarativeBase):
    """The declarative base of the importer's tables."""


class Key(Base):
    """An interned event name or property key (``keys``)."""

    __tablename__ = quoted_name(KEYS, True)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    string: Mapped[str] = mapped_column(Name, unique=True)

    def __repr__(self) -> str:
        return f"<Key {self.id} {self.string!r}>"


def key_id(name: str) -> ScalarSelect[int]:
    """``keys.id`` of ``name`` as a subquery (NULL when no event or property has that name)."""
    return select(Key.id).where(Key.string == name).scalar_subquery()


def _name_of(column: Any) -> Any:
    """The ``keys.string`` of an id column, loaded with the row (a correlated subquery)."""
    return column_property(
        select(Key.string).where(Key.id == column).correlate_except(Key).scalar_subquery())


class User(Base):
    """One identity (``users``). ``events`` and ``properties`` are its canonical history: empty
    for an identity whose records were moved to another canonical identity by dealiasing."""

    __tablename__ = USERS

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(Name, unique=True)

    events: Mapped[list[Event]] = relationship(
        foreign_keys=lambda: [Event.user_id], back_populates="user", viewonly=True,
        order_by=lambda: (Event.t, Event.id))
    properties: Mapped[list[Property]] = relationship(
        foreign_keys=lambda: [Property.user_id], back_populates="user", viewonly=True,
        order_by=lambda: (Property.t, Property.id))

    @classmethod
    def named(cls, name: str) -> ColumnElement[bool]:
        """The users row of exactly this identity (not its canonical one: see canonical_user)."""
        return cls.name == name

    def prop(self, name: str) -> str | None:
        """The latest value of this user's property ``name`` (None when never set)."""
        return latest_value(_session_of(self), self, name)

    def __repr__(self) -> str:
        return f"<User {self.name!r}>"


class TimeScopes:
    """km-db's time scopes, shared by events and properties (both have ``t`` and ``id``)."""

    if TYPE_CHECKING:  # mapped by each model itself
        t: Mapped[datetime]
        id: Mapped[int]

    @classmethod
    def after(cls, t: datetime) -> ColumnElement[bool]:
        """Rows at ``t`` or later (UTC)."""
        return cls.t >= t

    @classmethod
    def before(cls, t: datetime) -> ColumnElement[bool]:
        """Rows strictly before ``t`` (UTC): ``after(a), before(b)`` is the range [a, b)."""
        return cls.t < t

    @classmethod
    def by_date(cls) -> tuple[UnaryExpression[datetime], UnaryExpression[int]]:
        """Order by time, then by id (the order of the lines in the export)."""
        return cls.t.asc(), cls.id.asc()


class Event(TimeScopes, Base):
    """One imported event (``events``); ``user`` is the canonical identity's row, ``origin_user``
    the row of the record's own ``_p``."""

    __tablename__ = EVENTS

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=False)
    t: Mapped[datetime] = mapped_column(Time)
    n: Mapped[int] = mapped_column(ForeignKey(f"{KEYS}.id"))
    user_id: Mapped[int] = mapped_column(Id, ForeignKey(f"{USERS}.id"))
    origin_user_id: Mapped[int] = mapped_column(Id, ForeignKey(f"{USERS}.id"))

    name: Mapped[str] = _name_of(n)
    user: Mapped[User] = relationship(foreign_keys=[user_id], back_populates="events",
                                      viewonly=True)
    origin_user: Mapped[User] = relationship(foreign_keys=[origin_user_id], viewonly=True)
    properties: Mapped[list[Property]] = relationship(
        back_populates="event", viewonly=True, order_by=lambda: Property.id)

    @classmethod
    def named(cls, name: str) -> ColumnElement[bool]:
        """Events named exactly ``name`` (km-db's ``named``)."""
        return cls.n == key_id(name)

    def prop(self, name: str) -> str | None:
        """The value of this event's property ``name`` (None when absent or JSON null)."""
        return next((p.value for p in self.properties if p.name == name), None)

    def __repr__(self) -> str:
        return f"<Event {self.name!r} at {self.t}>"


class Property(TimeScopes, Base):
    """One stored property (``properties``): of an event (``event``) or of a property-set record
    (``event`` None). ``key`` is the ``keys.id``; ``name`` the key's text."""

    __tablename__ = PROPERTIES

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=False)
    t: Mapped[datetime] = mapped_column(Time)
    user_id: Mapped[int] = mapped_column(Id, ForeignKey(f"{USERS}.id"))
    origin_user_id: Mapped[int] = mapped_column(Id, ForeignKey(f"{USERS}.id"))
    event_id: Mapped[int | None] = mapped_column(Id, ForeignKey(f"{EVENTS}.id"))
    key: Mapped[int] = mapped_column(quoted_name("key", True), ForeignKey(f"{KEYS}.id"))
    value: Mapped[str | None] = mapped_column(Text)

    name: Mapped[str] = _name_of(key)
    user: Mapped[User] = relationship(foreign_keys=[user_id], back_populates="properties",
                                      viewonly=True)
    origin_user: Mapped[User] = relationship(foreign_keys=[origin_user_id], viewonly=True)
    event: Mapped[Event | None] = relationship(back_populates="properties", viewonly=True)

    @classmethod
    def named(cls, name: str) -> ColumnElement[bool]:
        """Properties whose key is exactly ``name``."""
        return cls.key == key_id(name)

    def __repr__(self) -> str:
        return f"<Property {self.name!r}={self.value!r} at {self.t}>"


class Alias(Base):
    """One alias pair (``aliases``): ``name1`` the preferred name, ``t`` the earliest record."""

    __tablename__ = ALIASES

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name1: Mapped[str] = mapped_column(Name)
    name2: Mapped[str] = mapped_column(Name)
    t: Mapped[datetime] = mapped_column(Time)

    def __repr__(self) -> str:
        return f"<Alias {self.name1!r} ~ {self.name2!r}>"


# -- helpers ---------------------------------------------------------------------------------

def latest_value(session: Session, user: User, name: str) -> str | None:
    """The latest value of ``user``'s property ``name``: the row with the greatest ``t`` (then
    the last in the export), set by an event or a property set. None when never set."""
    return session.scalars(
        select(Property.value)
        .where(Property.user_id == user.id, Property.named(name))
        .order_by(Property.t.desc(), Property.id.desc())
        .limit(1)
    ).first()


FIXED_COLUMNS = ("event_id", "t", "event", "user")
Rows: TypeAlias = "Select[*tuple[Any, ...]]"  # a select of plain columns


def events_with_properties(*names: str, inner: bool = False) -> Rows:
    """Events with one column per property: ``event_id, t, event, user, <name>…``.

    One LEFT JOIN per property (an INNER JOIN with ``inner=True``: only events having them
    all); a missing property is None. ``user`` is the canonical identity's name. Refine it like
    any select: ``.where(Event.named("visit")).order_by(*Event.by_date())``; for pandas,
    ``pd.DataFrame(session.execute(stmt).mappings().all())``.
    """
    clash = set(names) & set(FIXED_COLUMNS)
    if clash or len(set(names)) != len(names):
        raise ValueError(f"property columns must be distinct and not one of {FIXED_COLUMNS}: {names}")
    owner = aliased(User, name="owner")
    stmt: Rows = select(Event.id.label("event_id"), Event.t, Event.name.label("event"),
                  owner.name.label("user")).join(owner, owner.id == Event.user_id)
    for i, name in enumerate(names):
        prop = aliased(Property, name=f"p{i}")
        on = (prop.event_id == Event.id) & (prop.key == key_id(name))
        stmt = stmt.join(prop, on, isouter=not inner).add_columns(prop.value.label(name))
    return stmt


# -- identities ------------------------------------------------------------------------------

def canonical_name(session: Session, identity: str) -> str | None:
    """The canonical identity of the raw identity ``identity``, or None when it is unknown.

    Recomputed from the ``aliases`` table with the importer's rules (SPEC section 3), reading
    only the identity's group: correct for every identity, also one with no events or
    properties of its own (an identity seen only in alias records).
    """
    known = session.scalar(select(User.id).where(User.name == identity))
    if known is None:
        return None
    if is_numeric(identity):
        return identity  # a numeric identity is its own canonical identity
    graph, seen, frontier = AliasGraph(), {identity}, [identity]
    while frontier:  # walk non-numeric links only: numerics never join groups
        rows = session.execute(
            select(Alias.name1, Alias.name2)
            .where(or_(Alias.name1.in_(frontier), Alias.name2.in_(frontier)))).all()
        frontier = []
        for a, b in rows:
            graph.link(a, b)
            for name in (a, b):
                if name not in seen and not is_numeric(name):
                    seen.add(name)
                    frontier.append(name)
    return graph.canonical(identity)


def canonical_user(session: Session, identity: str) -> User | None:
    """The users row holding the history of the raw identity ``identity`` (None if unknown)."""
    name = canonical_name(session, identity)
    if name is None:
        return None
    return session.scalars(select(User).where(User.name == name)).one()


# -- connecting ------------------------------------------------------------------------------

def sqlalchemy_url(url: str) -> URL:
    """SQLAlchemy's URL for a DATABASE_URL: ``mysql://`` (and km-db's ``mysql2://``,
    ``mariadb://``) become ``mysql+pymysql://…?charset=utf8mb4``; ``sqlite:///path`` and URLs
    naming a SQLAlchemy driver (``mysql+pymysql://``) are used as they are."""
    scheme = url.split(":", 1)[0]
    if scheme.startswith("sqlite") or (scheme.startswith("mysql+") and scheme != "mysql+aiomysql"):
        try:
            return make_url(url)
        except Exception:
            raise TerminalError(f"DATABASE_URL is not a valid URL: {redact(url)}") from None
    db = DatabaseURL.parse(url)
    return URL.create("mysql+pymysql", username=db.user, password=db.password or None,
                      host=db.host, port=db.port, database=db.database,
                      query={"charset": "utf8mb4"})


def open_engine(url: str | None = None, **options: Any) -> Engine:
    """An engine on ``url``; by default the importer's: DATABASE_URL, else the embedded
    ``sqlite:///kmdb.sqlite3`` in the working directory."""
    return create_engine(sqlalchemy_url(url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE),
                         **options)


def open_session(url: str | None = None, **options: Any) -> Session:
    """A session on ``url`` (default as ``open_engine``); close it when done (``with`` works)."""
    return Session(open_engine(url, **options))


def _session_of(row: Base) -> Session:
    session = object_session(row)
    if session is None:
        raise ValueError(f"{row!r} is not attached to a session")
    return session
