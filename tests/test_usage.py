"""Exit codes and messages a user meets: bad usage exits 2 naming the option, messages name
what the user actually gave, an empty source says where it looked."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Database
from .test_cli import SECRET_PASSWORD, cli
from .test_import import export_files, write_dir

BAD_USAGE = 2


@pytest.mark.parametrize(("args", "env", "named", "said"), [
    (["partition", "--min-date", "2012-13-01", "--max-date", "2013-01-01"], {},
     "'--min-date'", "'2012-13-01' is not a date YYYY-MM-DD"),
    (["partition", "--max-date", "2013-02-30"], {"KMDB_MIN_DATE": "2012-01-01"},
     "'--max-date'", "'2013-02-30' is not a date YYYY-MM-DD"),
    (["partition", "--max-date", "2013-01-01"], {"KMDB_MIN_DATE": "soon"},
     "'KMDB_MIN_DATE'", "'soon' is not a date"),
    (["partition", "--min-date", "2012-01-01"], {}, "'--max-date'", "required"),
    (["partition", "--min-date", "2013-01-01", "--max-date", "2012-06-01"], {}, "'--max-date'",
     "2012-06-01 must be after --min-date 2013-01-01"),
    (["partition"], {"KMDB_MIN_DATE": "2013-01-01", "KMDB_MAX_DATE": "2013-01-01"},
     "'KMDB_MAX_DATE'", "2013-01-01 must be after KMDB_MIN_DATE 2013-01-01"),
    (["import", "DIR", "--database-url", f"postgres://u:{SECRET_PASSWORD}@h/db"], {},
     "'--database-url'", "postgres://u:***@h/db must start with mysql://"),
    (["stats"], {"DATABASE_URL": "mysql://root@127.0.0.1/"}, "'DATABASE_URL'",
     "must name a database"),
    (["flush", "--yes", "--database-url", "sqlite:relative"], {}, "'--database-url'",
     "must look like sqlite:///path/to/file"),
    (["status", "DIR"], {"KMDB_REDIS_URL": "redis://127.0.0.1/cache"}, "'KMDB_REDIS_URL'",
     "the path must be a database number"),
    (["import", "DIR", "--database-url", "mysql://root@127.0.0.1:99999/x"], {},
     "'--database-url'", "has an invalid port"),
    (["import"], {}, "SOURCE / --source", "no source: pass SOURCE or --source"),
    (["import", "s3://"], {}, "SOURCE", "does not name an S3 bucket"),
    (["import", "ftp://host/export"], {}, "SOURCE", "is not supported"),
    (["import", "DIR", "--batch-size", "0"], {}, "'--batch-size'", "Invalid value"),  # typer words it
    (["ignore-user", "add", "x" * 300], {}, "", "longer than 255 characters"),
])
def test_invalid_values_are_bad_usage(tmp_path: Path, args: list[str], env: dict[str, str],
                                      named: str, said: str) -> None:
    """Each exits 2 with click's "Invalid value for ..." naming the option (and its variable),
    before anything runs: no database is created, no password shown."""
    source = write_dir(tmp_path / "export", export_files())
    done = cli(*[source if a == "DIR" else a for a in args], cwd=tmp_path,
               **{"DATABASE_URL": f"sqlite:///{tmp_path / 'k.sqlite3'}", **env})
    assert done.returncode == BAD_USAGE, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert named in message and said in message, message
    assert "Traceback" not in done.stderr and SECRET_PASSWORD not in done.stderr
    assert not (tmp_path / "k.sqlite3").exists()


def test_an_ignored_min_date_is_named_as_the_user_gave_it(database: Database,
                                                          tmp_path: Path) -> None:
    env = {"DATABASE_URL": database.url}
    first = cli("partition", "--min-date", "2012-01-01", "--max-date", "2012-02-01", **env)
    assert first.returncode == 0, first.stderr
    as_option = cli("partition", "--min-date", "2011-06-01", "--max-date", "2012-03-01", **env)
    assert as_option.returncode == 0, as_option.stderr
    assert "--min-date is ignored" in as_option.stdout and "KMDB_MIN_DATE" not in as_option.stdout
    as_variable = cli("partition", "--max-date", "2012-03-01", KMDB_MIN_DATE="2011-06-01", **env)
    assert as_variable.returncode == 0, as_variable.stderr
    assert "KMDB_MIN_DATE is ignored" in as_variable.stdout and "--min-date" not in as_variable.stdout


def test_a_source_without_revisions_says_where_it_looked(tmp_path: Path) -> None:
    """Exit 0 (cron on a new, still empty bucket is no failure), with a warning that says
    where revisions were looked for, and which subdirectory holds some."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'k.sqlite3'}"}
    done = cli("import", str(empty), cwd=tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert "imported 0 revisions" in done.stdout
    assert (f"kmdb-async: warning: no revisions/N.json found under {empty} (looked for "
            f"{empty}/revisions/N.json); nothing to import") in done.stderr

    write_dir(tmp_path / "parent" / "export", export_files())
    parent = cli("import", str(tmp_path / "parent"), cwd=tmp_path, **env)
    assert parent.returncode == 0, parent.stderr
    assert f"no revisions/N.json found under {tmp_path / 'parent'}" in parent.stderr
    assert f"did you mean {tmp_path / 'parent' / 'export'}?" in parent.stderr

    source = write_dir(tmp_path / "export", export_files())
    cli("import", source, cwd=tmp_path, **env)
    nothing_new = cli("import", source, cwd=tmp_path, **env)  # revisions found, all imported
    assert nothing_new.returncode == 0 and "imported 0 revisions" in nothing_new.stdout
    assert "warning" not in nothing_new.stderr
