"""The search backend contract (:class:`SearchBackend`), the pool a backend prepares, and input checks.

A backend is an object registered under a name (:mod:`mmbench.search.backends`); it says whether it
is exact, on which devices it runs, whether it is usable here, and what to record about it. Its
:meth:`SearchBackend.prepare` takes the pool once and returns an index whose
:meth:`SearchIndex.search` answers any number of query batches: a backend that builds something
(a GPU copy, shards over devices or ranks) builds it in ``prepare``.

An exact backend's index returns, for each query, the first ``min(k, N)`` candidates by the rule of
:mod:`mmbench.search.ties` over float32 inner products, ties at the cut-off included, equal to
:func:`mmbench.search.reference.exact_search_numpy` (tests/search/test_backend_contract.py runs
every registered backend against it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["MAX_K", "Block", "Pool", "SearchBackend", "SearchIndex", "Progress", "check_k", "as_queries",
           "pool_parts", "check_tiebreak", "parse_device", "as_f32", "iter_blocks", "every_nth_row", "slice_parts", "even_ranges"]

MAX_K = 1000

Progress = Callable[[int, int], None]
"""``progress(done_rows, total_rows)``, called as the pool is searched."""


@dataclass(frozen=True)
class Block:
    """One contiguous run of pool rows: ``rows`` (a view, cast lazily) starting at global row ``offset``."""

    offset: int
    rows: np.ndarray


@dataclass(frozen=True)
class Pool:
    """What a backend prepares: the pool's blocks as stored (float32 or float16, possibly memory
    maps; rows numbered consecutively across ``parts``), the rule's keys, the device and the
    largest float32 block (``memory_budget_bytes``) searched at once. ``devices``: the devices a
    sharding backend splits the pool over (empty: its own choice for ``device``)."""

    parts: tuple[np.ndarray, ...]
    total: int
    dim: int
    tiebreak: np.ndarray | None
    device: str
    memory_budget_bytes: int
    devices: tuple[str, ...] = ()

    @property
    def max_rows(self) -> int:
        """Rows per block: ``memory_budget_bytes`` of float32."""
        return max(1, self.memory_budget_bytes // (4 * max(1, self.dim)))

    def blocks(self) -> Iterator[Block]:
        """The pool in blocks of at most :attr:`max_rows` rows."""
        return iter_blocks(list(self.parts), self.max_rows)


@runtime_checkable
class SearchIndex(Protocol):
    """A prepared pool: answers query batches."""

    def search(self, queries: np.ndarray, k: int, progress: Progress | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(indices int64 (Q, min(k, N)), scores float32 (Q, min(k, N))) in the rule's order;
        ``queries`` is a C-contiguous float32 (Q, d) array, 1 <= k <= MAX_K, Q >= 1, N >= 1."""
        ...


@runtime_checkable
class SearchBackend(Protocol):
    """A registered way to search. ``exact``: whether its answer is always the reference's."""

    name: str
    exact: bool
    devices: tuple[str, ...]     # "cpu" and/or "cuda"

    def available(self, device: str) -> bool | str:
        """True where it can run on ``device`` ("cpu", "cuda", "cuda:N") here, else why not (a str)."""
        ...

    def describe(self, device: str) -> dict:
        """Provenance for results: library, device, version and what else applies."""
        ...

    def prepare(self, pool: Pool) -> SearchIndex:
        """The index of ``pool`` (may keep references to its arrays)."""
        ...


# --------------------------------------------------------------------------- validation


def check_k(k: object) -> int:
    """Return k as int, or raise ValueError unless it is an integer in [1, MAX_K]."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    return int(k)


def as_queries(queries: np.ndarray) -> np.ndarray:
    """The queries as a C-contiguous float32 (Q, d) array."""
    queries = np.asarray(queries)
    if queries.ndim != 2 or not np.issubdtype(queries.dtype, np.floating):
        raise ValueError(
            f"queries must be a 2-D float array (Q, d), got shape {queries.shape} dtype {queries.dtype}"
        )
    return np.ascontiguousarray(queries, dtype=np.float32)


def pool_parts(pool: np.ndarray | Sequence[np.ndarray], d: int) -> list[np.ndarray]:
    """The pool as a list of 2-D float arrays of width d (not copied, not cast)."""
    parts = [pool] if isinstance(pool, np.ndarray) else list(pool)
    for i, part in enumerate(parts):
        if not isinstance(part, np.ndarray) or part.ndim != 2:
            raise ValueError(f"pool block {i} must be a 2-D array (N, d), got {type(part).__name__}"
                             f" of shape {getattr(part, 'shape', None)}")
        if not np.issubdtype(part.dtype, np.floating):
            raise ValueError(f"pool block {i} must be float32 or float16, got dtype {part.dtype}")
        if part.shape[1] != d:
            raise ValueError(
                f"dimension mismatch: queries have d={d} but pool block {i} has d={part.shape[1]}"
            )
    return parts


def check_tiebreak(tiebreak: np.ndarray | None, n: int) -> np.ndarray | None:
    """The tiebreak as an int64 array of length n (or None)."""
    if tiebreak is None:
        return None
    tiebreak = np.asarray(tiebreak)
    if tiebreak.shape != (n,) or not np.issubdtype(tiebreak.dtype, np.integer):
        raise ValueError(
            f"tiebreak must be an integer array of shape ({n},), got shape {tiebreak.shape}"
            f" dtype {tiebreak.dtype}"
        )
    return tiebreak.astype(np.int64, copy=False)


def parse_device(device: object) -> tuple[str, int | None]:
    """("auto"|"cpu"|"cuda", GPU number or None) of a device string, or ValueError."""
    match = re.fullmatch(r"auto|cpu|cuda(?::(\d+))?", device) if isinstance(device, str) else None
    if match is None:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    kind = "cuda" if device.startswith("cuda") else device
    return kind, None if match.group(1) is None else int(match.group(1))


# --------------------------------------------------------------------------- blocks


def as_f32(rows: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 version of rows (no copy when it already is one)."""
    return np.ascontiguousarray(rows, dtype=np.float32)


def iter_blocks(parts: list[np.ndarray], max_rows: int) -> Iterator[Block]:
    """Split the logical concatenation of parts into blocks of at most max_rows rows."""
    offset = 0
    for part in parts:
        for start in range(0, part.shape[0], max_rows):
            yield Block(offset + start, part[start:start + max_rows])
        offset += part.shape[0]


def even_ranges(total: int, count: int) -> list[tuple[int, int]]:
    """Rows ``[lo, hi)`` of ``count`` contiguous, near-equal ranges (the first ``total % count`` one row
    longer) covering ``0..total`` in order; the last ones empty when ``total < count``."""
    sizes = [total // count + (1 if i < total % count else 0) for i in range(count)]
    bounds = np.cumsum([0, *sizes])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def slice_parts(parts: Sequence[np.ndarray], lo: int, hi: int) -> list[np.ndarray]:
    """Rows ``[lo, hi)`` of the parts' logical concatenation, as views of the parts (none empty)."""
    views, start = [], 0
    for part in parts:
        a, b = max(lo, start), min(hi, start + part.shape[0])
        if a < b:
            views.append(part[a - start:b - start])
        start += part.shape[0]
    return views


def every_nth_row(parts: Sequence[np.ndarray], stride: int) -> np.ndarray:
    """Rows 0, stride, 2*stride... of the parts' logical concatenation, as one float32 array."""
    rows, offset = [], 0
    for part in parts:
        rows.append(as_f32(part[(-offset) % stride::stride]))
        offset += part.shape[0]
    return np.concatenate(rows)
