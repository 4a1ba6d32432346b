"""Exact top-k on the CPU: BLAS score tiles scanned against per-query thresholds (``mmbench/native/_native.c``).

The pool is scored tile by tile (numpy's float32 matrix product), and each tile goes to a small C
kernel that keeps, per query, the candidates scoring at or above that query's threshold; when a
query's buffer fills, the threshold rises to its k-th kept score (the kernel's header proves why
nothing of the top k, ties at the cut-off included, is lost). The kept candidates are then put in
the rule's order (:mod:`mmbench.search.ties`: score descending, then tie-break key descending). So the result is
exact by construction: no margin, no tie fix, and every tie at the cut-off resolved by the rule.

Most of a large pool is skipped by a single vector comparison per score, because each query
starts from an estimate of its k-th score (k >= ``seed_min_k``): a high-ranked score over every
``seed_stride``-th candidate (:func:`_seed_plan`; a few % more matrix product). An estimate that was too
high shows at the end (fewer than k candidates kept); that range of queries is scanned again from
minus infinity, so the estimate changes the time, never the result (docs/perf.md, Search, has
its measurements).

The kernel is compiled when mmbench is installed (:mod:`mmbench.native`: an optional extension,
without a C compiler the install still succeeds); :func:`kernel` returns None where it is
missing, and the backend ``scan-cpu`` (:mod:`mmbench.search.backends.scan_cpu`) is then not
available. None of :class:`ScanSettings` changes a result, only its cost: tests shrink them to
reach every branch on small inputs.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from mmbench import native
from mmbench.util.parallel import cores, row_parts, run_parts

__all__ = ["KERNEL_VERSION", "ScanSettings", "kernel", "scan_topk", "scan_above", "can_scan_above", "usable_keys"]

KERNEL_VERSION = "1"      # recorded with results (search.describe_backend)


@dataclass(frozen=True)
class ScanSettings:
    """The kernel driver's knobs (cost only, never the result)."""

    seed_stride: int = 32            # every 32nd candidate estimates each query's k-th score ...
    seed_min_k: int = 500            # ... when k is at least this (smaller k: the running threshold suffices)
    seed_max_bytes: int = 1 << 28    # at most this much float32 sample (a larger pool takes a wider stride)
    seed_min_hits: int = 8           # the sample must hold at least this many of a query's top k on average
    query_chunk: int = 4096          # queries per pass over the pool (bounds the kept buffers)
    tile_bytes: int = 2 << 20        # float32 score tile per matrix product, per thread


DEFAULT_SETTINGS = ScanSettings()


def kernel() -> ctypes.CDLL | None:
    """The compiled helpers holding the kernel (:func:`mmbench.native.library`), or None where not built."""
    return native.library()


def can_scan_above(total: int) -> bool:
    """Whether :func:`scan_above` can run here on a pool of ``total`` rows (kernel built with its
    gather mode, ids in 32 bits)."""
    lib = kernel()
    return lib is not None and hasattr(lib, "mmb_topk_floor") and total <= 1 << 32


def usable_keys(tiebreak: np.ndarray | None, total: int) -> bool:
    """Whether the kernel can take this pool: it holds candidate ids and tie-break keys in 32 bits."""
    if total > 1 << 32:
        return False
    return tiebreak is None or tiebreak.size == 0 or (int(tiebreak.min()) >= 0 and int(tiebreak.max()) < 1 << 32)


