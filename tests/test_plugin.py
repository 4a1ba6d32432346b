"""The example plugin in examples/ installs, registers through the ``mmbench.models`` entry point, and runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "mmbench-plugin-example"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """pip-installs the example into a temporary --target folder (never into the venv) -> env for subprocesses."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    source = build / EXAMPLE.name            # a copy: setuptools writes build/ and *.egg-info beside the sources
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        check=True, cwd=build, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert list(target.glob("mmbench_plugin_example-*.dist-info/entry_points.txt"))
    pythonpath = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": pythonpath, "HF_HUB_OFFLINE": "1", "MMBENCH_NO_PROGRESS": "1",
            "COLUMNS": "250"}


def mmbench(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from mmbench.cli import main; sys.argv = ['mmbench', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True)


def test_plugin_is_listed_and_runs(plugin_env, tmp_path):
    listed = mmbench("list", "models", env=plugin_env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "example-hash" in listed.stdout

    out = tmp_path / "results"
    run = mmbench("run", "--model", "example-hash", "--suite", "mbeir-mini", "--tasks", "tuxpaint_task1",
                  "--output", str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
                  env=plugin_env, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    (result,) = out.glob("example-hash/*/*/tuxpaint_task1.json")
    record = json.loads(result.read_text())
    assert record["model"]["name"] == "example-hash" and record["model"]["revision"] == "0.1.0"
    assert record["model"]["settings"]["seed"] == 0
    assert record["metrics"] and all(0.0 <= v <= 1.0 for v in record["metrics"].values())


def test_plugin_not_installed_in_this_venv():
    from importlib.metadata import entry_points

    assert not [ep for ep in entry_points(group="mmbench.models") if ep.value.startswith("mmbench_example")]
