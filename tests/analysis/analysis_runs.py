"""Real runs shared by tests/analysis/test_analysis_{compare,leaderboard,regress}.py (made once per pytest process).

The default model on all of mbeir-mini and minilm on tuxpaint_task1, through the real CLI (the
command a user types, so exit statuses and output are those of the installed entry point), into one
results tree with one embedding cache: the slow part of these tests, paid once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEFAULT_MODEL = "effnet-lite0-imagenet-labels-minilm"
REPO = Path(__file__).resolve().parents[2]
STAMPS = Path("/usr/share/tuxpaint/stamps")
needs_stamps = pytest.mark.skipif(not STAMPS.is_dir(), reason="needs Debian's tuxpaint-stamps-default (make setup installs it)")
_MEMO: dict[str, dict] = {}


def cli(*args, env: dict | None = None, check: bool = True, cwd: Path = REPO) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mmbench", *map(str, args)], capture_output=True, text=True,
                          env=env or {**os.environ, "MMBENCH_NO_PROGRESS": "1", "COLUMNS": "200"}, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"mmbench {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def real_runs(tmp_path_factory) -> dict:
    """{'results', 'default', 'minilm', 'env'}: folders of the two real runs (shared by every module)."""
    if "runs" not in _MEMO:
        root = tmp_path_factory.getbasetemp() / "analysis-runs"
        if root.exists():
            shutil.rmtree(root)
        root.mkdir()
        # a fresh cache by default; MMBENCH_TEST_CACHE=<dir> reuses one (faster local iteration)
        cache = os.environ.get("MMBENCH_TEST_CACHE") or str(root / "cache")
        env = {**os.environ, "MMBENCH_CACHE": cache, "MMBENCH_NO_PROGRESS": "1", "COLUMNS": "200"}
        results = root / "results"
        cli("run", "--suite", "mbeir-mini", "--output", results, env=env)
        cli("run", "--output", results, "--model", "minilm", "--suite", "mbeir-mini", "--tasks", "tuxpaint_task1", env=env)
        (default,) = (results / DEFAULT_MODEL).iterdir()
        (minilm,) = (results / "minilm").iterdir()
        _MEMO["runs"] = {"results": results, "default": default / "mbeir-mini", "minilm": minilm / "mbeir-mini", "env": env}
    return _MEMO["runs"]


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_per_query(run: Path, task: str, metric: str, fn) -> None:
    """Rewrite one column of a per-query TSV: value -> fn(index, value)."""
    path = run / f"{task}.per_query.tsv"
    lines = path.read_text().splitlines()
    col = lines[0].split("\t").index(metric)
    out = [lines[0]]
    for i, line in enumerate(lines[1:]):
        parts = line.split("\t")
        parts[col] = f"{fn(i, float(parts[col])):.6g}"
        out.append("\t".join(parts))
    path.write_text("\n".join(out) + "\n")
