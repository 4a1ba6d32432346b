"""Usage errors behave as in any click tool: usage, a hint, one error line, exit 2, no traceback;
user errors (MmbenchError) one line and exit 1; `--version`."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cli_helpers import invoke

import mmbench
from mmbench.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args, usage, message", [
    (["run", "--modle", "x"], "Usage: mmbench run [OPTIONS]", "No such option: --modle"),
    (["run", "--top-k", "5000"], "Usage: mmbench run [OPTIONS]", "Invalid value for '--top-k'"),
    (["run", "--top-k", "0"], "Usage: mmbench run [OPTIONS]", "Invalid value for '--top-k'"),
    (["run", "--model"], "Usage: mmbench run [OPTIONS]", "Option '--model' requires an argument."),
    (["run", "--embed-dtype", "float8"], "Usage: mmbench run [OPTIONS]", "'float8' is not one of 'float32', 'float16'"),
    (["run", "--instructions", "sometimes"], "Usage: mmbench run [OPTIONS]", "Invalid value for '--instructions'"),
    (["run", "--search-backend", "no-such-backend"], "Usage: mmbench run [OPTIONS]", "unknown search backend 'no-such-backend'"),
    (["lst"], "Usage: mmbench [OPTIONS] COMMAND [ARGS]...", "No such command 'lst'. Did you mean 'list'?"),
    (["list"], "Usage: mmbench list [OPTIONS]", "Missing argument 'KIND'. Choose from: tasks, suites, models, backends"),
    (["list", "task"], "Usage: mmbench list [OPTIONS]", "'task' is not one of"),
    (["list", "tasks", "--query-modality", "audio"], "Usage: mmbench list [OPTIONS]", "unknown modality 'audio'"),
    (["show", "suite", "x"], "Usage: mmbench show [OPTIONS]", "'suite' is not one of 'task'"),
    (["--debug", "data", "build-text", "--tasks"], "Usage: mmbench data build-text [OPTIONS]", "requires an argument"),
    (["leaderboard", "biuld"], "Usage: mmbench leaderboard [OPTIONS] COMMAND", "No such command 'biuld'. Did you mean 'build'?"),
    (["regress"], "Usage: mmbench regress [OPTIONS]", "Missing option '--baseline'"),
    (["compare"], "Usage: mmbench compare [OPTIONS]", "Missing argument 'RUN'"),
])
def test_a_usage_error_is_usage_and_one_line_with_exit_2(args, usage, message, capsys, monkeypatch):
    r = invoke(capsys, monkeypatch, *args)
    assert r.code == 2, r
    assert r.out == "" and "Traceback" not in r.err
    lines = r.err.splitlines()
    assert lines[0].startswith(usage), r.err
    assert lines[1].startswith("Try 'mmbench") and lines[1].endswith(" --help' for help."), r.err
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], r.err          # the message is one line, the last
    assert message in errors[0], r.err


@pytest.mark.parametrize("args, usage", [
    ([], "Usage: mmbench [OPTIONS] COMMAND [ARGS]..."),
    (["data"], "Usage: mmbench data [OPTIONS] COMMAND [ARGS]..."),
    (["leaderboard"], "Usage: mmbench leaderboard [OPTIONS] COMMAND [ARGS]..."),
])
def test_no_command_shows_the_groups_help_with_exit_2(args, usage, capsys, monkeypatch):
    r = invoke(capsys, monkeypatch, *args)
    assert r.code == 2 and r.out == "" and "Traceback" not in r.err
    assert r.err.startswith(usage) and "Commands:" in r.err


def test_a_user_error_is_one_line_with_exit_1(capsys, monkeypatch):
    r = invoke(capsys, monkeypatch, "data", "build-text", "--tasks", "no_such_task", "--out", "/nonexistent")
    assert r.code == 1 and "Traceback" not in r.err
    assert r.err.splitlines() == [r.err.strip()] and r.err.startswith("error: unknown offline task(s) no_such_task")


def test_debug_shows_a_user_errors_traceback(capsys, monkeypatch):
    from mmbench.errors import MmbenchError

    monkeypatch.setattr(sys, "argv", ["mmbench", "--debug", "data", "build-text", "--tasks", "no_such_task"])
    with pytest.raises(MmbenchError, match="unknown offline task"):
        main()


def test_version(capsys, monkeypatch):
    r = invoke(capsys, monkeypatch, "--version")
    assert (r.code, r.out, r.err) == (0, f"mmbench {mmbench.__version__}\n", "")
    assert mmbench.__version__ == "0.1.0"


def test_the_version_has_one_source():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mmbench.__version__"}
    assert importlib.metadata.version("mmbench") == mmbench.__version__      # the installed metadata


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "mmbench"],
    [str(Path(sys.executable).with_name("mmbench"))],                        # the console script
])
def test_the_entry_points_print_the_version_and_exit_2_on_a_usage_error(command):
    if not Path(command[0]).exists():
        pytest.skip(f"{command[0]} is not installed")
    env = {**os.environ, "COLUMNS": "80"}
    version = subprocess.run([*command, "--version"], capture_output=True, text=True, env=env)
    assert (version.returncode, version.stdout) == (0, f"mmbench {mmbench.__version__}\n"), version.stderr
    wrong = subprocess.run([*command, "lst"], capture_output=True, text=True, env=env)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert wrong.stderr.startswith("Usage: mmbench ") and "Did you mean 'list'?" in wrong.stderr
