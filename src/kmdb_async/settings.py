"""One frozen settings object: environment, ``.env`` and CLI options. Every limit lives here."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

from .errors import TerminalError

DEFAULT_PORTS = {"mysql": 3306, "redis": 6379}
NO_SOURCE = ("no source: pass SOURCE or --source (a directory or s3://bucket[/prefix]), or set "
             "KMDB_SOURCE or AWS_BUCKET")
DEFAULT_PROGRESS_INTERVAL = 5.0  # seconds between progress log lines when not on a terminal
DEFAULT_NETWORK_TIMEOUT = 30.0  # seconds a server may stay silent when an answer is due
DEFAULT_RETRY_ATTEMPTS = 6  # tries of one failing network operation
SQLITE = "sqlite:///"
DEFAULT_DATABASE = SQLITE + "kmdb.sqlite3"  # the embedded default, in the working directory


class InvalidSetting(TerminalError):
    """A value that is wrong in itself, whatever the servers say (bad usage: the CLI exits 2).

    ``setting`` names its variable (``DATABASE_URL``); ``problem`` says what is wrong, without
    the name, so the CLI can name the option or variable the user actually gave.
    """

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting} {problem}")
        self.setting = setting
        self.problem = problem


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed ``mysql://user:pass@host:port/db`` (km-db's ``mysql2://`` accepted)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str

    @classmethod
    def parse(cls, url: str) -> DatabaseURL:
        parts = _split(url, ("mysql", "mysql2", "mariadb", "mysql+aiomysql"), "DATABASE_URL")
        database = parts.path.lstrip("/")
        if not database or "/" in database:
            raise InvalidSetting("DATABASE_URL", f"{redact(url)} must name a database: "
                                 "mysql://user:pass@host/db")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=_port(parts, "mysql", "DATABASE_URL", url),
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=unquote(database),
        )

    def __str__(self) -> str:
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"


@dataclass(frozen=True)
class RedisURL:
    """A parsed ``redis://[:pass@]host[:port][/db]``."""

    host: str
    port: int
    db: int
    password: str | None = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> RedisURL:
        parts = _split(url, ("redis",), "KMDB_REDIS_URL")
        path = parts.path.lstrip("/")
        if path and not path.isdigit():
            raise InvalidSetting("KMDB_REDIS_URL", f"{redact(url)}: the path must be a database number")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=_port(parts, "redis", "KMDB_REDIS_URL", url),
            db=int(path or 0),
            password=unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"


