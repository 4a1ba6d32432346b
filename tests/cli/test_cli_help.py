"""Every command's --help reads well at 80 columns: nothing cut, no line too long, flags without a metavar."""

from __future__ import annotations

import re

import pytest
import typer
from cli_helpers import invoke

from mmbench.cli import app


def _commands(command=None, path=()):
    """(path, click command) for the app, every group and every command under it."""
    command = command or typer.main.get_command(app)
    yield path, command
    for name in getattr(command, "commands", {}):
        yield from _commands(command.commands[name], (*path, name))


COMMANDS = dict(_commands())


def _flat(text: str) -> str:
    """Wrapped help as one line: a word broken after a hyphen is joined again, whitespace collapsed."""
    return " ".join(re.sub(r"-\n\s+", "-", text).split())


def test_every_command_is_covered():
    assert {("run",), ("list",), ("show",), ("compare",), ("regress",), ("import-mteb",), ("data", "build-mini"),
            ("data", "build-text"), ("data", "download"), ("leaderboard", "build")} <= set(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "mmbench")
def test_help_at_80_columns(path, capsys, monkeypatch):
    r = invoke(capsys, monkeypatch, *path, "--help", columns=80)
    assert r.code == 0 and r.err == "", r.err
    assert "…" not in r.out
    long = [line for line in r.out.splitlines() if len(line) > 80]
    assert not long, long
    assert "<bool>" not in r.out and "BOOLEAN" not in r.out
    flat = _flat(r.out)
    command = COMMANDS[path]
    for param in command.params:
        if param.help:                                         # the whole help text of every option is there
            assert _flat(param.help) in flat, (param.name, param.help)
        if getattr(param, "is_flag", False) and not param.hidden:
            (line,) = [line for line in r.out.splitlines() if re.match(rf"\s+{re.escape(param.opts[-1])}\b", line)
                       or re.match(rf"\s+-\w, {re.escape(param.opts[-1])}\b", line)]
            assert re.match(rf"\s+(-\w, )?{re.escape(param.opts[-1])}(\s{{2,}}|$)", line), line   # no metavar
    for name, sub in getattr(command, "commands", {}).items():     # a group lists its commands' whole short help
        assert f"{name} " in r.out and _flat(sub.short_help or "") in flat


def test_run_help_names_the_search_backend_and_the_examples(capsys, monkeypatch):
    r = invoke(capsys, monkeypatch, "run", "--help", columns=80)
    assert "--search-backend NAME" in r.out and "--top-k K" in r.out and "[1<=x<=1000]" in r.out
    assert "    mmbench run --model clip-vit-l-14 --suite mbeir-local \\\n        --data-root /data/M-BEIR\n" in r.out