class _State:
    """The kernel's per-query thresholds and kept candidates (freed on exit)."""

    def __init__(self, lib: ctypes.CDLL, rows: int, k: int):
        self.lib, self.rows = lib, rows
        self.handle = lib.mmb_topk_new(rows, k)
        if not self.handle:
            raise MemoryError(f"top-k kernel: no memory for {rows} queries")

    def __enter__(self) -> _State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lib.mmb_topk_free(self.handle)

    def seed(self, thresholds: np.ndarray) -> None:
        thresholds = np.ascontiguousarray(thresholds, np.float32)
        self.lib.mmb_topk_seed(self.handle, 0, self.rows, thresholds.ctypes.data)

    def scan(self, scores: np.ndarray, base: int) -> None:
        if self.lib.mmb_topk_scan(self.handle, 0, scores.shape[0], scores.ctypes.data,
                                  scores.strides[0] // 4, scores.shape[1], base) < 0:
            raise MemoryError("top-k kernel: out of memory while keeping candidates")

    def finish(self, keys: np.ndarray | None, n: int, out_i: np.ndarray, out_s: np.ndarray) -> np.ndarray:
        """The first n hits of every row by the rule, into ``out_i`` (int64) and ``out_s`` (float32),
        C-order (rows, n) arrays; returns which rows are complete (exact): those that held at least
        n candidates."""
        for out, dtype in ((out_i, np.int64), (out_s, np.float32)):
            if out.dtype != dtype or out.shape != (self.rows, n) or not out.flags.c_contiguous:
                raise ValueError(f"top-k kernel: an output must be a C-order {dtype.__name__} ({self.rows}, {n}) array")
        complete = np.zeros(self.rows, np.uint8)
        if self.lib.mmb_topk_finish(self.handle, 0, self.rows, None if keys is None else keys.ctypes.data, n,
                                    out_i.ctypes.data, out_s.ctypes.data, complete.ctypes.data) < 0:
            raise MemoryError("top-k kernel: out of memory while ordering the hits")
        return complete.astype(bool)


Blocks = Callable[[], Iterable[tuple[int, np.ndarray]]]
"""Called once per pass over the pool: yields (offset, rows) for the whole pool, in order; rows are
2-D float arrays (float16 too: cast to float32 a tile at a time)."""


def scan_topk(queries: np.ndarray, blocks: Blocks, total: int, n: int, tiebreak: np.ndarray | None, *,
              sample: Callable[[int], np.ndarray] | None = None,
              progress: Callable[[int, int], None] | None = None,
              settings: ScanSettings = DEFAULT_SETTINGS) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-n of ``queries`` (float32 (Q, d), C order) over the ``total`` candidates of
    ``blocks``, in the rule's order.

    ``sample(stride)`` returns every ``stride``-th candidate's row (float32), for the threshold
    estimate (none without it). ``tiebreak`` (int64, values in [0, 2**32): :func:`usable_keys`)
    orders ties (the row id when None). ``progress(done, total)`` counts candidates (all queries'
    share of each block). Returns (ids int64 (Q, n), scores float32 (Q, n)). The kernel never keeps
    a NaN score: a query whose scores include NaN is ranked from its full score row instead (NaN
    last, as the reference).

    The queries are split into equal ranges, one thread per core at a time, each computing its own
    score tiles with a single-threaded BLAS (limited for the call's duration with threadpoolctl):
    no core waits for another between a product and its scan.
    """
    lib = kernel()
    if lib is None:
        raise RuntimeError("the top-k kernel (mmbench/native/_native.c) is not built: reinstall mmbench with a C compiler")
    keys = None if tiebreak is None else np.ascontiguousarray(tiebreak, np.int64)
    out_i = np.empty((queries.shape[0], n), np.int64)
    out_s = np.empty((queries.shape[0], n), np.float32)
    plan = _seed_plan(total, n, queries.shape[1], settings)
    seed = None if plan is None or sample is None else (np.ascontiguousarray(sample(plan[0]), np.float32), plan[1])
    counter = _Progress(progress, total, queries.shape[0])
    tile_bytes = settings.tile_bytes

    def search_range(rows: slice) -> None:
        _search_queries(lib, queries[rows], blocks, n, keys, seed, counter, out_i[rows], out_s[rows], tile_bytes)

    with _single_threaded_blas():
        run_parts(search_range, _query_ranges(queries.shape[0], settings.query_chunk))
    return out_i, out_s


class _Progress:
    """Thread-safe ``progress(done, total)`` in candidates: each query range adds its share."""

    def __init__(self, report: Callable[[int, int], None] | None, total: int, n_queries: int):
        self.report, self.total, self.n_queries = report, total, max(1, n_queries)
        self.work = 0
        self.lock = threading.Lock()

    def add(self, candidates: int, queries: int) -> None:
        if self.report is None:
            return
        with self.lock:
            self.work += candidates * queries
            self.report(self.work // self.n_queries, self.total)


def _query_ranges(n_queries: int, query_chunk: int = DEFAULT_SETTINGS.query_chunk) -> list[slice]:
    """Equal ranges of at most ``query_chunk`` queries, as many as the cores or a multiple of them
    (every matrix product then has about as many rows)."""
    per_core = -(-n_queries // (query_chunk * cores()))
    return row_parts(n_queries, min_rows=1, parts=cores() * per_core)


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread per call while the query ranges run on one thread per core (restored after)."""
    if cores() == 1:
        yield
        return
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield


@functools.cache
def _blas_controller():
    """One threadpoolctl controller per process: building one walks every loaded shared library,
    which cost more than a small search. numpy's BLAS, the one the scan multiplies with, is loaded
    with numpy, before any scan, so a controller made at the first scan sees it."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _search_queries(lib: ctypes.CDLL, q: np.ndarray, blocks: Blocks, n: int, keys: np.ndarray | None,
                    seed: tuple[np.ndarray, int] | None, counter: _Progress, out_i: np.ndarray,
                    out_s: np.ndarray, tile_bytes: int) -> None:
    """Top n of one range of queries into ``out_i``/``out_s`` (views of the result): estimate, scan,
    and where needed scan again or rank fully."""
    start = None if seed is None else _estimate(lib, q, *seed, tile_bytes)
    complete = _pass(lib, q, blocks, n, keys, start, counter, out_i, out_s, tile_bytes)
    if start is not None and not complete.all():
        # an estimate was above the true n-th score: the whole range again from -inf, so that every
        # score comes from the same matrix products (a product of fewer rows may round differently,
        # and ties are decided on the scores as computed)
        complete = _pass(lib, q, blocks, n, keys, None, None, out_i, out_s, tile_bytes)
    with_nan = np.flatnonzero(~complete)
    if with_nan.size:
        out_i[with_nan], out_s[with_nan] = _full_rows(q[with_nan], blocks, n, keys)


def scan_above(queries: np.ndarray, blocks: Blocks, total: int, n: int, slack: np.ndarray, *,
               sample: Callable[[int], np.ndarray] | None = None,
               progress: Callable[[int, int], None] | None = None,
               settings: ScanSettings = DEFAULT_SETTINGS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gather of :mod:`mmbench.search.rescore` done in the kernel: for each query, every
    candidate whose float32 score ``a`` (these score tiles' products) has ``float64(a) >= a_n -
    slack[q]`` (``a_n`` the query's n-th largest score, the subtraction in float64), in no order.

    ``slack``: float64 (Q,), finite and >= 0. Returns (counts int64 (Q,), ids int64
    (counts.sum(),): query after query, complete bool (Q,)). Same arguments and threads as
    :func:`scan_topk`, without tie-break keys (nothing is ordered here). The kernel (``_native.c``,
    ``mmb_topk_floor``) proves a complete row holds that whole set; a row that is not complete
    (fewer than n scores that are numbers: NaN; count 0 and no ids) must be gathered another way.
    A range whose threshold estimate was too high for some rows scans those rows again from -inf,
    so every row's set comes from one pass.
    """
    lib = kernel()
    if lib is None or not hasattr(lib, "mmb_topk_floor"):
        raise RuntimeError("the top-k kernel's gather mode (mmbench/native/_native.c) is not built: reinstall mmbench")
    slack = np.ascontiguousarray(slack, np.float64)
    if slack.shape != (queries.shape[0],) or not (np.isfinite(slack).all() and (slack >= 0).all()):
        raise ValueError("scan_above: slack must be finite, >= 0, one value per query")
    plan = _seed_plan(total, n, queries.shape[1], settings)
    seed = None if plan is None or sample is None else (np.ascontiguousarray(sample(plan[0]), np.float32), plan[1])
    counter = _Progress(progress, total, queries.shape[0])
    ranges = _query_ranges(queries.shape[0], settings.query_chunk)
    results: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def search_range(rows: slice) -> None:
        results[rows.start] = _gather_queries(lib, queries[rows], blocks, n, slack[rows], seed, counter,
                                              settings.tile_bytes)

    with _single_threaded_blas():
        run_parts(search_range, ranges)
    got = [results[r.start] for r in ranges]
    return (np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got]),
            np.concatenate([g[2] for g in got]))


