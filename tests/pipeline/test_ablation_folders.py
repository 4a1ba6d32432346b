"""No run overwrites another: a non-default configuration gets its own results folder; a rerun reuses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmbench.config import RunConfig
from mmbench.results.trec import read_run_text

DEFAULT_MODEL = "effnet-lite0-imagenet-labels-minilm"


def mmbench(*args, env):
    out = subprocess.run([sys.executable, "-m", "mmbench", *args], capture_output=True, text=True, env=env)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture
def env():
    return {**os.environ, "MMBENCH_CACHE": os.environ["MMBENCH_TEST_CACHE"], "MMBENCH_NO_PROGRESS": "1"}


def test_variant_names_every_non_default_setting_and_is_empty_by_default():
    assert RunConfig().variant() == ""
    assert RunConfig(top_k=50).variant() == "topk=50"
    assert RunConfig(instructions="random", seed=7).variant() == "instructions=random__seed=7"
    assert RunConfig(instructions="none", embed_dtype="float16").variant() == "instructions=none__dtype=float16"
    assert RunConfig(run_depth=None).variant() == "depth=all"
    assert RunConfig(run_depth=None).config_hash() == RunConfig().config_hash()   # the file, not the scores
    names = {RunConfig(top_k=k, instructions=p).variant() for k in (None, 10, 50) for p in ("first", "none")}
    assert len(names) == 6


def test_top_k_run_after_default_run_leaves_both_run_files_and_rerun_reuses(mbeir_root, env, tmp_path):
    out = tmp_path / "out"
    base = ["run", "--tasks", "mscoco_task0", "--data-root", str(mbeir_root), "--output", str(out)]
    mmbench(*base, env=env)
    (rev,) = (out / DEFAULT_MODEL).iterdir()
    default_trec = rev / "local" / "mscoco_task0.trec.gz"
    before = default_trec.read_bytes()
    mmbench(*base, "--top-k", "2", env=env)
    ablation = rev / "local__topk=2"
    assert default_trec.read_bytes() == before                       # untouched
    lines = read_run_text(ablation / "mscoco_task0.trec.gz").splitlines()
    assert lines and all(int(line.split()[3]) <= 2 for line in lines)
    config = json.loads((ablation / "config.json").read_text())
    assert config["variant"] == "topk=2" and config["scoring_fields"]["top_k"] == 2
    assert not (rev / "local" / "config.json").exists()               # the default folder is as it was
    again = mmbench(*base, "--top-k", "2", env=env)
    assert "reused" in again.stderr + again.stdout


def test_run_depth_cuts_the_run_file_not_the_scores(mbeir_root, env, tmp_path):
    out = tmp_path / "out"
    base = ["run", "--tasks", "mscoco_task0", "--data-root", str(mbeir_root), "--output", str(out)]
    mmbench(*base, "--run-depth", "all", env=env)
    mmbench(*base, "--run-depth", "1", env=env)
    (rev,) = (out / DEFAULT_MODEL).iterdir()
    full, cut = rev / "local__depth=all", rev / "local__depth=1"
    full_lines = read_run_text(full / "mscoco_task0.trec.gz").splitlines()
    cut_lines = read_run_text(cut / "mscoco_task0.trec.gz").splitlines()
    assert len(full_lines) > len(cut_lines) and all(line.split()[3] == "1" for line in cut_lines)
    assert set(cut_lines) <= set(full_lines)                          # the top of the same ranking
    a, b = (json.loads((d / "mscoco_task0.json").read_text()) for d in (full, cut))
    assert a["metrics"] == b["metrics"] and b["files"]["run_depth"] == 1


def test_rerank_deeper_than_the_run_file_is_refused(mbeir_root, env, tmp_path):
    args = ["run", "--tasks", "mscoco_task0", "--data-root", str(mbeir_root), "--output", str(tmp_path / "o"),
            "--run-depth", "5", "--rerank", "rescore:minilm", "--rerank-top-k", "10"]
    out = subprocess.run([sys.executable, "-m", "mmbench", *args], capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "--rerank-top-k 10 needs" in out.stderr and "Traceback" not in out.stderr


def test_run_format_switches_the_run_file_in_place_without_changing_a_line(mbeir_root, env, tmp_path):
    """--run-format is not a configuration (same lines, same folder): switching it computes the task again,
    writes the other file and removes the first, and the record names the file that is there."""
    import gzip

    out = tmp_path / "out"
    base = ["run", "--tasks", "mscoco_task0", "--data-root", str(mbeir_root), "--output", str(out)]
    mmbench(*base, env=env)
    (rev,) = (out / DEFAULT_MODEL).iterdir()
    folder = rev / "local"
    packed = (folder / "mscoco_task0.trec.gz").read_bytes()
    again = mmbench(*base, "--run-format", "trec", env=env)
    assert "not mscoco_task0.trec (--run-format): computed again" in again.stderr
    assert sorted(p.name for p in folder.glob("mscoco_task0.trec*")) == ["mscoco_task0.trec"]
    assert (folder / "mscoco_task0.trec").read_bytes() == gzip.decompress(packed)
    record = json.loads((folder / "mscoco_task0.json").read_text())
    assert record["files"]["run"] == "mscoco_task0.trec"
    assert record["files"]["run_bytes"] == (folder / "mscoco_task0.trec").stat().st_size
    assert "reused" in mmbench(*base, "--run-format", "trec", env=env).stderr
    mmbench(*base, env=env)
    assert (folder / "mscoco_task0.trec.gz").read_bytes() == packed and not (folder / "mscoco_task0.trec").exists()
