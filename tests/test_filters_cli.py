"""`kmdb-async ignore-user|whitelist-event|blacklist-property add|remove|list` on real databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kmdb_async.cli import app

from .conftest import REDIS, Database, database_exists
from .test_cli import cli
from .test_import import export_files, write_dir

COMMANDS = {"ignore-user": "ignored_users", "whitelist-event": "whitelisted_events",
            "blacklist-property": "blacklisted_properties"}


def run(*args: str, **env: str) -> Any:
    """The command in-process (quick), with exactly ``env`` as its configuration."""
    return CliRunner().invoke(app, list(args), env={"DATABASE_URL": None, **env})


@pytest.mark.parametrize("kind", ["mariadb", "sqlite"])
def test_add_remove_list_act_on_the_filter_tables(make_database: Any, kind: str) -> None:
    database = make_database(kind)
    for command, table in COMMANDS.items():
        added = run(command, "add", "Signed Up", "signed up ", "café 🎉", DATABASE_URL=database.url)
        assert added.exit_code == 0, added.output
        assert f"{table}: added 3 of 3" in added.output
        again = run(command, "add", "Signed Up", "new", DATABASE_URL=database.url)
        assert again.exit_code == 0 and f"{table}: added 1 of 2: new" in again.output  # no-op
        assert sorted(database.query(f"SELECT name FROM `{table}`")) == [
            ("Signed Up",), ("café 🎉",), ("new",), ("signed up ",)]

        removed = run(command, "remove", "new", "absent", DATABASE_URL=database.url)
        assert removed.exit_code == 0 and f"{table}: removed 1 of 2: new" in removed.output
        listed = run(command, "list", DATABASE_URL=database.url)
        assert listed.exit_code == 0
        assert listed.output.splitlines() == ["Signed Up", "café 🎉", "signed up "]


def test_names_are_checked_and_required(database: Database, tmp_path: Path) -> None:
    too_long = cli("ignore-user", "add", "x" * 256, cwd=tmp_path, DATABASE_URL=database.url)
    assert too_long.returncode == 2
    assert "longer than 255 characters" in " ".join(too_long.stderr.replace("│", " ").split())
    assert cli("ignore-user", "add", cwd=tmp_path, DATABASE_URL=database.url).returncode == 2
    assert cli("ignore-user", "add", "x" * 255, cwd=tmp_path,
               DATABASE_URL=database.url).returncode == 0


def test_list_on_a_missing_database_changes_nothing(make_database: Any, tmp_path: Path) -> None:
    database = make_database()
    listed = cli("whitelist-event", "list", cwd=tmp_path, DATABASE_URL=database.url)
    assert listed.returncode == 1 and "does not exist" in listed.stderr
    assert not database_exists(database.name)


def test_filters_apply_to_what_is_imported_after_they_change(
        database: Database, tmp_path: Path, redis_prefix: str) -> None:
    files = export_files()
    source = write_dir(tmp_path / "export", {"revisions/1.json": files["revisions/1.json"]})
    env = {"DATABASE_URL": database.url, "KMDB_REDIS_URL": REDIS, "KMDB_REDIS_PREFIX": redis_prefix}
    assert run("ignore-user", "add", "admin", **env).exit_code == 0
    assert run("blacklist-property", "add", "secret", **env).exit_code == 0
    assert run("whitelist-event", "add", "Signed Up", "visit", **env).exit_code == 0
    first = cli("import", source, cwd=tmp_path, **env)
    assert first.returncode == 0, first.stderr
    users = {name for (name,) in database.query("SELECT name FROM users")}
    assert "admin" not in users
    names = {s for (s,) in database.query("SELECT string FROM `keys`")}
    assert "secret" not in names and "noise" not in names

    # Changing the filters leaves what was imported as it is and applies to the next lines.
    assert run("ignore-user", "remove", "admin", **env).exit_code == 0
    write_dir(tmp_path / "export", {"revisions/2.json": b'{"_n":"visit","_p":"admin","_t":5}\n'})
    assert cli("import", source, cwd=tmp_path, **env).returncode == 0
    assert database.query("SELECT COUNT(*) FROM events e JOIN users u ON u.id = e.origin_user_id "
                          "WHERE u.name = 'admin'") == [(1,)]
    assert "noise" not in {s for (s,) in database.query("SELECT string FROM `keys`")}
