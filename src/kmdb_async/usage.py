"""Bad usage (exit 2): values wrong in themselves, judged before anything runs.

A value can be wrong whatever the servers say: a date that is not ``YYYY-MM-DD``, a URL of the
wrong kind, no source at all. Such a value, given as an option or as its variable, makes the
command exit 2 with click's ``Invalid value for '--option' (env var: 'VARIABLE')``, before it
opens a database or a source; what only a server can judge (access, a missing bucket) is a
failed run (exit 1) instead.
"""

from __future__ import annotations

from datetime import date

import typer

from .errors import TerminalError
from .settings import InvalidSetting, Settings, scrub
from .sources import check_location


def valid_date(value: str | None) -> str | None:
    """A ``YYYY-MM-DD`` option value, checked while parsing (a bad one is bad usage)."""
    if value is not None:
        try:
            date.fromisoformat(value.strip())
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a date YYYY-MM-DD") from None
    return value


def given_as(ctx: typer.Context, name: str, option: str, envvar: str) -> str:
    """How the user gave the parameter ``name``: its ``option`` or its ``envvar``."""
    source = ctx.get_parameter_source(name)
    return envvar if source is not None and source.name == "ENVIRONMENT" else option


OPTIONS = {  # variable -> the option (or argument) that sets it too, for messages
    "DATABASE_URL": "--database-url", "KMDB_REDIS_URL": "--redis-url",
    "KMDB_SOURCE": "SOURCE / --source", "KMDB_MIN_DATE": "--min-date",
    "KMDB_MAX_DATE": "--max-date",
}


def bad_usage(e: InvalidSetting, settings: Settings) -> typer.BadParameter:
    """``e`` as bad usage (exit 2), naming both ways of giving the value, with every form of
    a secret of ``settings`` scrubbed (the URLs in it are redacted already)."""
    option = OPTIONS.get(e.setting)
    hint = f"'{option}' (env var: '{e.setting}')" if option else f"'{e.setting}'"
    return typer.BadParameter(scrub(e.problem, settings.secrets()), param_hint=hint)


def checked(settings: Settings, source: bool = False) -> Settings:
    """``settings`` once every value that can be judged alone is valid (else exit 2)."""
    try:
        settings.database_label()
        settings.redis()
        if source:
            check_location(settings.source_location())
    except InvalidSetting as e:
        raise bad_usage(e, settings) from None
    except TerminalError as e:  # no source at all
        raise typer.BadParameter(str(e), param_hint=f"'{OPTIONS['KMDB_SOURCE']}'") from None
    return settings


def partition_dates(ctx: typer.Context, min_date: str | None, max_date: str | None) -> str:
    """Check that the max date is given, and after the min date when both are; returns how
    the min date was given (``--min-date`` or ``KMDB_MIN_DATE``), for messages."""
    min_as = given_as(ctx, "min_date", "--min-date", "KMDB_MIN_DATE")
    if max_date is None:
        raise typer.BadParameter("required: partitions reach up to it",
                                 param_hint="'--max-date' (env var: 'KMDB_MAX_DATE')")
    if min_date is not None and date.fromisoformat(max_date.strip()) <= date.fromisoformat(
            min_date.strip()):
        max_as = given_as(ctx, "max_date", "--max-date", "KMDB_MAX_DATE")
        raise typer.BadParameter(f"{max_date} must be after {min_as} {min_date}",
                                 param_hint=f"'{max_as}'")
    return min_as