def _split(url: str, schemes: tuple[str, ...], name: str):  # type: ignore[no-untyped-def]
    """``urlsplit`` of ``scheme://…``. Everything between ``//`` and the last ``@`` is the
    user and password, so a password may hold ``@``, ``:``, ``/``, ``?`` or ``#`` as typed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in schemes:
        raise InvalidSetting(name, f"{redact(url)} must start with {schemes[0]}://")
    at = rest.rfind("@")
    if at >= 0:  # escaped, the userinfo cannot end the host early (it is unquoted later)
        rest = re.sub(r"[/?#@]", lambda m: f"%{ord(m.group()):02X}", rest[:at]) + rest[at:]
    try:
        return urlsplit(f"{scheme.lower()}://{rest}")
    except ValueError:
        raise InvalidSetting(name, f"is not a valid URL: {redact(url)}") from None


def _port(parts, scheme: str, name: str, url: str) -> int:  # type: ignore[no-untyped-def]
    try:
        return parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise InvalidSetting(name, f"{redact(url)} has an invalid port") from None


def _password_span(url: str) -> tuple[int, int] | None:
    """Where the password of a URL-like string lies, ``url[start:end]``, whatever its shape
    (malformed ones too): after the first ``:`` between its first ``//`` (its start when it
    has none) and its last ``@``. Without an ``@``, a port that is not a number is taken for
    a password whose ``@`` is missing (``mysql://user:secret/db``)."""
    at = url.rfind("@")
    slashes = url.find("//")
    if at >= 0:
        colon = url.find(":", slashes + 2 if 0 <= slashes < at else 0, at)
        return (colon + 1, at) if 0 <= colon < at - 1 else None
    if slashes < 0:
        return None
    end = min([i for i in (url.find(c, slashes + 2) for c in "/?#") if i >= 0], default=len(url))
    colon = url.rfind(":", slashes + 2, end)
    port = url[colon + 1:end]
    return (colon + 1, end) if colon >= 0 and port and not port.isdigit() and "]" not in port else None


def url_password(url: str) -> str | None:
    """The password of a URL-like string as written (still percent-encoded), or None."""
    span = _password_span(url)
    return url[span[0]:span[1]] if span else None


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for messages and logs), whatever
    its shape: a malformed URL loses what looks like its password too."""
    span = _password_span(url)
    return f"{url[:span[0]]}***{url[span[1]:]}" if span else url


PIECE = 4  # characters: a piece of a password at least this long is scrubbed on its own


def secret_forms(secret: str) -> set[str]:
    """Every form of ``secret`` a message may carry: as written, percent-decoded, encoded
    (upper- and lower-case escapes, ``+`` for spaces), and its pieces between URL
    delimiters (a URL parsed the wrong way shows a password cut there)."""
    forms = {secret, unquote(secret), unquote_plus(secret)}
    for plain in list(forms):
        for encoded in (quote(plain, safe=""), quote_plus(plain, safe="")):
            forms |= {encoded, re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), encoded)}
        forms |= {piece for piece in re.split(r"[/?#@:%+ ]", plain) if len(piece) >= PIECE}
    return {form for form in forms if form}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***`` (longest first, so a form
    that holds another goes whole)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class Settings:
    """Everything one command needs; built once by the CLI."""

    database_url: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str | None = None  # Redis key prefix; default derived from the database
    source: str | None = None
    s3_endpoint_url: str | None = field(default=None, repr=False)
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_region: str = "us-east-1"
    min_revision: int = 1
    revision_lookahead: int = 10  # revisions probed past the last known one when S3 cannot list
    batch_size: int = 1000  # records per batch (advisory: whole seconds are kept together)
    files_in_flight: int = 4  # revisions streamed and decoded concurrently
    writers: int = 4  # database connections writing batches concurrently
    queue_depth: int = 16  # batches buffered between stages (backpressure bound)
    user_cache_size: int = 300_000  # identities whose users.id is cached in memory (at most)
    alias_cache_size: int = 100_000  # aliased identities whose groups are held in memory
    bulk_load: bool = True  # a first import into empty MariaDB tables streams LOAD DATA
    slice_mib: float = 1024  # MiB of export a first import larger than it commits at a time
    rejects: Path | None = None  # JSON-lines file receiving rejected lines
    strict: bool = False  # stop at the first rejected line
    retry_attempts: int = DEFAULT_RETRY_ATTEMPTS  # tries of one transient operation
    retry_max_wait: float = 10.0  # seconds, cap of the exponential backoff between tries
    # Seconds a network service may stay silent when an answer is due: a connection (TCP and
    # login), a Redis command, an S3 response or body chunk. A MariaDB statement that passes it
    # is not cut while the server, asked on a new connection, says it still runs it.
    network_timeout: float = DEFAULT_NETWORK_TIMEOUT
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL  # seconds; 0: no progress log lines
    min_date: str | None = None  # YYYY-MM-DD: first day of the first time partition
    max_date: str | None = None  # YYYY-MM-DD: time partitions reach at least this day
    days_per_partition: int = 7  # days of one time partition

    @property
    def slice_bytes(self) -> int:
        return int(self.slice_mib * (1 << 20))

    def database_location(self) -> str:
        """DATABASE_URL, or the embedded default ``sqlite:///kmdb.sqlite3``."""
        return self.database_url or DEFAULT_DATABASE

    def sqlite_path(self) -> Path | None:
        """The embedded database's file (``sqlite:///rel`` or ``sqlite:////abs``), else None."""
        location = self.database_location()
        if not location.startswith("sqlite:"):
            return None
        if not location.startswith(SQLITE) or len(location) == len(SQLITE):
            raise InvalidSetting("DATABASE_URL",
                                 f"{redact(location)} must look like sqlite:///path/to/file")
        return Path(location[len(SQLITE):])

    def database(self) -> DatabaseURL:
        """The MariaDB/MySQL server of DATABASE_URL."""
        return DatabaseURL.parse(self.database_location())

    def database_label(self) -> str:
        """The database as shown to the user (never with its password)."""
        path = self.sqlite_path()
        return f"{SQLITE}{path}" if path is not None else str(self.database())

    def redis(self) -> RedisURL | None:
        return RedisURL.parse(self.redis_url) if self.redis_url else None

    def source_location(self) -> str:
        if self.source:
            return self.source
        bucket = os.environ.get("AWS_BUCKET")
        if bucket:
            return bucket if bucket.startswith("s3://") else f"s3://{bucket}"
        raise TerminalError(NO_SOURCE)

    def key_prefix(self) -> str:
        """Redis key prefix of this database: two databases sharing a Redis never collide."""
        if self.redis_prefix:
            return self.redis_prefix
        path = self.sqlite_path()
        if path is not None:
            return f"kmdb:sqlite:{path.resolve()}"
        db = self.database()
        return f"kmdb:{db.host}:{db.port}:{db.database}"

    def secrets(self) -> set[str]:
        """Strings that must never appear in output (for the final scrubbing of messages):
        the AWS keys and the password of every URL, in each of their forms."""
        found = {self.aws_secret_access_key, self.aws_access_key_id}
        for url in (self.database_url, self.redis_url, self.s3_endpoint_url,
                    self.source or os.environ.get("AWS_BUCKET")):
            found.add(url_password(url) if url else None)
        return {form for secret in found if secret for form in secret_forms(secret)}


def load_dotenv(path: Path = Path(".env")) -> None:
    """Read ``KEY=VALUE`` lines of ``.env`` into the environment; real variables win."""
    if not path.is_file():
        return
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ.setdefault(key.strip(), value)
