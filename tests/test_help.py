"""`--help` as a new user reads it: in a pipe or a small terminal, 80 columns."""

import re

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from stampcheck.cli import app

COMMANDS = sorted(get_command(app).commands)


def help_text(*args: str) -> str:
    r = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "80"}, prog_name="stampcheck")
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_reads_well_at_80_columns(command):
    text = help_text(*filter(None, [command]))
    long = [line for line in text.splitlines() if len(line) > 80]
    assert not long, long
    assert not re.search(r"<bool>|\{[a-z_]+\}|…", text), text  # placeholders a user cannot type
    options = text.split("Options:")[1] if "Options:" in text else ""
    assert "<list[" not in options and "<float,float>" not in options, options  # what a repeated option takes
    for line in options.splitlines():
        m = re.match(r"  (-\S+(?:, -\S+)?(?: [A-Z<][^ ]*(?: [A-Z]+)?)?)\s{2,}(.*)", line)
        if m:  # each option says what it does, not only its default or range
            assert m.group(2) and not m.group(2).startswith("["), line


def test_the_command_list_gives_each_command_whole():
    listed = help_text().split("Commands:")[1].strip().splitlines()
    assert sorted(line.split()[0] for line in listed) == COMMANDS
    assert not [line for line in listed if line.endswith("...")], listed
