"""prepare_pool_memory: pages mapped in the background, no huge pages, contents never touched."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmbench.embeddings import prefault
from mmbench.data.types import ItemTable
from mmbench.embeddings import EmbeddingKey, embed_table

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise is Linux's")
PAGE = mmap.PAGESIZE


@given(st.integers(0, 3 * PAGE), st.integers(0, 6 * PAGE))
def test_page_range_is_exactly_the_whole_pages_inside_the_buffer(offset, nbytes):
    base = np.zeros(8 * PAGE + 16, np.uint8)
    aligned = -base.ctypes.data % PAGE            # the base array's first page boundary
    view = base[aligned + offset: aligned + offset + nbytes]
    span = prefault.page_range(view)
    start, end = view.ctypes.data, view.ctypes.data + view.nbytes
    whole = [p for p in range(start - start % PAGE, end, PAGE) if p >= start and p + PAGE <= end]
    if not whole:
        assert span is None
    else:
        assert span == (whole[0], len(whole) * PAGE)


def test_small_or_strided_arrays_are_left_alone():
    assert prefault.prepare_pool_memory(np.empty(1000, np.float32)) is None
    big = np.empty((2 * prefault.PREFAULT_MIN_BYTES // 4 // 2, 2), np.float32)
    assert prefault.prepare_pool_memory(big[:, 0]) is None          # not contiguous


def test_without_madvise_nothing_is_done(monkeypatch):
    def missing():
        raise AttributeError("madvise")

    monkeypatch.setattr(prefault, "_madvise", missing)
    assert prefault.prepare_pool_memory(np.empty(prefault.PREFAULT_MIN_BYTES // 4, np.float32)) is None


def _resident_pages(first: int, length: int) -> int:
    """How many pages of [first, first + length) are mapped in memory (mincore(2))."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    vec = (ctypes.c_ubyte * (length // PAGE))()
    assert libc.mincore(ctypes.c_void_p(first), ctypes.c_size_t(length), vec) == 0, ctypes.get_errno()
    return sum(v & 1 for v in vec)


def _mappings_of(first: int, length: int) -> list[dict[str, str]]:
    """The /proc/self/smaps entries (field -> value) of the mappings that overlap [first, first + length)."""
    out, current = [], None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            current = {} if lo < first + length and hi > first else None
            if current is not None:
                out.append(current)
        elif current is not None:
            current[head.rstrip(":")] = rest.strip()
    return out


@linux_only
def test_pages_are_mapped_without_huge_pages_and_without_a_write():
    # a fresh anonymous mapping, never written (np.empty may hand back heap memory that earlier
    # tests of the process made resident)
    buf = mmap.mmap(-1, prefault.PREFAULT_MIN_BYTES + 16 * PAGE)
    array = np.frombuffer(buf, np.float32)
    first, length = prefault.page_range(array)
    before = _resident_pages(first, length)
    assert before < length // PAGE // 2                     # nothing has written to it yet
    thread = prefault.prepare_pool_memory(array)
    assert thread is not None
    thread.join(timeout=60)
    if _resident_pages(first, length) - before < length // PAGE // 2:
        pytest.skip("this kernel does not support MADV_POPULATE_WRITE (Linux 5.14+)")
    assert _resident_pages(first, length) == length // PAGE          # every page of the range is mapped
    mappings = _mappings_of(first, length)                            # the madvise split them off exactly
    assert mappings and all("nh" in m["VmFlags"].split() for m in mappings)   # MADV_NOHUGEPAGE
    assert all(m["AnonHugePages"] == "0 kB" for m in mappings)


@linux_only
@pytest.mark.parametrize("normalize", [False, True])
def test_embed_table_fills_a_pool_while_its_pages_are_mapped(tmp_path, monkeypatch, normalize):
    # a low threshold puts a small pool on the prefault path; the populate thread runs while the
    # chunks are placed, and no row may differ from the rows computed without it
    monkeypatch.setattr(prefault, "PREFAULT_MIN_BYTES", 0)
    monkeypatch.setattr(prefault, "_STEP_BYTES", PAGE)      # many small calls: they interleave with the writes
    started = []
    real = prefault.prepare_pool_memory

    def spy(array):
        thread = real(array)
        started.append(thread)
        return thread

    monkeypatch.setattr("mmbench.embeddings.embed.prepare_pool_memory", spy)
    n, dim = 3000, 64
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((n, dim)).astype(np.float32)

    class Encoder:
        def encode(self, items, *, role, batch_size):
            return rows[[int(it.id) for it in items]]

    table = ItemTable(ids=[str(i) for i in range(n)], modalities=["text"] * n, texts=[f"t{i}" for i in range(n)],
                      image_paths=[None] * n, root=Path("/"))
    key = EmbeddingKey("m", "1", "candidate", "n/a", "fp")
    out, _ = embed_table(table, key, Encoder, cache_dir=tmp_path, batch_size=64, chunk_size=256, normalize=normalize)
    assert started and started[0] is not None
    started[0].join(timeout=60)
    want = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12) if normalize else rows
    np.testing.assert_array_equal(out, want)
