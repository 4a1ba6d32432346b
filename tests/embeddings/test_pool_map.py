"""mmbench.embeddings.mapping: a pool mapped from its cache chunk files, and embed_table's use of it."""

from __future__ import annotations

import gc
import mmap
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbench.embeddings import mapping as pool_map
from mmbench.data.types import ItemTable
from mmbench.embeddings import EmbeddingKey, EmbeddingStore, embed_table, ids_digest
from mmbench.util.io import save_npy
from mmbench.models.base import l2_normalize

pytestmark = pytest.mark.skipif(not pool_map.can_map(mmap.PAGESIZE), reason="no mapping on this platform")
DIM = 1024                      # float32 rows of one 4 KiB page: chunks of any row count can be mapped


def mapped_files(array: np.ndarray) -> set[str]:
    """The files mapped (per /proc/self/maps) anywhere inside ``array``'s buffer."""
    lo, hi = array.ctypes.data, array.ctypes.data + array.nbytes
    found = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start < hi and end > lo and len(fields) == 6 and fields[5].startswith("/"):
            found.add(fields[5])
    return found


def write_chunks(folder: Path, rows: np.ndarray, chunk_rows: int, data_offset: int | None = pool_map.DATA_OFFSET):
    paths = []
    for i, lo in enumerate(range(0, rows.shape[0], chunk_rows)):
        paths.append(folder / f"chunk_{i:06d}.npy")
        save_npy(paths[-1], rows[lo:lo + chunk_rows], fsync=False, data_offset=data_offset)
    return paths


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), chunk_rows=st.integers(1, 9), width=st.sampled_from([1024, 2048, 512]),
       dtype=st.sampled_from(["float32", "float16"]))
def test_the_mapping_holds_the_rows_of_the_files_in_order(tmp_path_factory, n, chunk_rows, width, dtype):
    folder = tmp_path_factory.mktemp("chunks")
    rows = np.random.default_rng(n * 31 + chunk_rows).standard_normal((n, width)).astype(dtype)
    paths = write_chunks(folder, rows, chunk_rows)
    got = pool_map.map_chunk_files(paths, n, (width,), np.dtype(dtype), chunk_rows)
    if (chunk_rows * width * np.dtype(dtype).itemsize) % mmap.PAGESIZE:
        assert got is None                               # chunks that are not whole pages: the caller copies
        return
    assert got.shape == rows.shape and got.dtype == rows.dtype and got.flags.writeable
    np.testing.assert_array_equal(got, rows)
    assert mapped_files(got) == {str(p) for p in paths}


def test_writes_stay_private_and_the_range_is_unmapped_with_the_last_array(tmp_path):
    rows = np.arange(7 * DIM, dtype=np.float32).reshape(7, DIM)
    paths = write_chunks(tmp_path, rows, 3)
    got = pool_map.map_chunk_files(paths, 7, (DIM,), np.dtype(np.float32), 3)
    view = got[4:6]
    address = got.ctypes.data
    got[5] = -1.0                                         # copy-on-write: the file keeps its bytes
    np.testing.assert_array_equal(np.load(paths[1])[2], rows[5])
    assert (view[1] == -1.0).all()
    del got
    gc.collect()
    assert mapped_files(view)                             # a view keeps the mapping alive
    del view
    gc.collect()
    maps = Path("/proc/self/maps").read_text()
    assert not any(int(line.split("-")[0], 16) <= address < int(line.split()[0].split("-")[1], 16)
                   and str(tmp_path) in line for line in maps.splitlines())


def test_files_that_cannot_be_mapped_give_none(tmp_path):
    rows = np.ones((4, DIM), np.float32)
    paths = write_chunks(tmp_path, rows, 2)
    assert pool_map.map_chunk_files(paths[:1], 4, (DIM,), np.dtype(np.float32), 2) is None      # a chunk short
    assert pool_map.map_chunk_files([tmp_path / "gone.npy", paths[1]], 4, (DIM,), np.dtype(np.float32), 2) is None
    assert not pool_map.can_map(DIM * 4 + 4)


def test_other_platforms_never_map(monkeypatch):
    monkeypatch.setattr(pool_map, "_libc_calls", None)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert not pool_map.can_map(mmap.PAGESIZE)


# --------------------------------------------------------------------------- embed_table


