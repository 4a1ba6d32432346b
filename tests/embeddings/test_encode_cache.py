"""embed_table: what the cache holds, what a run gets back, and the background chunk writer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbench.data.types import ItemTable
from mmbench.embeddings import BackgroundWriter, EmbeddingKey, EmbeddingStore, embed_table, ids_digest
from mmbench.embeddings.store import CHUNK_ABSENT
from mmbench.models.base import l2_normalize


class ReusingEncoder:
    """Returns one internal buffer, overwritten on every call (as batched GPU encoders may do)."""

    def __init__(self, dim: int = 5) -> None:
        self.buf = np.empty((0, dim), np.float32)
        self.calls = 0

    def encode(self, items, *, role, batch_size):
        self.calls += 1
        rows = np.array([[float(int(it.id)) + 0.5, 3.0, -1.0 * it.text.count("x"), 0.25, 7.0] for it in items],
                        np.float32)
        if self.buf.shape != rows.shape:
            self.buf = np.empty_like(rows)
        self.buf[...] = rows
        return self.buf


def table(n: int) -> ItemTable:
    return ItemTable(ids=[str(i) for i in range(n)], modalities=["text"] * n,
                     texts=[f"{i}" + "x" * (i % 7 + 1) for i in range(n)], image_paths=[None] * n, root=Path("/"))


KEY = EmbeddingKey("m", "1", "candidate", "n/a", "fp")


def raw_rows(n: int) -> np.ndarray:
    return np.array([[i + 0.5, 3.0, -1.0 * (i % 7 + 1), 0.25, 7.0] for i in range(n)], np.float32)


@pytest.mark.parametrize("map_min_bytes", [1 << 40, 0])          # copied into memory / mapped
@pytest.mark.parametrize("normalize", [False, True])
def test_cold_and_warm_runs_return_the_same_bits_and_the_cache_holds_the_rows_returned(tmp_path, normalize,
                                                                                     map_min_bytes):
    enc = ReusingEncoder()
    cold, stats = embed_table(table(23), KEY, lambda: enc, cache_dir=tmp_path, batch_size=4, chunk_size=5,
                              normalize=normalize, map_min_bytes=map_min_bytes)
    assert stats.encoded == 23 and enc.calls == 5
    want = l2_normalize(raw_rows(23)) if normalize else raw_rows(23)
    assert cold.dtype == np.float32
    np.testing.assert_array_equal(cold, want)     # the reused buffer corrupted nothing
    key = replace(KEY, rows="unit") if normalize else KEY      # float32 unit rows: cached as returned
    store = EmbeddingStore(tmp_path, key, 23, ids_digest(table(23).ids), 5)
    np.testing.assert_array_equal(store.load(), want)
    if normalize:                                  # the raw rows' folder is another one, untouched
        assert not EmbeddingStore(tmp_path, KEY, 23, ids_digest(table(23).ids), 5).dir.exists()
    warm, stats = embed_table(table(23), KEY, lambda: pytest.fail("model loaded"), cache_dir=tmp_path,
                              batch_size=4, chunk_size=5, normalize=normalize, map_min_bytes=map_min_bytes)
    assert stats.cached == 23 and stats.encoded == 0
    np.testing.assert_array_equal(warm, cold)


def test_shared_writer_completes_the_cache_when_closed(tmp_path):
    with BackgroundWriter() as writer:
        out, _ = embed_table(table(12), KEY, ReusingEncoder, cache_dir=tmp_path, batch_size=4, chunk_size=4,
                             writer=writer, normalize=True)
    store = EmbeddingStore(tmp_path, replace(KEY, rows="unit"), 12, ids_digest(table(12).ids), 4)
    assert store.missing_chunks() == []
    np.testing.assert_array_equal(store.load(), out)


def test_a_failed_write_is_raised(tmp_path):
    def fail(*_):
        raise OSError("disk full")

    writer = BackgroundWriter()
    writer.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    with BackgroundWriter() as writer:
        writer.submit(fail)
        writer._pending[0].exception()            # let it fail
        with pytest.raises(OSError, match="disk full"):
            writer.submit(lambda: None)           # surfaced at the next submit


def test_non_finite_output_names_the_item_and_is_not_cached(tmp_path):
    class NanEncoder(ReusingEncoder):
        def encode(self, items, *, role, batch_size):
            out = super().encode(items, role=role, batch_size=batch_size).copy()
            out[[i for i, it in enumerate(items) if it.id == "7"], 2] = np.nan
            return out

    with pytest.raises(RuntimeError, match=r"non-finite values \(NaN or inf\) for candidate '7'"):
        embed_table(table(12), KEY, NanEncoder, cache_dir=tmp_path, batch_size=4, chunk_size=4)
    store = EmbeddingStore(tmp_path, KEY, 12, ids_digest(table(12).ids), 4)
    assert store.missing_chunks() == [1, 2]          # chunk 0 saved, the bad chunk 1 never written


def test_incomplete_chunk_files_are_encoded_again_and_named(tmp_path):
    """Chunks are not fsynced: after an OS crash one may be empty, short or (another writer's) wrong;
    such a file is not reused: only its chunk is encoded again, with a message naming the file."""
    enc = ReusingEncoder()
    cold, _ = embed_table(table(23), KEY, lambda: enc, cache_dir=tmp_path, batch_size=5, chunk_size=5)
    store = EmbeddingStore(tmp_path, KEY, 23, ids_digest(table(23).ids), 5)
    written = {i: store.chunk_path(i).read_bytes() for i in range(5)}
    np.save(store.chunk_path(0), raw_rows(4))                              # a complete .npy, 4 rows not 5
    store.chunk_path(1).write_bytes(written[1][: len(written[1]) - 4])   # short by one float
    store.chunk_path(2).write_bytes(b"")                                  # renamed, never written
    store.chunk_path(3).write_bytes(written[3][:5])                       # not even the magic string
    store.chunk_path(4).unlink()                                          # absent: no message
    assert store.missing_chunks() == [0, 1, 2, 3, 4]
    messages: list[str] = []
    enc.calls = 0
    warm, stats = embed_table(table(23), KEY, lambda: enc, cache_dir=tmp_path, batch_size=5, chunk_size=5,
                              message=messages.append)
    assert stats.encoded == 23 and enc.calls == 5
    np.testing.assert_array_equal(warm, cold)
    assert len(messages) == 4 and all("encoded again" in m for m in messages)
    for i, fragment in [(0, "expected 5 rows"), (1, "its header declares"), (2, "no readable .npy header (0 bytes"),
                        (3, "no readable .npy header (5 bytes")]:
        assert any(str(store.chunk_path(i)) in m and fragment in m for m in messages), (i, messages)
    assert {i: store.chunk_path(i).read_bytes() for i in range(5)} == written
    assert store.missing_chunks() == []


@settings(max_examples=80, deadline=None)
@given(rows=st.integers(1, 9), dims=st.sampled_from([(), (3,), (2, 4)]), dtype=st.sampled_from(["float32", "float16"]),
       cut=st.floats(0, 1, exclude_max=True), extra=st.integers(0, 3))
def test_chunk_problem_accepts_exactly_the_complete_file(tmp_path_factory, rows, dims, dtype, cut, extra):
    folder = tmp_path_factory.mktemp("chunks")
    store = EmbeddingStore(folder, KEY, rows, "h", rows)
    store.chunk_path(0).parent.mkdir(parents=True, exist_ok=True)
    np.save(store.chunk_path(0), np.ones((rows, *dims), dtype))
    full = store.chunk_path(0).read_bytes()
    assert store.chunk_problem(0) is None
    store.chunk_path(0).write_bytes(full[: int(cut * len(full))])         # any proper prefix
    assert store.chunk_problem(0) is not None
    if extra:
        store.chunk_path(0).write_bytes(full + b"\0" * extra)             # trailing bytes
        assert "header declares" in store.chunk_problem(0)
    other = EmbeddingStore(folder, EmbeddingKey("m", "2", "candidate", "n/a", "fp"), rows + 1, "h", rows + 1)
    other.chunk_path(0).parent.mkdir(parents=True, exist_ok=True)
    np.save(other.chunk_path(0), np.ones((rows, *dims), dtype))           # complete, one row short
    assert "expected" in other.chunk_problem(0)
    store.chunk_path(0).unlink()
    assert store.chunk_problem(0) == CHUNK_ABSENT


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["text", "image", "image,text"]), st.sampled_from([None, "a", "b", "A"]),
                               st.sampled_from([None, "1.png", "2.png"]), st.sampled_from([None, "inst"])),
                     max_size=30))
def test_duplicate_rows_are_the_rows_whose_content_came_earlier(rows):
    t = ItemTable(ids=[f"i{k}" for k in range(len(rows))], modalities=[r[0] for r in rows], texts=[r[1] for r in rows],
                  image_paths=[r[2] for r in rows], root=Path("/"), instructions=[r[3] for r in rows])
    got_rows, got_sources = t.duplicate_rows()
    want = [(k, rows.index(r)) for k, r in enumerate(rows) if rows.index(r) != k]
    assert list(zip(got_rows.tolist(), got_sources.tolist())) == want


@pytest.mark.parametrize("normalize", [False, True])
def test_identical_items_get_the_bits_of_the_first_cold_and_warm(tmp_path, normalize):
    texts = ["x", "xx", "x", "xxx", "xx", "x"] * 3          # duplicates in other chunks and other batches
    t = ItemTable(ids=[str(i) for i in range(len(texts))], modalities=["text"] * len(texts), texts=texts,
                  image_paths=[None] * len(texts), root=Path("/"))
    enc = ReusingEncoder()                                  # its rows depend on the id: duplicates differ
    cold, _ = embed_table(t, KEY, lambda: enc, cache_dir=tmp_path, batch_size=2, chunk_size=4, normalize=normalize)
    first = {x: texts.index(x) for x in texts}
    for i, x in enumerate(texts):
        np.testing.assert_array_equal(cold[i], cold[first[x]])
    assert cold[0, 0] != cold[1, 0]                          # distinct texts keep their own embeddings
    warm, _ = embed_table(t, KEY, lambda: pytest.fail("model loaded"), cache_dir=tmp_path, batch_size=2,
                          chunk_size=4, normalize=normalize)
    np.testing.assert_array_equal(warm, cold)


def test_a_float16_pool_is_normalised_in_float32_then_held_in_float16(tmp_path):
    """--embed-dtype float16: the cache holds the raw float16 output, and the pool the run searches is
    its float32 unit rows rounded to float16 (half the memory), the same cold and warm."""
    key16 = EmbeddingKey("m", "1", "candidate", "n/a", "fp", dtype="float16")
    args = dict(cache_dir=tmp_path, batch_size=4, chunk_size=5, normalize=True, normalized_dtype="float16")
    cold, _ = embed_table(table(23), key16, lambda: ReusingEncoder(), **args)
    warm, stats = embed_table(table(23), key16, lambda: pytest.fail("model loaded"), **args)
    raw16 = raw_rows(23).astype(np.float16)
    want = l2_normalize(raw16.astype(np.float32)).astype(np.float16)
    assert cold.dtype == warm.dtype == np.float16 and stats.cached == 23
    np.testing.assert_array_equal(cold, want)
    np.testing.assert_array_equal(warm, want)
    np.testing.assert_allclose(np.linalg.norm(cold.astype(np.float32), axis=1), 1.0, atol=2e-3)
    as32, _ = embed_table(table(23), key16, lambda: pytest.fail("model loaded"), cache_dir=tmp_path, batch_size=4,
                          chunk_size=5, normalize=True)                       # queries: float32 rows
    np.testing.assert_array_equal(as32, l2_normalize(raw16.astype(np.float32)))


@settings(max_examples=80, deadline=None)
@given(ids=st.lists(st.text(max_size=6), max_size=12))
def test_ids_digest_is_the_hash_of_each_id_then_a_nul_fed_one_by_one(ids):
    import hashlib

    h = hashlib.sha256()
    for i in ids:
        h.update(i.encode() + b"\0")
    assert ids_digest(ids) == h.hexdigest()


@pytest.mark.parametrize("normalize", [False, True])
def test_chunks_written_slower_than_encoded_each_hold_their_own_rows(tmp_path, monkeypatch, normalize):
    """Staging buffers are reused only once written: a slow disk must not let a later chunk overwrite
    an earlier one that is still waiting for the writer."""
    import time

    import mmbench.embeddings.store as store_module

    real_save = store_module.save_npy

    def slow_save(path, array, **kwargs):
        time.sleep(0.01)
        real_save(path, array, **kwargs)

    monkeypatch.setattr(store_module, "save_npy", slow_save)
    out, stats = embed_table(table(41), KEY, ReusingEncoder, cache_dir=tmp_path, batch_size=2, chunk_size=3,
                             normalize=normalize)
    assert stats.encoded == 41
    want = l2_normalize(raw_rows(41)) if normalize else raw_rows(41)
    store = EmbeddingStore(tmp_path, replace(KEY, rows="unit") if normalize else KEY, 41, ids_digest(table(41).ids), 3)
    np.testing.assert_array_equal(store.load(), want)
    np.testing.assert_array_equal(out, want)


def test_staging_buffers_wait_for_the_oldest_write_then_reuse_its_buffer():
    import threading
    from concurrent.futures import Future

    from mmbench.embeddings.writer import StagingBuffers

    staging = StagingBuffers(4)
    futures, bases = [], []
    for _ in range(StagingBuffers.IN_FLIGHT):
        view = staging.take((4, 2), "float32")
        assert all(not np.shares_memory(view, b) for b in bases)      # distinct while all are in flight
        bases.append(view.base)
        futures.append(Future())
        staging.hand_over(view, futures[-1])
    got = []
    taker = threading.Thread(target=lambda: got.append(staging.take((3, 2), "float32")))
    taker.start()
    taker.join(0.2)
    assert taker.is_alive() and not got                  # the oldest write is not done: it waits
    futures[0].set_result(None)
    taker.join(5)
    assert got[0].shape == (3, 2) and np.shares_memory(got[0], bases[0])


def test_nothing_queued_after_a_failed_write_is_written(tmp_path):
    """The runner queues a task's run file, then its JSON (the mark of a finished task): if the run
    file fails while the JSON waits in the queue, the JSON must not appear."""
    import threading

    from mmbench.util.io import write_json

    started, release = threading.Event(), threading.Event()

    def slow_failing_run_file(*_):
        started.set()
        release.wait(5)
        raise OSError("disk full")

    writer = BackgroundWriter()
    writer.submit(slow_failing_run_file)
    started.wait(5)
    marker = writer.submit(write_json, tmp_path / "task.json", {"done": True})   # queued behind it
    release.set()
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    assert not (tmp_path / "task.json").exists()
    with pytest.raises(RuntimeError, match="earlier background write failed"):
        marker.result()
