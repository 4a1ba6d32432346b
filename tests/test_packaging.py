"""Any install works: the wheel and the sdist carry the task specs (suites included) and the published
numbers, and an installed wheel, outside the checkout, lists the suites, runs a task and builds a
leaderboard. Offline: the wheel is built with --no-build-isolation and installed with --no-index; the
fresh venv sees the project venv's dependencies through a .pth file, never the checkout's harness/."""

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAMPS = Path("/usr/share/tuxpaint/stamps")
SPECS = sorted(p.relative_to(REPO / "tasks").as_posix() for p in (REPO / "tasks").rglob("*.toml"))


def _run(args, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, args))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, REPO], cwd=REPO)
    (whl,) = out.glob("mmbench-*.whl")
    return whl


def test_the_wheel_carries_the_specs_and_the_published_numbers(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert SPECS and {f"mmbench/specs/{s}" for s in SPECS} <= names
    assert {"mmbench/specs/suites/mbeir-mini.toml", "mmbench/specs/suites/mteb-mini.toml"} <= names
    assert "mmbench/published/reported.toml" in names
    assert not any(n.startswith(("tasks/", "leaderboards/", "harness/")) for n in names)


def test_the_sdist_carries_the_specs_and_the_published_numbers(tmp_path):
    code = ("import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))")
    name = _run([sys.executable, "-c", code, tmp_path], cwd=REPO).stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / name) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {f"tasks/{s}" for s in SPECS} <= names
    assert {"leaderboards/reported.toml", "setup.py", "pyproject.toml", "harness/mmbench/__init__.py"} <= names


@pytest.mark.slow
@pytest.mark.skipif(not STAMPS.is_dir(), reason="needs Debian's tuxpaint-stamps-default (make setup installs it)")
def test_an_installed_wheel_lists_runs_and_builds_a_leaderboard(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    (site,) = (venv / "lib").glob("python3*/site-packages")
    deps = sysconfig.get_paths()["purelib"]                 # the project venv's site-packages: the dependencies
    (site / "_mmbench_test_deps.pth").write_text(deps + "\n")
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", wheel], cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MMBENCH_TASKS_DIR")}
    env.update(MMBENCH_NO_PROGRESS="1", COLUMNS="200", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               MMBENCH_CACHE=os.environ.get("MMBENCH_TEST_CACHE") or str(tmp_path / "cache"))
    where = _run([python, "-c", "import mmbench, mmbench.data.specs as s; print(mmbench.__file__); print(s.tasks_dir())"],
                 cwd=tmp_path, env=env).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where      # the wheel's copy, not the checkout
    mmbench = venv / "bin" / "mmbench"
    suites = _run([mmbench, "list", "suites"], cwd=tmp_path, env=env).stdout
    assert "mbeir-mini" in suites and "mteb-mini" in suites and "mbeir-local" in suites
    _run([mmbench, "run", "--suite", "mbeir-mini", "--tasks", "tuxpaint_task1", "--output", tmp_path / "results"],
         cwd=tmp_path, env=env)
    (record,) = (tmp_path / "results").rglob("tuxpaint_task1.json")
    _run([mmbench, "leaderboard", "build", "--results", tmp_path / "results", "--out", tmp_path / "boards",
          "--suite", "mbeir-mini,mbeir-local"], cwd=tmp_path, env=env)
    assert "effnet-lite0-imagenet-labels-minilm" in (tmp_path / "boards" / "mbeir-mini.md").read_text()
    assert "UniIR CLIP_SF" in (tmp_path / "boards" / "mbeir-local.md").read_text()    # reported.toml from the wheel
