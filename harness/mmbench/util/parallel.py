"""Row-parallel work on threads, for numpy and Arrow kernels that release the GIL (sorts, casts, joins).

Each part is a contiguous range of rows; the parts are independent, so splitting never changes a
result, only how many cores compute it. One call makes its threads and joins them before it
returns: no pool outlives a call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                     # not Linux
        return max(1, os.cpu_count() or 1)


def row_parts(n_rows: int, *, min_rows: int, parts: int | None = None) -> list[slice]:
    """``n_rows`` split into at most ``parts`` (default: one per core) contiguous ranges of at
    least ``min_rows`` rows each (one range when there are fewer rows)."""
    want = cores() if parts is None else max(1, parts)
    count = max(1, min(want, n_rows // max(1, min_rows)))
    bounds = [n_rows * i // count for i in range(count + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def map_parts(fn: Callable[[slice], T], parts: list[slice], *, threads: int | None = None) -> Iterator[T]:
    """``fn`` of every part, yielded in part order; computed on up to ``threads`` threads (default:
    one per core) while the caller consumes earlier results. A failure is raised when its part's
    result is reached; the remaining parts are cancelled or awaited before the call returns."""
    threads = min(len(parts), cores() if threads is None else max(1, threads))
    if threads <= 1:
        for part in parts:
            yield fn(part)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="mmbench-rows") as pool:
        futures = [pool.submit(fn, part) for part in parts]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def run_parts(fn: Callable[[slice], object], parts: list[slice], *, threads: int | None = None) -> None:
    """``fn`` of every part for its side effects (each part writes its own rows), as :func:`map_parts`."""
    for _ in map_parts(fn, parts, threads=threads):
        pass
