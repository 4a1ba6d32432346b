"""The example plugin in examples/ installs, registers a model (``mmbench.models``) and a task family
(``mmbench.loaders``) with its task and suite (``mmbench.tasks``, ``mmbench.suites``), and runs both."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmbench.results.trec import read_run_text

ROOT = Path(__file__).resolve().parents[2]
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


def _fresh_registries() -> None:
    """The catalog's registries are built once per process: drop them so the next use rescans entry points."""
    from mmbench import catalog

    for registry in (catalog.tasks, catalog.suites, catalog.models, catalog.task_families):
        registry.cache_clear()


@pytest.fixture
def plugin_on_path(plugin_env, monkeypatch):
    """The installed example importable in this process, and the registries rebuilt around the test."""
    monkeypatch.syspath_prepend(plugin_env["PYTHONPATH"].split(os.pathsep)[0])
    _fresh_registries()
    yield
    monkeypatch.undo()
    _fresh_registries()


def test_plugin_task_family_runs_end_to_end_through_the_api(plugin_on_path, tmp_path):
    from mmbench import api, catalog
    from mmbench.data.families.base import TaskFamily

    family = catalog.task_families().get("example-tsv")
    assert isinstance(family, TaskFamily) and family.name == "example-tsv"
    assert {"mbeir", "mteb", "example-tsv"} <= set(catalog.task_families().names())
    spec = catalog.tasks().get("example-animals")
    assert catalog.task_family(spec) is family
    assert catalog.suites().get("example-tiny").tasks == ("example-animals",)

    out = tmp_path / "results"
    outcome = api.run(api.RunConfig(model="example-hash", suite="example-tiny", output=out,
                                    cache_dir=tmp_path / "cache", device="cpu"))
    (task,) = outcome.tasks
    record = json.loads(task.path.read_text())
    # each query's text is its relevant document's, word for word: identical embeddings, rank 1
    assert record["metrics"] == {"hit@1": 1.0, "mrr@5": 1.0, "ndcg@5": 1.0} and outcome.average == 1.0
    assert record["n_queries"] == 3 and record["n_candidates"] == 5 and record["task"]["source"] == "example"
    assert record["provenance"]["data_fingerprints"].keys() == {"queries", "corpus", "qrels"}
    lines = [ln.split() for ln in read_run_text(task.path.parent / "example-animals.trec.gz").splitlines()]
    assert [(ln[0], ln[2], ln[3]) for ln in lines if ln[3] == "1"] == [
        ("q-cat", "d-cat", "1"), ("q-owl", "d-owl", "1"), ("q-fish", "d-fish", "1")]
    assert len(lines) == 3 * 5                                            # top_k 5 of the spec: every document
    # the family's extra output, written after the task was scored
    assert (out / "example-tsv" / "example-animals.txt").read_text() == "example-hash\thit@1\t1.0\n"
    # a second run reuses the finished result
    again = api.run(api.RunConfig(model="example-hash", suite="example-tiny", output=out,
                                  cache_dir=tmp_path / "cache", device="cpu"))
    assert again.tasks[0].reused and again.average == 1.0


def test_plugin_not_installed_in_this_venv():
    from importlib.metadata import entry_points

    for group in ("mmbench.models", "mmbench.loaders", "mmbench.tasks", "mmbench.suites"):
        assert not [ep for ep in entry_points(group=group) if ep.value.startswith("mmbench_example")]