def _gather_queries(lib: ctypes.CDLL, q: np.ndarray, blocks: Blocks, n: int, slack: np.ndarray,
                    seed: tuple[np.ndarray, int] | None, counter: _Progress, tile_bytes: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`scan_above` of one range of queries: estimate, scan, and the rows that the estimate
    left incomplete scanned again from -inf."""
    start = None if seed is None else _estimate(lib, q, *seed, tile_bytes)
    counts, ids, complete = _pass_above(lib, q, blocks, n, slack, start, counter, tile_bytes)
    redo = np.flatnonzero(~complete)
    if start is None or redo.size == 0:
        return counts, ids, complete
    counts2, ids2, complete2 = _pass_above(lib, np.ascontiguousarray(q[redo]), blocks, n, slack[redo], None, None,
                                           tile_bytes)
    owner = np.concatenate([np.repeat(np.arange(q.shape[0]), counts), np.repeat(redo, counts2)])
    ids = np.concatenate([ids, ids2])[np.argsort(owner, kind="stable")]
    counts[redo], complete[redo] = counts2, complete2
    return counts, ids, complete


def _pass_above(lib: ctypes.CDLL, q: np.ndarray, blocks: Blocks, n: int, slack: np.ndarray,
                start: np.ndarray | None, counter: _Progress | None, tile_bytes: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scan of the whole pool in the kernel's gather mode: (counts, ids, complete) of ``q``."""
    width = _tile_width(q.shape[0], tile_bytes)
    tile = np.empty((q.shape[0], width), np.float32)
    counts = np.zeros(q.shape[0], np.int64)
    complete = np.zeros(q.shape[0], np.uint8)
    with _State(lib, q.shape[0], n) as state:
        if lib.mmb_topk_slack(state.handle, 0, q.shape[0], slack.ctypes.data) < 0:
            raise MemoryError("top-k kernel: out of memory")
        _scan_pool(state, q, blocks, start, counter, width, tile)
        if lib.mmb_topk_floor(state.handle, 0, q.shape[0], n, counts.ctypes.data, complete.ctypes.data) < 0:
            raise MemoryError("top-k kernel: out of memory while gathering")
        ids = np.empty(int(counts.sum()), np.int64)
        lib.mmb_topk_ids(state.handle, 0, q.shape[0], complete.ctypes.data, ids.ctypes.data)
    return counts, ids, complete.astype(bool)


def _seed_plan(total: int, n: int, dim: int, settings: ScanSettings = DEFAULT_SETTINGS) -> tuple[int, int] | None:
    """(stride, rank) of the threshold estimate, or None where it is not worth it.

    A query's top n holds m = n / stride sample rows on average; the estimate is the sample's
    ``m + 6 sqrt(m) + 3``-th best score, about the pool's (1 + 6 / sqrt(m)) n-th (n = 1000, stride
    32: the 68th of the sample, ~2n-th of the pool). It is too high only when the sample holds that
    many of the true top n, six standard deviations above the mean for a sample that is random
    with respect to the query (a binomial tail: under one query in a million). Then the range's
    scan is repeated from -inf: a pool ordered against the sample costs time, never exactness.
    """
    stride = max(settings.seed_stride, -(-total * 4 * dim // settings.seed_max_bytes))
    expected = n / stride
    if n < settings.seed_min_k or total < 8 * n or expected < settings.seed_min_hits:
        return None
    return stride, int(np.ceil(expected + 6 * np.sqrt(expected))) + 3


def _tile_width(n_queries: int, tile_bytes: int) -> int:
    """At most this many pool rows per score tile (``tile_bytes`` of float32 scores)."""
    return int(min(1 << 16, max(1, tile_bytes // (4 * max(1, n_queries)))))


def _estimate(lib: ctypes.CDLL, q: np.ndarray, sample: np.ndarray, rank: int, tile_bytes: int) -> np.ndarray:
    """Each query's ``rank``-th best score over the sample rows (-inf where it has fewer)."""
    ids, scores = np.empty((q.shape[0], rank), np.int64), np.empty((q.shape[0], rank), np.float32)
    with _State(lib, q.shape[0], rank) as state:
        _scan_rows(state, q, 0, sample, _tile_width(q.shape[0], tile_bytes))
        complete = state.finish(None, rank, ids, scores)
    return np.where(complete, scores[:, -1], -np.inf)


def _scan_rows(state: _State, q: np.ndarray, offset: int, rows: np.ndarray, width: int,
               tile: np.ndarray | None = None) -> None:
    """Score ``rows`` (global ids from ``offset``) in tiles of equal width (at most ``width``: no
    narrow last tile, which a BLAS may compute with another kernel) and scan each tile."""
    if rows.shape[0] == 0:
        return
    if tile is None:
        tile = np.empty((q.shape[0], width), np.float32)
    count = -(-rows.shape[0] // width)
    bounds = [rows.shape[0] * i // count for i in range(count + 1)]
    cast = _half_caster(state.lib, rows, bounds)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = cast(lo, hi)                  # a view of float32 rows, a cast of others
        state.scan(np.matmul(q, part.T, out=tile[:, :hi - lo]), offset + lo)


def _half_caster(lib: ctypes.CDLL, rows: np.ndarray, bounds: list[int]) -> Callable[[int, int], np.ndarray]:
    """``cast(lo, hi)``: rows lo..hi as C-order float32, float16 rows through the C helper
    ``mmb_half_rows`` (exact, and faster than numpy's cast) into one buffer reused by every tile."""
    if not (rows.dtype == np.float16 and rows.dtype.isnative and hasattr(lib, "mmb_half_rows")
            and (rows.shape[1] <= 1 or rows.strides[1] == 2) and rows.strides[0] > 0 and rows.strides[0] % 2 == 0):
        return lambda lo, hi: np.ascontiguousarray(rows[lo:hi], np.float32)
    widest = max(hi - lo for lo, hi in zip(bounds[:-1], bounds[1:]))
    buffer = np.empty((widest, rows.shape[1]), np.float32)
    ld = rows.strides[0] // 2

    def cast(lo: int, hi: int) -> np.ndarray:
        lib.mmb_half_rows(rows[lo:hi].ctypes.data, ld, rows.shape[1], hi - lo, buffer.ctypes.data)
        return buffer[:hi - lo]

    return cast


def _pass(lib: ctypes.CDLL, q: np.ndarray, blocks: Blocks, n: int, keys: np.ndarray | None,
          start: np.ndarray | None, counter: _Progress | None, out_i: np.ndarray, out_s: np.ndarray,
          tile_bytes: int) -> np.ndarray:
    """One scan of the whole pool for the queries ``q``, its hits into ``out_i``/``out_s``;
    returns which rows are complete (exact)."""
    width = _tile_width(q.shape[0], tile_bytes)
    tile = np.empty((q.shape[0], width), np.float32)
    with _State(lib, q.shape[0], n) as state:
        _scan_pool(state, q, blocks, start, counter, width, tile)
        return state.finish(keys, n, out_i, out_s)


def _scan_pool(state: _State, q: np.ndarray, blocks: Blocks, start: np.ndarray | None, counter: _Progress | None,
               width: int, tile: np.ndarray) -> None:
    """Every block of the pool through the kernel's state (seeded with ``start`` where given)."""
    if start is not None:
        state.seed(start)
    for offset, rows in blocks():
        _scan_rows(state, q, offset, rows, width, tile)
        if counter is not None:
            counter.add(rows.shape[0], q.shape[0])


def _full_rows(q: np.ndarray, blocks: Blocks, n: int, keys: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Top n of a few queries from their full score rows, by the rule, NaN last (lexsort)."""
    scores = np.concatenate([q @ np.ascontiguousarray(rows, np.float32).T for _, rows in blocks()], axis=1)
    ids = np.arange(scores.shape[1])
    rule = np.broadcast_to(ids if keys is None else keys, scores.shape)
    order = np.lexsort((-rule, -scores), axis=1)[:, :n]
    return ids[order], np.take_along_axis(scores, order, axis=1)
