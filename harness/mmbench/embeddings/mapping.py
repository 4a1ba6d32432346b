"""A large pool read from its cache chunk files without a copy: one contiguous private mapping.

An embedded pool is searched as one (N, d) array, and its rows are already in the page cache: the
embedding cache's chunk files were just written (or were read before). Copying them into a new
array touches N x d x 4 bytes of memory the process never used (180 MB for 118k x 384 float32), at
one page fault per 4 KiB page, and holds the pool twice in RAM (page cache + array). Instead,
:func:`map_chunk_files` reserves one address range and maps each chunk file's data into its
slot (``mmap`` with ``MAP_FIXED``, private, read-write), so the array *is* the page-cache pages:

* the first read of a page maps it (the kernel maps 16 pages per fault), no copy is made; a large
  pool that exceeds RAM is paged from the cache files instead of swapped;
* a write (embed_table's duplicate-row fix, a caller's own change) copies that page privately
  (copy-on-write); the file never changes;
* the range is unmapped when the last array over it is garbage-collected.

Mapping needs each chunk's data at a page-aligned offset in its file and each chunk but the last
to be a whole number of pages: :func:`mmbench.util.io.save_npy` writes cache chunks with their data at
``DATA_OFFSET`` (the ``.npy`` header padded; any numpy reads them), and a chunk of ``chunk_size``
rows of ``d`` float32 is ``16 KiB x d``. Linux on x86-64 or arm64 with 4 KiB pages only (where the
mmap constants are the ones below); elsewhere, or when a call fails, :func:`map_chunk_files`
returns None and the caller copies, as before.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["DATA_OFFSET", "MAP_MIN_BYTES", "can_map", "map_chunk_files"]

DATA_OFFSET = 4096                # where a cache chunk's array data starts in its file
MAP_MIN_BYTES = 32 << 20          # smaller pools are copied: cheap, and no mapping per chunk
_PROT_NONE, _PROT_READ, _PROT_WRITE = 0, 1, 2
_MAP_PRIVATE, _MAP_FIXED, _MAP_ANONYMOUS, _MAP_NORESERVE = 0x02, 0x10, 0x20, 0x4000   # x86-64 and arm64
_MADV_POPULATE_READ = 22          # Linux 5.14: map every page now (reads only: no copy-on-write)
_libc_calls: tuple | None = None


def _libc() -> tuple | None:
    """(mmap, munmap, madvise) of the C library, or None where this module does not map."""
    global _libc_calls
    if _libc_calls is None:
        if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "aarch64"):
            _libc_calls = ()
        else:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                mmap_fn, munmap_fn, madvise_fn = libc.mmap, libc.munmap, libc.madvise
            except (OSError, AttributeError):
                _libc_calls = ()
            else:
                mmap_fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                    ctypes.c_long)
                mmap_fn.restype = ctypes.c_void_p
                munmap_fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
                madvise_fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
                munmap_fn.restype = madvise_fn.restype = ctypes.c_int
                _libc_calls = (mmap_fn, munmap_fn, madvise_fn)
    return _libc_calls or None


def can_map(chunk_bytes: int) -> bool:
    """Whether chunks of ``chunk_bytes`` bytes (every chunk but the last) can be mapped side by side."""
    return (_libc() is not None and mmap.PAGESIZE == 4096 and DATA_OFFSET % mmap.PAGESIZE == 0
            and chunk_bytes > 0 and chunk_bytes % mmap.PAGESIZE == 0)


class _Mapping:
    """Owns one mapped address range (numpy keeps it as the array's base); unmapped on collection."""

    def __init__(self, address: int, length: int, munmap) -> None:
        self.address, self.length, self._munmap = address, length, munmap

    def array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        self.__array_interface__ = {"data": (self.address, False), "shape": shape,
                                    "typestr": dtype.str, "version": 3}
        return np.asarray(self)

    def __del__(self) -> None:
        if self.length:
            self._munmap(self.address, self.length)
            self.length = 0


def map_chunk_files(paths: Sequence[Path], n_rows: int, row_shape: tuple[int, ...], dtype: np.dtype,
                    chunk_rows: int) -> np.ndarray | None:
    """One writable (n_rows, *row_shape) array over the data of ``paths`` (chunk ``i`` holds rows
    ``i * chunk_rows`` on, its data at ``DATA_OFFSET``), or None when it cannot be mapped.

    The caller has checked each file: a complete ``.npy`` of that chunk's shape and ``dtype`` with
    its data at ``DATA_OFFSET``. Writes to the array never reach the files (private mapping)."""
    dtype = np.dtype(dtype)
    row_bytes = dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
    chunk_bytes = chunk_rows * row_bytes
    total = n_rows * row_bytes
    if total == 0 or len(paths) != -(-n_rows // chunk_rows) or not can_map(chunk_bytes):
        return None
    mmap_fn, munmap_fn, madvise_fn = _libc()
    page = mmap.PAGESIZE
    length = -(-total // page) * page
    failed = ctypes.c_void_p(-1).value
    base = mmap_fn(None, length, _PROT_NONE, _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE, -1, 0)
    if base is None or base == failed:
        return None
    owner = _Mapping(base, length, munmap_fn)      # unmaps the whole range if a chunk fails below
    for i, path in enumerate(paths):
        lo = i * chunk_bytes
        span = -(-min(chunk_bytes, total - lo) // page) * page   # the last chunk's tail page reads as zeros
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            got = mmap_fn(base + lo, span, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_FIXED, fd, DATA_OFFSET)
        finally:
            os.close(fd)
        if got != base + lo:
            return None
    madvise_fn(base, length, _MADV_POPULATE_READ)  # best effort: on older kernels pages map on first read
    return owner.array((n_rows, *row_shape), dtype)
