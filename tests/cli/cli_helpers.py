"""Run the real ``mmbench`` entry point (``mmbench.cli.main``) in-process, as the console script does."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import pytest

from mmbench.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str


def invoke(capsys, monkeypatch, *args: str, columns: int = 80) -> Result:
    """``mmbench ARGS`` through main(): its exit status and what it wrote to stdout and stderr."""
    monkeypatch.setattr(sys, "argv", ["mmbench", *args])
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setenv("MMBENCH_NO_PROGRESS", "1")
    # `--cache-dir` sets $MMBENCH_HOME for the process: restored (or removed) when the test ends, so the
    # setting does not leak into later tests and their subprocesses
    monkeypatch.setenv("MMBENCH_HOME", os.environ.get("MMBENCH_HOME", ""))
    if not os.environ["MMBENCH_HOME"]:
        monkeypatch.delenv("MMBENCH_HOME")
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    code = exited.value.code
    return Result(0 if code is None else code, out, err)
