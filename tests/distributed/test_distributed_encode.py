"""encode_shared in a real one-rank gloo group in this process (the protocol's rank-0 side: locks,
missing-chunk list, counts), and the detection of a torchrun launch. The multi-rank runs are in
test_distributed_run.py (real torchrun)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import numpy as np
import pytest

from mmbench.data.types import ItemTable
from mmbench.distributed import launched, process_group
from mmbench.distributed.encode import encode_shared
from mmbench.distributed.group import RankInfo, timeout_s
from mmbench.embeddings import EmbeddingKey, embed_table
from mmbench.embeddings.embed import EmbedJob, cache_entry
from mmbench.errors import MmbenchError


class CountingEncoder:
    def __init__(self) -> None:
        self.chunks: list[int] = []

    def encode(self, items, *, role, batch_size):
        self.chunks.append(int(items[0].id))
        return np.array([[float(int(it.id)) + 0.5, len(it.text or ""), 1.0] for it in items], np.float32)


def table(n: int, offset: int = 0) -> ItemTable:
    return ItemTable(ids=[str(offset + i) for i in range(n)], modalities=["text"] * n,
                     texts=["x" * (i % 5 + 1) for i in range(n)], image_paths=[None] * n, root=Path("/"))


@pytest.fixture
def group(tmp_path):
    """A real gloo process group of one rank (file rendezvous), destroyed after the test."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        yield RankInfo(0, 1, 0, "gloo", 60.0)
    finally:
        dist.destroy_process_group()


class Messages:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)

    def progress(self, description, total):
        return lambda done, total: None


def test_a_group_fills_the_cache_as_embed_table_would_and_a_rerun_reuses_every_chunk(tmp_path, group):
    jobs = [EmbedJob(table(23), EmbeddingKey("m", "1", "candidate", "n/a", "pool"), "pool", normalize=True),
            EmbedJob(table(7, 100), EmbeddingKey("m", "1", "query", "first", "q"), "queries", normalize=True)]
    enc, out = CountingEncoder(), Messages()
    shared = encode_shared(jobs, group, lambda: enc, cache_dir=tmp_path / "group", chunk_size=5, batch_size=4,
                           reporter=out)
    assert (shared.chunks_encoded, shared.chunks_reused, shared.per_rank) == (7, 0, [7])
    assert sorted(enc.chunks) == [0, 5, 10, 15, 20, 100, 105]          # each chunk encoded once, alone
    assert any("7 chunk(s) encoded by 1 rank(s) (rank 0: 7), 0 reused" in ln for ln in out.lines)
    stats = shared.take(jobs[0])
    assert (stats.encoded, stats.cached) == (23, 0) and shared.take(jobs[0]) is None
    # the same files as one process's embed_table, and that call then finds every chunk
    for job in jobs:
        alone, _ = embed_table(job.table, job.key, CountingEncoder, cache_dir=tmp_path / "alone", batch_size=4,
                               chunk_size=5, normalize=True)
        got, stats = embed_table(job.table, job.key, lambda: pytest.fail("encoded again"),
                                 cache_dir=tmp_path / "group", batch_size=4, chunk_size=5, normalize=True)
        assert stats.encoded == 0 and got.tobytes() == alone.tobytes()
        store, _ = cache_entry(job.table, job.key, cache_dir=tmp_path / "group", chunk_size=5, normalize=True)
        twin, _ = cache_entry(job.table, job.key, cache_dir=tmp_path / "alone", chunk_size=5, normalize=True)
        for i in range(store.n_chunks):
            assert store.chunk_path(i).read_bytes() == twin.chunk_path(i).read_bytes()
    # one chunk lost: a rerun encodes it alone and counts the rest as reused
    store, _ = cache_entry(jobs[0].table, jobs[0].key, cache_dir=tmp_path / "group", chunk_size=5, normalize=True)
    store.chunk_path(2).unlink()
    enc2 = CountingEncoder()
    again = encode_shared(jobs, group, lambda: enc2, cache_dir=tmp_path / "group", chunk_size=5, batch_size=4)
    assert (again.chunks_encoded, again.chunks_reused, enc2.chunks) == (1, 6, [10])
    # nothing missing: the model is never loaded
    done = encode_shared(jobs, group, lambda: pytest.fail("model loaded"), cache_dir=tmp_path / "group",
                         chunk_size=5, batch_size=4)
    assert (done.chunks_encoded, done.chunks_reused) == (0, 7)


def test_rank_zero_holds_every_entry_lock_while_the_group_encodes(tmp_path, group):
    jobs = [EmbedJob(table(12), EmbeddingKey("m", "1", "candidate", "n/a", "pool"), "pool")]
    store, _ = cache_entry(jobs[0].table, jobs[0].key, cache_dir=tmp_path, chunk_size=4, normalize=False)
    held = []

    def locked() -> bool:
        """Whether another open file description (another process, in effect) would wait for the lock."""
        fd = os.open(store.lock().path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    class Probe(CountingEncoder):
        def encode(self, items, **kw):
            held.append(locked())
            return super().encode(items, **kw)

    encode_shared(jobs, group, Probe, cache_dir=tmp_path, chunk_size=4, batch_size=4)
    assert held == [True, True, True]
    assert not locked()                                   # released at the end


def test_a_plain_process_is_no_rank_and_bad_settings_are_one_line(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert not launched()
    with process_group("cpu") as info:
        assert info is None
    assert launched({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    monkeypatch.setenv("MMBENCH_DIST_TIMEOUT_S", "-3")
    with pytest.raises(MmbenchError, match="MMBENCH_DIST_TIMEOUT_S='-3'"):
        timeout_s()
    monkeypatch.setenv("MMBENCH_DIST_TIMEOUT_S", "12.5")
    assert timeout_s() == 12.5
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(MmbenchError, match="--device cuda:1 names one GPU"):
        with process_group("cuda:1"):
            pass
