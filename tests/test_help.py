"""`--help` as a new user reads it: in a pipe or a small terminal, 80 columns."""

import re

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from stampcheck.app.cli import app

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


# Each command's options and the settings object that holds their defaults; an option of the same
# name must default to the object's value (stated once, there).
SETTINGS = {"compose": ("stampcheck.compose.composer", "ComposeConfig"), "train": ("stampcheck.train.config", "TrainConfig"),
            "pretrain": ("stampcheck.train.config", "PretrainConfig"), "crawl": ("stampcheck.crawler.config", "CrawlOptions")}
RENAMED = {"max": "max_num"}  # --max is CrawlOptions.max_num


@pytest.mark.parametrize("command", sorted(SETTINGS))
def test_every_default_is_the_settings_own(command):
    import importlib
    from dataclasses import fields

    from stampcheck.compose.looks import Looks

    module, name = SETTINGS[command]
    settings = getattr(importlib.import_module(module), name)()
    own = {f.name: getattr(settings, f.name) for f in fields(settings)}
    if command == "compose":  # the looks are compose's options too
        own.update((f.name, getattr(Looks(), f.name)) for f in fields(Looks))
        own["ink_colour"] = list(own.pop("ink_colours"))
    params = {p.name: p for p in get_command(app).commands[command].params}
    shared = {RENAMED.get(k, k): p for k, p in params.items() if RENAMED.get(k, k) in own}
    assert len(shared) >= 8, sorted(params)
    for key, param in shared.items():
        default = param.default
        if default is None and key in ("epochs",):  # pretrain --epochs: None keeps a resumed run's own
            continue
        if getattr(param, "multiple", False) and default is None and own[key] == []:  # none given: none
            continue
        if isinstance(own[key], tuple):
            default = tuple(default)
        assert default == own[key], (command, key, default, own[key])


def test_qa_and_watch_defaults_are_stated_once():
    from stampcheck.qa import config

    params = {p.name: p.default for p in get_command(app).commands["qa"].params}
    assert (params["bs"], params["settle"], params["on_missing_jobs"]) == (config.BS, config.SETTLE, config.GATE_JOBS)
