"""A run's results always match its inputs and a run is safe beside another one (issue #25), through the
real CLI and the packaged default model: replaced images are encoded again, one run per results folder
(the second waits), stale temporary files removed, SIGTERM ends with one line and exit 143, and
--memory-budget-gb changes no byte of a result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbench.search import search
from mmbench.util.locks import FolderLock

TASK = "mscoco_task0"          # the fixture's text -> image task: 6 image candidates


def env_for(cache: Path) -> dict:
    return {**os.environ, "MMBENCH_CACHE": str(cache), "MMBENCH_NO_PROGRESS": "1"}


def mmbench(*args, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "mmbench", *args], capture_output=True, text=True, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def run_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--tasks", TASK, "--data-root", str(root), "--output", str(out), *extra]


def record(out: Path) -> tuple[dict, Path]:
    (path,) = list(out.rglob(f"{TASK}.json"))
    return json.loads(path.read_text()), path


def test_replaced_images_are_encoded_again_and_the_result_follows_them(mbeir_root, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    env = env_for(cache)
    mmbench(*run_args(mbeir_root, out), env=env)
    first, path = record(out)
    assert set(first["provenance"]["image_fingerprints"]) == {"pool"}     # text queries: no images
    run_before = (path.parent / f"{TASK}.trec.gz").read_bytes()
    # every candidate image replaced under the same name (rotated: each file gets another's picture)
    images = sorted((mbeir_root / "mbeir_images" / "mscoco_images").rglob("*.jpg"))
    contents = [p.read_bytes() for p in images]
    for p, data in zip(images, contents[1:] + contents[:1]):
        p.write_bytes(data)
    proc = mmbench(*run_args(mbeir_root, out), env=env)
    assert "finished result found" not in proc.stderr                     # not reused
    second, _ = record(out)
    assert second["timings_s"]["candidates_from_cache"] == 0              # the pool was encoded again
    assert second["provenance"]["image_fingerprints"] != first["provenance"]["image_fingerprints"]
    assert (path.parent / f"{TASK}.trec.gz").read_bytes() != run_before
    fresh = tmp_path / "fresh"
    mmbench(*run_args(mbeir_root, fresh), env=env_for(tmp_path / "cache2"))
    assert record(fresh)[0]["metrics"] == second["metrics"]               # what a fresh cache gives
    # --verify-data records the bytes' digest; the entry encoded without it is encoded again once
    proc = mmbench(*run_args(mbeir_root, out, "--verify-data"), env=env)
    third, _ = record(out)
    assert "pool_sha256" in third["provenance"]["image_fingerprints"] and third["metrics"] == second["metrics"]
    assert third["timings_s"]["candidates_from_cache"] == 0
    mmbench(*run_args(mbeir_root, out, "--verify-data", "--overwrite"), env=env)
    assert record(out)[0]["timings_s"]["candidates_from_cache"] == 0      # (--overwrite) ...
    mmbench(*run_args(mbeir_root, tmp_path / "out3", "--verify-data"), env=env)
    assert record(tmp_path / "out3")[0]["timings_s"]["candidates_from_cache"] == 6   # ... verified: reused


def test_a_second_run_into_a_results_folder_waits_and_stale_temp_files_go(mbeir_root, tmp_path):
    env = env_for(tmp_path / "cache")
    out = tmp_path / "out"
    mmbench(*run_args(mbeir_root, out), env=env)
    _, path = record(out)
    folder = path.parent
    # what a SIGKILLed writer leaves (util.io's temporary names) in the results folder (a cache entry's
    # are removed when the entry is next used: tests/hardening/test_hardening_cache.py)
    stale = [folder / f".{TASK}.json.0123456789ab.tmp", folder / ".summary.json.a1b2c3d4e5f6.tmp"]
    lock = FolderLock(folder, "test").acquire()          # another run holds the folder
    for p in stale:
        p.write_bytes(b"half-written")
    lines: list[str] = []
    proc = subprocess.Popen([sys.executable, "-m", "mmbench", *run_args(mbeir_root, out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr))
    reader.start()
    try:
        deadline = time.time() + 120
        while not any("waiting for the results folder" in ln for ln in lines) and time.time() < deadline:
            time.sleep(0.1)
        assert any("waiting for the results folder" in ln for ln in lines), lines
        assert proc.poll() is None and all(p.exists() for p in stale)   # it waits, touching nothing
    finally:
        lock.release()
    assert proc.wait(timeout=120) == 0
    reader.join()
    assert not any(p.exists() for p in stale)
    assert any("finished result found, reused" in ln for ln in lines)


@pytest.mark.parametrize("signum, status, said", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_sigterm_and_ctrl_c_print_one_line_and_a_rerun_resumes(mbeir_root, tmp_path, signum, status, said):
    env = env_for(tmp_path / "cache")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "mmbench", *run_args(mbeir_root, out, "--chunk-size", "2")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    emb = tmp_path / "cache" / "embeddings"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(emb.rglob("chunk_*.npy")):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status
    interrupted = [ln for ln in stderr.splitlines() if ln.startswith("interrupted:")]
    assert len(interrupted) == 1 and said in interrupted[0] and interrupted[0].endswith("(rerun to resume)"), stderr
    assert "Traceback" not in stderr
    assert not list(tmp_path.rglob("*.tmp"))                               # finally blocks ran
    mmbench(*run_args(mbeir_root, out, "--chunk-size", "2"), env=env)
    rec, _ = record(out)
    assert rec["timings_s"]["candidates_from_cache"] + rec["timings_s"]["queries_from_cache"] > 0
    fresh = tmp_path / "fresh"
    mmbench(*run_args(mbeir_root, fresh, "--chunk-size", "2"), env=env_for(tmp_path / "cache2"))
    assert record(fresh)[0]["metrics"] == rec["metrics"]


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 400), d=st.integers(1, 48), k=st.integers(1, 120),
       budget_rows=st.integers(1, 64))
@settings(max_examples=40, deadline=None)
def test_the_memory_budget_changes_no_byte_of_a_ranking(seed, n, d, k, budget_rows):
    """Float data with exact duplicates and near-duplicates (not exact in float32): a budget of a few
    rows per block and the default give the same indices and scores, byte for byte."""
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal((n, d)).astype(np.float32)
    src = rng.integers(0, n, n)
    dup = rng.random(n) < 0.4
    pool[dup] = pool[src[dup]]
    near = rng.random(n) < 0.2
    pool[near] += np.float32(1e-7) * rng.standard_normal((int(near.sum()), d)).astype(np.float32)
    queries = rng.standard_normal((7, d)).astype(np.float32)
    tiebreak = rng.permutation(n)
    small = search(queries, pool, k, tiebreak=tiebreak, memory_budget_bytes=budget_rows * 4 * d)
    default = search(queries, pool, k, tiebreak=tiebreak)
    assert small[0].tobytes() == default[0].tobytes() and small[1].tobytes() == default[1].tobytes()


@pytest.mark.skipif(not Path("/usr/share/tuxpaint/stamps").is_dir(),
                    reason="needs Debian's tuxpaint-stamps-default (make setup installs it)")
def test_the_memory_budget_changes_no_byte_of_a_real_run(tmp_path):
    """mbeir-mini's tuxpaint_task1 with the packaged model: a budget of one pool row per block and the
    default write the same run file and the same scores, under the same config hash."""
    env = env_for(Path(os.environ["MMBENCH_TEST_CACHE"]))
    base = ["run", "--suite", "mbeir-mini", "--tasks", "tuxpaint_task1"]
    mmbench(*base, "--output", str(tmp_path / "a"), env=env)
    mmbench(*base, "--output", str(tmp_path / "b"), "--memory-budget-gb", "1e-6", env=env)
    (a,), (b,) = (list((tmp_path / o).rglob("tuxpaint_task1.json")) for o in "ab")
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert rb["provenance"]["config"]["memory_budget_gb"] == 1e-6
    assert ra["provenance"]["config_hash"] == rb["provenance"]["config_hash"]
    assert ra["metrics"] == rb["metrics"]
    assert (a.parent / "tuxpaint_task1.trec.gz").read_bytes() == (b.parent / "tuxpaint_task1.trec.gz").read_bytes()
