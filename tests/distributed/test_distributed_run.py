"""`torchrun --nproc-per-node N -m mmbench run`: real torchrun, 2 or 3 gloo ranks on the CPU, a tiny
random-weight CLIP on mbeir-mini (small chunks, so every table has several).

* a group's results equal one process's byte for byte (run files; records without their timing
  fields and the record's ``search.ranks``), for a local and a global suite, and so do the cache's
  chunk files; the search is sharded over the ranks (the record says so), each rank opening its pools
  from a shared cache, or, with a cache per rank, sent its shares by rank 0 (it says so);
* a rank killed mid-encode fails the whole job, with torchrun's report, in seconds; a rerun with 3
  ranks encodes only the missing chunks (the finished ones keep their files: same inode), says so, and
  gives the same results; an outside holder of an entry's lock makes rank 0 wait, not deadlock;
* a stuck rank does not hang the job: rank 0 leaves the collective after ``MMBENCH_DIST_TIMEOUT_S``
  with a one-line error;
* a cache that is not shared (rank 1 has its own): rank 1's chunks are sent to rank 0 over the group, and
  the results are the same.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dist_helpers import build_tiny_clip, mmbench_env, single, torchrun, torchrun_cmd

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/usr/share/tuxpaint/stamps").is_dir(),
                                 reason="needs Debian's tuxpaint-stamps-default (make setup installs it)")]

LOCAL = ["--suite", "mbeir-mini", "--tasks", "tuxpaint_task0,tuxpaint_task1"]
GLOBAL = ["--suite", "mbeir-mini-global", "--tasks", "tuxpaint_task3"]
TIMING = ("timings_s", "efficiency")          # measured, so never equal between two runs


@pytest.fixture(scope="module")
def setup(tmp_path_factory, shared_test_cache):
    """The tiny model and the built mbeir-mini (the session's shared build)."""
    root = tmp_path_factory.mktemp("dist")
    model = build_tiny_clip(root / "tiny-clip")
    data = Path(shared_test_cache) / "data"
    if not (data / "mbeir-mini" / "MANIFEST.json").exists():
        env = mmbench_env(root / "build-cache", data)
        out = single(["data", "build-mini", "--out", str(data / "mbeir-mini")], env)
        assert out.returncode == 0, out.stderr
    return root, model, data


def args_of(model: Path, suite: list[str], out: Path) -> list[str]:
    return ["run", "--model", f"clip:{model}", *suite, "--chunk-size", "16", "--batch-size", "8",
            "--output", str(out)]


def single_run(setup, name: str, suite: list[str]) -> Path:
    """One process's results and cache, moved to ``<name>-single/`` (a group then runs on the same paths)."""
    root, model, data = setup
    work = root / name
    out = single(args_of(model, suite, work / "out"), mmbench_env(work / "cache", data))
    assert out.returncode == 0, out.stderr
    shutil.move(work, root / f"{name}-single")
    return root / f"{name}-single"


@pytest.fixture(scope="module")
def single_local(setup):
    return single_run(setup, "local", LOCAL)


def comparable(path: Path) -> bytes:
    """A result file's bytes; a JSON record without its timing fields, the run's date and commit, and
    how the search was shared over the ranks."""
    if path.suffix != ".json":
        return path.read_bytes()
    record = json.loads(path.read_text())
    for key in TIMING:
        record.pop(key, None)
    if isinstance(record.get("search"), dict):
        record["search"].pop("ranks", None)
    for key in ("date", "commit", "dirty"):
        record.get("provenance", {}).pop(key, None)
    record.pop("date", None)
    return json.dumps(record, sort_keys=True).encode()


def assert_same_results(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and not p.name.startswith("."))
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert files_a == files_b and files_a
    assert any(p.name.endswith(".trec.gz") or p.suffix == ".trec" for p in files_a)
    for rel in files_a:
        assert comparable(a / rel) == comparable(b / rel), rel


def chunk_files(cache: Path) -> dict[str, os.stat_result]:
    return {str(p.relative_to(cache)): p.stat() for p in sorted((cache / "embeddings").rglob("chunk_*.npy"))}


def assert_same_chunks(a: Path, b: Path) -> None:
    names = chunk_files(a)
    assert names and set(names) == set(chunk_files(b))
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.parametrize("suite", ["global", "local-node-caches"])
def test_two_ranks_write_what_one_process_writes(setup, single_local, suite):
    """A global suite with a shared cache; a local suite with a cache per rank (as on nodes without a
    shared file system: rank 1's chunks reach rank 0 over the group)."""
    root, model, data = setup
    node_local = suite != "global"
    if node_local:
        reference, args, work = single_local, LOCAL, root / "local"
        shutil.rmtree(work, ignore_errors=True)
    else:
        reference, args, work = single_run(setup, "global", GLOBAL), GLOBAL, root / "global"
    # the same paths as the single run (provenance); rank 1's own cache is <cache>-rank1
    env = {**mmbench_env(work / "cache", data), **({"MMBENCH_TEST_NODE_LOCAL": "1"} if node_local else {})}
    proc = torchrun(2, args_of(model, args, work / "out"), env, launcher=node_local)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_results(reference / "out", work / "out")
    assert_same_chunks(reference / "cache", work / "cache")
    (encoded,) = counts(proc.stderr)                      # rank 0 alone prints it
    assert encoded[1:] == ("2", "0") and encoded[0] == str(len(chunk_files(work / "cache")))
    assert proc.stdout.count("where everything went") == 1
    for record in (work / "out").rglob("tuxpaint_task*.json"):       # encoded now, by the group
        timings = json.loads(record.read_text())["timings_s"]
        assert timings["queries_from_cache"] == 0 and timings["candidates_from_cache"] == 0
    flat = " ".join(proc.stderr.split())
    rank1 = int(re.search(r"rank 1: (\d+)", flat).group(1))
    searched = {json.loads(r.read_text())["search"].get("ranks", {}).get("world_size")
                for r in (work / "out").rglob("tuxpaint_task*.json")}
    if node_local:
        assert rank1 > 0 and f"embedding cache: {rank1} chunk(s) sent to rank 0" in flat
        assert len(chunk_files(work / "cache-rank1")) == rank1      # rank 1's own copy: its share only
        assert set(chunk_files(work / "cache-rank1")) <= set(chunk_files(work / "cache"))
        assert searched == {2} and "rank 0 sends their shares to rank(s) 1, which do not see its cache" in flat
    else:
        assert rank1 > 0 and "sent to rank 0" not in flat
        assert searched == {2} and "the pool is shared over 2 ranks" in flat


def counts(stderr: str) -> list[tuple[str, str, str]]:
    """(chunks encoded, ranks, chunks reused) of each "embedding cache: ..." message (rich wraps lines)."""
    flat = " ".join(stderr.split())
    return re.findall(r"embedding cache: (\d+) chunk\(s\) encoded by (\d+) rank\(s\) \([^)]*\), (\d+) reused", flat)


def _hold_lock(path: Path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_killed_rank_fails_the_job_and_three_ranks_resume_only_the_missing_chunks(setup, single_local):
    root, model, data = setup
    work = root / "local"                                # the single run's paths once more
    shutil.rmtree(work, ignore_errors=True)
    env = mmbench_env(work / "cache", data)
    args = args_of(model, LOCAL, work / "out")
    start = time.monotonic()
    killed = torchrun(2, args, {**env, "MMBENCH_TEST_FAULT": "kill:1:2"}, launcher=True, timeout=240)
    assert killed.returncode != 0
    assert "Signal 9 (SIGKILL)" in killed.stderr or "exitcode  : -9" in killed.stderr, killed.stderr[-3000:]
    assert time.monotonic() - start < 200
    before = chunk_files(work / "cache")
    total = len(chunk_files(single_local / "cache"))
    assert 1 <= len(before) < total                      # rank 1 wrote up to 2 chunks, rank 0 some of its own
    assert not (work / "out").exists() or not list((work / "out").rglob("*.json"))

    # resume with 3 ranks while another process holds one entry's lock: rank 0 waits for it
    lock_file = sorted((work / "cache" / "embeddings").rglob(".*.lock"))[0]
    fd = _hold_lock(lock_file)
    lines: list[str] = []
    proc = subprocess.Popen(torchrun_cmd(3, args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    out: list[str] = []                                  # stdout read by a thread of its own: each pipe has one reader
    out_reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    out_reader.start()
    try:
        deadline = time.monotonic() + 180
        def waiting() -> bool:
            return "waiting for the embedding cache entry" in " ".join("".join(lines).split())

        while time.monotonic() < deadline and not waiting():
            assert proc.poll() is None, "".join(lines)[-3000:]
            time.sleep(0.1)
        assert waiting()
    finally:
        os.close(fd)                                     # release: the group goes on
    proc.wait(timeout=240)              # not communicate(): it would read stderr beside the reader thread
    reader.join(timeout=10)
    out_reader.join(timeout=10)
    stdout = "".join(out)
    stderr = "".join(lines)
    assert proc.returncode == 0, stderr[-3000:]
    after = chunk_files(work / "cache")
    assert set(after) == set(chunk_files(single_local / "cache"))
    assert not list((work / "cache").rglob("*.tmp"))    # a write cut by the kill is cleaned with the lock
    for name, st in before.items():                      # finished chunks were not written again
        assert (after[name].st_ino, after[name].st_mtime_ns) == (st.st_ino, st.st_mtime_ns), name
    assert counts(stderr) == [(str(total - len(before)), "3", str(len(before)))]
    assert_same_results(single_local / "out", work / "out")
    assert_same_chunks(single_local / "cache", work / "cache")
    assert stdout.count("where everything went") == 1


def test_a_stuck_rank_ends_in_a_timeout_error_not_a_hang(setup):
    root, model, data = setup
    work = root / "stuck"
    env = {**mmbench_env(work / "cache", data), "MMBENCH_TEST_FAULT": "hang:1:0", "MMBENCH_DIST_TIMEOUT_S": "3"}
    start = time.monotonic()
    proc = torchrun(2, args_of(model, LOCAL, work / "out"), env, launcher=True, timeout=240)
    assert proc.returncode != 0
    assert time.monotonic() - start < 200
    # rank 0 waits for rank 1 at the end of encoding (or, on a loaded machine, at an earlier step)
    errors = [ln for ln in proc.stderr.splitlines() if re.match(r"error \(rank \d\): rank \d of 2: at ", ln)]
    assert errors and "MMBENCH_DIST_TIMEOUT_S" in errors[0], proc.stderr[-3000:]