class WideEncoder:
    """Rows of DIM values that depend on the item id (duplicated texts get different rows)."""

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, items, *, role, batch_size):
        self.calls += 1
        return np.stack([np.linspace(-1.0, 1.0, DIM, dtype=np.float32) * (int(it.id) + 1) + len(it.text)
                         for it in items])


def wide_table(n: int) -> ItemTable:
    texts = [f"t{i % 5}" for i in range(n)]                # every text five times: duplicate rows
    return ItemTable(ids=[str(i) for i in range(n)], modalities=["text"] * n, texts=texts,
                     image_paths=[None] * n, root=Path("/"))


def expected(n: int, normalize: bool) -> np.ndarray:
    rows = WideEncoder().encode(wide_table(n).items(0, n), role="candidate", batch_size=n)
    rows = l2_normalize(rows) if normalize else rows
    first = {t: wide_table(n).texts.index(t) for t in wide_table(n).texts}
    return rows[[first[t] for t in wide_table(n).texts]]


KEY = EmbeddingKey("m", "1", "candidate", "n/a", "fp")


@pytest.mark.parametrize("normalize", [False, True])
def test_embed_table_maps_a_large_pool_cold_and_warm_with_the_bits_of_the_copy(tmp_path, normalize):
    n, args = 23, dict(batch_size=4, chunk_size=4, normalize=normalize)
    copied, _ = embed_table(wide_table(n), KEY, WideEncoder, cache_dir=tmp_path / "a", map_min_bytes=1 << 40, **args)
    cold, stats = embed_table(wide_table(n), KEY, WideEncoder, cache_dir=tmp_path / "b", map_min_bytes=0, **args)
    warm, warm_stats = embed_table(wide_table(n), KEY, lambda: pytest.fail("model loaded"), cache_dir=tmp_path / "b",
                                   map_min_bytes=0, **args)
    assert stats.encoded == 23 and warm_stats.cached == 23
    np.testing.assert_array_equal(copied, expected(n, normalize))
    np.testing.assert_array_equal(cold, copied)
    np.testing.assert_array_equal(warm, copied)
    assert not mapped_files(copied)
    store = EmbeddingStore(tmp_path / "b", replace(KEY, rows="unit") if normalize else KEY, n,
                           ids_digest(wide_table(n).ids), 4)
    chunk_files = {str(store.chunk_path(i)) for i in range(store.n_chunks)}
    assert mapped_files(cold) == mapped_files(warm) == chunk_files
    raw = WideEncoder().encode(wide_table(n).items(0, n), role="candidate", batch_size=n)
    np.testing.assert_array_equal(store.load(), l2_normalize(raw) if normalize else raw)  # the duplicate fix is private


def test_embed_table_resumes_a_mapped_pool_and_copies_chunks_of_an_older_layout(tmp_path):
    n, args = 18, dict(batch_size=4, chunk_size=4, normalize=True, map_min_bytes=0, cache_dir=tmp_path)
    embed_table(wide_table(n), KEY, WideEncoder, **args)
    store = EmbeddingStore(tmp_path, replace(KEY, rows="unit"), n, ids_digest(wide_table(n).ids), 4)
    store.chunk_path(2).unlink()                          # killed before this chunk was written
    enc = WideEncoder()
    resumed, stats = embed_table(wide_table(n), KEY, lambda: enc, **args)
    assert stats.encoded == 4 and enc.calls == 1
    np.testing.assert_array_equal(resumed, expected(n, True))
    assert len(mapped_files(resumed)) == store.n_chunks
    np.save(store.chunk_path(1), np.load(store.chunk_path(1)))   # np.save's 128-byte header: not mappable
    copied, stats = embed_table(wide_table(n), KEY, lambda: pytest.fail("model loaded"), **args)
    assert stats.cached == n and not mapped_files(copied)
    np.testing.assert_array_equal(copied, expected(n, True))


def test_a_failed_mapping_reads_the_chunks_back(tmp_path, monkeypatch):
    import mmbench.embeddings.store as store_module

    monkeypatch.setattr(store_module, "map_chunk_files", lambda *a, **k: None)
    got, _ = embed_table(wide_table(13), KEY, WideEncoder, batch_size=4, chunk_size=4, normalize=True,
                         map_min_bytes=0, cache_dir=tmp_path)
    np.testing.assert_array_equal(got, expected(13, True))
    assert not mapped_files(got)
