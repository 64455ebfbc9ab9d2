"""`--help` of every command and subcommand works and states every option and its default.

The commands are found by walking the CLI's command tree, so a new command or option is
covered without touching this file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer

from kmdb_async.cli import app

from .test_cli import cli


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of the tree under ``command`` (groups included), with its words."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


TREE = list(commands(typer.main.get_command(app)))


def test_the_tree_has_every_command() -> None:
    names = {" ".join(path) for path, _ in TREE}
    assert {"import", "flush", "stats", "status", "partition", "ignore-user add",
            "whitelist-event list", "blacklist-property remove"} <= names


def expected_default(option: Any) -> str | None:
    """The default text an option's help must show, or None when the help writes its own
    ``[default: ...]`` (a default that is not a value: derived, or off)."""
    if option.show_default is False or option.default is None:
        return None
    if option.is_flag and option.secondary_opts:  # --bulk-load/--no-bulk-load
        return (option.opts if option.default else option.secondary_opts)[0].lstrip("-")
    return str(option.default)


def entry_start(text: str, name: str) -> int:
    """Where the help line of option ``name`` starts."""
    found = re.search(rf"^ +{re.escape(name)}[ /]", text, flags=re.M)
    assert found, f"{name} is not listed"
    return found.start()


@pytest.mark.parametrize("path", [path for path, _ in TREE], ids=lambda p: " ".join(p) or "-")
def test_help_works_and_states_every_option_and_default(path: tuple[str, ...]) -> None:
    command = dict(TREE)[path]
    done = cli(*path, "--help", COLUMNS="200")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and done.stderr == ""
    text = done.stdout
    assert text.startswith(f"Usage: kmdb-async {' '.join(path)}".rstrip())
    options = [p for p in command.params if p.param_type_name == "option" and p.name != "help"]
    # One entry per option: from its name to the next option's name (help texts wrap).
    starts = sorted((entry_start(text, p.opts[0]), p) for p in options)
    for i, (start, option) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else entry_start(text, "--help")
        entry = " ".join(text[start:end].split())  # unwrapped
        for name in option.opts + option.secondary_opts:
            assert name in entry
        assert re.search(r"default: \S", entry), f"{option.opts[0]} states no default: {entry}"
        default = expected_default(option)
        if default is not None:  # (click may wrap inside a value, at a hyphen)
            assert f"default:{default}".replace(" ", "") in "".join(entry.split()), entry
        if option.envvar:
            assert option.envvar in entry, f"{option.opts[0]} does not name {option.envvar}"


def test_markup_like_text_is_shown_as_written() -> None:
    """`s3://bucket[/prefix]` and `[default: ...]` in help texts are text, not rich tags."""
    text = " ".join(cli("import", "--help", COLUMNS="200").stdout.split())
    assert "s3://bucket[/prefix]" in text
    assert "[default: kmdb:HOST:PORT:DB, or kmdb:sqlite:PATH]" in text
    assert "[default: sqlite:///kmdb.sqlite3]" in text
