"""No form of a password reaches any output, whatever the shape of the URL that carries it.

Every command runs through the real CLI with ``KMDB_DEBUG=1`` (tracebacks of unexpected
errors shown), against the real servers, with the password of DATABASE_URL, KMDB_REDIS_URL,
the S3 endpoint or the source written in malformed URLs: a missing colon, a doubled ``@``,
a percent-encoded password, an unknown scheme, a password holding ``@ : / ? #`` as typed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from typer.testing import CliRunner

from kmdb_async.cli import app
from kmdb_async.settings import DatabaseURL, RedisURL, redact, secret_forms

from .conftest import MYSQL, REDIS
from .s3_server import S3Bucket
from .test_cli import cli
from .test_import import export_files, write_dir

# Pieces a parser that splits at a delimiter would show on their own ("partially").
PIECES = ["Xq7pwA", "Zr9pwB", "Wm3pwC", "Kp5pwD", "Jh2pwE", "Lb4pwF"]
PASSWORD = "Xq7pwA@Zr9pwB:Wm3pwC/Kp5pwD?Jh2pwE#Lb4pwF"
ENCODED = quote(PASSWORD, safe="")
MARIADB = MYSQL.split("@", 1)[-1]  # host:port of the test server
REDIS_AT = REDIS.removeprefix("redis://").split("/")[0]
MALFORMED = ("missing colon", "one slash", "unknown scheme", "bad port", "no @")
# Shapes of an s3:// source that are no s3:// URL at all: taken for a directory (missing, exit 1).
NOT_S3 = ("missing colon", "one slash")
BAD_USAGE = 2  # a URL wrong in itself: click's "Invalid value for ..." before anything runs
FAILED = 1  # a URL that parsed, refused by the server (or a source directory that is missing)


def shapes(scheme: str, at: str, path: str) -> dict[str, str]:
    """Malformed and well-formed URLs of ``scheme`` carrying PASSWORD, pointing at ``at``."""
    return {
        "missing colon": f"{scheme}//user:{PASSWORD}@{at}{path}",
        "one slash": f"{scheme}:/user:{PASSWORD}@{at}{path}",
        "doubled @": f"{scheme}://user:{PASSWORD}@@{at}{path}",
        "percent-encoded": f"{scheme}://user:{ENCODED}@{at}{path}",
        "unknown scheme": f"postgres://user:{PASSWORD}@{at}{path}",
        "as typed": f"{scheme}://user:{PASSWORD}@{at}{path}",
        "bad port": f"{scheme}://user:{PASSWORD}@{at.split(':')[0]}:port{path}",
        "no @": f"{scheme}://user:{PIECES[0]}{path}",
    }


def run(*args: str, **env: str | None) -> Any:
    """The command in-process, with exactly ``env`` as its configuration, tracebacks on."""
    clean = {"DATABASE_URL": None, "KMDB_REDIS_URL": None, "KMDB_SOURCE": None,
             "AWS_ENDPOINT_URL": None, "AWS_BUCKET": None, "KMDB_DEBUG": "1"}
    return CliRunner().invoke(app, list(args), env={**clean, **env})


def assert_ended(result: Any, code: int, named: str, what: str) -> None:
    """The command ended with ``code``: bad usage naming the setting ``named``, or a failed run."""
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == code, (what, output)
    if code == BAD_USAGE:
        assert "Invalid value for '" in output and f"'{named}'" in output, (what, output)
    else:
        assert "kmdb-async: error:" in output, (what, output)


def assert_clean(result: Any, what: str) -> None:
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exception is None or isinstance(result.exception, SystemExit), (what, output)
    for piece in PIECES:
        assert piece not in output, (what, output)


@pytest.fixture
def commands(tmp_path: Path) -> dict[str, list[str]]:
    """Every command, with what it needs to get as far as its URLs."""
    source = write_dir(tmp_path / "export", export_files())
    return {
        "import": ["import", source, "--retry-attempts", "1", "--rejects", str(tmp_path / "r")],
        "status": ["status", source],
        "flush": ["flush", "--yes"],
        "stats": ["stats"],
        "partition": ["partition", "--max-date", "2030-01-01"],
        "ignore-user add": ["ignore-user", "add", "someone"],
        "ignore-user list": ["ignore-user", "list"],
    }


def test_redact_masks_the_password_of_every_shape() -> None:
    for scheme, at in (("mysql", MARIADB), ("sqlite", "host"), ("redis", REDIS_AT),
                       ("http", "127.0.0.1:1"), ("s3", "bucket")):
        for shape, url in shapes(scheme, at, "/x").items():
            shown = redact(url)
            assert not [p for p in PIECES if p in shown], (shape, url, shown)
            assert "***" in shown, (shape, shown)  # the rest is still shown, to find the typo
    assert redact("mysql://root@127.0.0.1:3306/db") == "mysql://root@127.0.0.1:3306/db"
    assert redact("s3://bucket/some@prefix") == "s3://bucket/some@prefix"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_a_password_holding_delimiters_is_parsed_whole() -> None:
    for url in (f"mysql://user:{PASSWORD}@db.example:3307/kmdb",
                f"mysql://user:{ENCODED}@db.example:3307/kmdb"):
        parsed = DatabaseURL.parse(url)
        assert (parsed.user, parsed.password, parsed.host, parsed.port, parsed.database) == (
            "user", PASSWORD, "db.example", 3307, "kmdb")
    redis = RedisURL.parse(f"redis://:{PASSWORD}@cache:6380/2")
    assert (redis.password, redis.host, redis.port, redis.db) == (PASSWORD, "cache", 6380, 2)
    lower_escapes = ENCODED.replace("%3A", "%3a").replace("%2F", "%2f").replace("%3F", "%3f")
    assert {PASSWORD, ENCODED, lower_escapes, *PIECES} <= secret_forms(PASSWORD)


def test_database_url_of_any_shape_never_shows_its_password(
        commands: dict[str, list[str]], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    urls = {**shapes("mysql", MARIADB, "/kmdb_secrets"),
            **{f"sqlite {k}": v for k, v in shapes("sqlite", "host", "/x").items()}}
    for shape, url in urls.items():
        # Every sqlite shape here is no sqlite:///FILE; the mysql ones that parse reach the server.
        code = BAD_USAGE if shape in MALFORMED or shape.startswith("sqlite") else FAILED
        for name, args in commands.items():
            result = run(*args, DATABASE_URL=url)
            assert_ended(result, code, "DATABASE_URL", f"{shape}: {name}")
            assert_clean(result, f"{shape}: {name}")
    assert "must start with mysql://" in run("stats", DATABASE_URL=urls["missing colon"]).output
    denied = run("stats", DATABASE_URL=urls["percent-encoded"]).output
    assert "refused user 'user'" in denied  # the URL parsed: the server said no
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert not [p for p in PIECES if p in logged]


def test_redis_url_of_any_shape_never_shows_its_password(
        commands: dict[str, list[str]], tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'k.sqlite3'}"
    for shape, url in shapes("redis", REDIS_AT, "/0").items():
        for name in ("import", "status", "flush"):
            result = run(*commands[name], DATABASE_URL=database, KMDB_REDIS_URL=url)
            if shape in MALFORMED:  # the others reach Redis, which has no password to check
                assert_ended(result, BAD_USAGE, "KMDB_REDIS_URL", f"{shape}: {name}")
            assert_clean(result, f"{shape}: {name}")


def test_s3_endpoint_and_source_of_any_shape_never_show_their_password(
        commands: dict[str, list[str]], tmp_path: Path, s3_bucket: S3Bucket) -> None:
    database = f"sqlite:///{tmp_path / 'k.sqlite3'}"
    assert run("flush", "--yes", DATABASE_URL=database).exit_code == 0  # status reads it first
    endpoint = s3_bucket.endpoint_url.removeprefix("http://")
    keys = {"AWS_ACCESS_KEY_ID": "testing-access-key", "AWS_SECRET_ACCESS_KEY": "testing-secret-key"}
    for shape, url in shapes("http", endpoint, "").items():
        for name in ("import", "status"):
            args = [commands[name][0], s3_bucket.url, *commands[name][2:]]
            result = run(*args, DATABASE_URL=database, AWS_ENDPOINT_URL=url, **keys)
            assert result.exit_code == 1 and "s3://" in result.output, (shape, name, result.output)
            assert_clean(result, f"endpoint {shape}: {name}")
    for shape, url in shapes("s3", s3_bucket.bucket, "/prefix").items():
        for name in ("import", "status"):
            args = [commands[name][0], url, *commands[name][2:]]
            result = run(*args, DATABASE_URL=database, AWS_ENDPOINT_URL=s3_bucket.endpoint_url,
                         **keys)
            # An s3:// URL with credentials names no bucket (bad usage); the others are taken
            # for a directory, which is missing.
            code = FAILED if shape in NOT_S3 else BAD_USAGE
            assert_ended(result, code, "KMDB_SOURCE", f"source {shape}: {name}")
            assert_clean(result, f"source {shape}: {name}")


def test_a_bad_usage_message_loses_every_secret_too(tmp_path: Path) -> None:
    """A value wrong in itself (exit 2) is shown in click's message: a secret in it (here the
    S3 secret key, pasted as the source) is scrubbed there as in every other message."""
    secret = f"{PIECES[2]}+{PIECES[3]}"  # "+": no bucket name, so the source is bad usage
    database = f"sqlite:///{tmp_path / 'k.sqlite3'}"
    for args in (["import", f"s3://{secret}"], ["status", f"s3://{secret}/x"]):
        result = run(*args, DATABASE_URL=database, AWS_SECRET_ACCESS_KEY=secret)
        assert_ended(result, BAD_USAGE, "SOURCE / --source", " ".join(args))
        assert_clean(result, " ".join(args))


def test_the_issue_s_examples_in_a_real_process(tmp_path: Path) -> None:
    source = write_dir(tmp_path / "export", export_files())
    for url, secret in (("mysql//user:secret-Pw9@host", "secret-Pw9"),
                        ("sqlite://user:p%40ss-Pw9@host/x", "ss-Pw9")):
        for args in (["import", source], ["stats"], ["flush", "--yes"]):
            done = cli(*args, cwd=tmp_path, DATABASE_URL=url, KMDB_DEBUG="1")
            output = done.stdout + done.stderr
            assert done.returncode == BAD_USAGE, output
            assert "Invalid value for '--database-url' (env var: 'DATABASE_URL')" in output, output
            assert secret not in output and "Traceback" not in output, output


def test_a_bug_s_traceback_under_kmdb_debug_never_shows_a_password(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug whose exception (and the one it chains) carries the URL, as written and decoded.
    (The URL is well formed: a malformed one is bad usage, and the command never runs.)"""
    url = f"mysql://user:{ENCODED}@{MARIADB}/x"

    async def buggy(*_: Any) -> None:
        try:
            raise ValueError(f"inner {PASSWORD}")
        except ValueError as inner:
            raise RuntimeError(f"while reading {url}") from inner

    monkeypatch.setattr("kmdb_async.cli.read_stats", buggy)
    result = run("stats", DATABASE_URL=url)
    assert result.exit_code == 1 and "Traceback" in result.output
    assert "unexpected error: RuntimeError" in result.output
    assert_clean(result, "traceback")
    assert ENCODED not in result.output
