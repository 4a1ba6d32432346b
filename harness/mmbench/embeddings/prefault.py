"""Map the pages of a large new array (an embedded pool) on another thread, without huge pages.

A pool of 118k x 384 float32 is 180 MB that the process has never touched, and its first write
costs a page fault per page. numpy asks the kernel for transparent huge pages on large arrays (its
default on Linux), and with the kernel's default ``defrag=madvise`` a huge-page fault compacts
memory first when the process's memory is fragmented, as it is after other work in the same
process (an ``mteb.evaluate``, a notebook): writing the pool then costs several times what the
same writes to mapped memory cost, and the run's TREC writer and search slow down too.

:func:`prepare_pool_memory` therefore (1) opts the array out of huge pages
(``madvise(MADV_NOHUGEPAGE)``; ordinary 4 KiB faults need no compaction) and (2) has the kernel map
every page on a background thread (``madvise(MADV_POPULATE_WRITE)``, Linux 5.14+) while the caller
encodes, which keeps one core busy in Python. Neither call reads or writes the memory's contents,
so they may run while the caller fills the array. The measurements behind both steps are in
``docs/perf.md`` ("Embedding cache and encoding"). Where the calls are not available (another OS,
an older kernel, a C library without madvise) nothing happens and the pages fault on first write,
as before.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
import threading

import numpy as np

__all__ = ["PREFAULT_MIN_BYTES", "page_range", "prepare_pool_memory"]

MADV_NOHUGEPAGE = 15              # linux/mman.h
MADV_POPULATE_WRITE = 23          # linux/mman.h, Linux 5.14
PREFAULT_MIN_BYTES = 32 << 20     # below this, first-write faults cost too little to be worth a thread
_STEP_BYTES = 16 << 20            # one populate call per 16 MiB: the front of the array is mapped first
_libc: ctypes.CDLL | None = None


def _madvise():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)     # calls through CDLL release the GIL
        _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        _libc.madvise.restype = ctypes.c_int
    return _libc.madvise


def page_range(array: np.ndarray) -> tuple[int, int] | None:
    """(address, length) of the whole pages that lie inside ``array``'s buffer, or None if none do."""
    page = mmap.PAGESIZE
    start = array.ctypes.data
    first = -(-start // page) * page
    end = (start + array.nbytes) // page * page
    return (first, end - first) if end > first else None


def _populate(array: np.ndarray, first: int, length: int) -> None:
    """Map [first, first + length), a range inside ``array`` (held here so its buffer stays alive)."""
    madvise = _madvise()
    for offset in range(0, length, _STEP_BYTES):
        if madvise(first + offset, min(_STEP_BYTES, length - offset), MADV_POPULATE_WRITE) != 0:
            return                      # not supported here (EINVAL) or out of memory: stop quietly


def prepare_pool_memory(array: np.ndarray) -> threading.Thread | None:
    """Opt ``array`` (new, C-contiguous, not yet written) out of huge pages and start a daemon
    thread that maps all its pages; return the thread, or None where nothing is done (not Linux,
    an array under :data:`PREFAULT_MIN_BYTES` or not contiguous). ``array``'s contents are never
    read or changed."""
    if not sys.platform.startswith("linux") or not array.flags.c_contiguous or array.nbytes < PREFAULT_MIN_BYTES:
        return None
    span = page_range(array)
    if span is None:
        return None
    try:
        madvise = _madvise()
    except (OSError, AttributeError):                # no C library to call, or one without madvise
        return None
    madvise(span[0], span[1], MADV_NOHUGEPAGE)       # advisory: a failure leaves the default
    thread = threading.Thread(target=_populate, args=(array, *span), name="mmbench-prefault", daemon=True)
    thread.start()
    return thread
