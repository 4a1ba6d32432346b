"""Rankings that depend only on the embeddings: every backend gathers, one routine scores (issue #23).

A backend's float32 scores depend on how its kernel summed them: the same candidate row scores
differently in another position of a BLAS tile, on another BLAS kernel, on a GPU. So no backend's
scores are written or ordered. A backend only *gathers* each query's candidates (its exact top-m by
its own scores, m a little larger than k), and :func:`rescore_pairs` then scores every gathered
(query, candidate) pair once more, the same way whatever gathered it; the run is the rule's order
(:mod:`mmbench.search.ties`) of those scores. Identical candidate rows get identical scores by
construction, and two backends (or machines, or BLAS kernels) that gather the same set write the
same bytes.

The re-score
------------
``r(q, c)``: the float32 query and the stored candidate row (float32 or float16) are cast to
float64; the d products ``q_i * c_i`` are exact in float64 (24-bit significands: 48 bits < 53); they
are added in a fixed order, written with elementwise numpy operations only (no BLAS, no reduction
whose order a library chooses): the row is padded with zeros to a multiple of 8, lane ``j``
accumulates products ``j, j+8, j+16, ...`` left to right, and the 8 lanes are added as
``((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))``. Each step is one IEEE-754 double operation, so the value
is the same on every machine. The scores written are ``float32(r)`` (the run file's float32, printed
as the shortest decimal that reads back to it), and rows are ordered by the rule on those float32
values, so trec_eval re-sorting the file gives the file's order.

Why the gather cannot miss a hit (the margin proof)
----------------------------------------------------
Notation for one query q: ``s(c)`` the real inner product, ``a(c)`` the backend's float32 score,
``r(c)`` the re-score, ``f(c) = float32(r(c))``. Bounds, with ``B = |q| * C`` where C bounds every
pool row's norm (computed once per search, :func:`row_norm_bound`), so ``sum_i |q_i c_i| <= B``
(Cauchy-Schwarz):

* ``|a(c) - s(c)| <= beta = gamma_d(2^-24) * B`` for a float32 dot product of length d summed in
  any order, with or without FMA (Higham, Accuracy and Stability, Thm 3.1 / eq. 3.5), where
  ``gamma_d(u) = d u / (1 - d u)``; the float16 rows are cast to float32 exactly first;
* ``|r(c) - s(c)| <= rho = gamma_d(2^-53) * B`` likewise in float64 (the products are exact);
* ``f`` is monotone: ``f(x) >= f(y)`` implies ``x >= y - eta`` with ``eta`` the float32 spacing at
  ``max(|x|, |y|) <= B + rho``: ``eta <= 2^-23 (B + rho) + 2^-149``.

Let T be the n-th largest a (the backend's k-th score, n = min(k, N)). At least n candidates
``c_1..c_n`` have ``a(c_j) >= T``. If c is among the rule's first n by (f, key) and is not one of
them, some ``c_j`` is ranked below c, so ``f(c) >= f(c_j)``, hence

    a(c) >= s(c) - beta >= r(c) - rho - beta >= r(c_j) - eta - rho - beta
         >= s(c_j) - eta - 2 rho - beta >= a(c_j) - eta - 2 rho - 2 beta >= T - delta,

with ``delta = 2 beta + 2 rho + eta``. So the first n by the rule are among the candidates with
``a >= T - delta``, and those are what :func:`gather_and_rescore` re-scores: a backend that returned
its exact top m (m > n, rule order) has returned all of them when its m-th score is below
``T - delta`` (anything it left out scores at most that); a row where it is not (a tie group wider
than the margin, or NaN scores) asks again for more, and past a cap, streams the pool in float32
tiles keeping every pair at or above the floor (any float32 evaluation obeys the same bound). The
scan kernel (backend ``scan-cpu``) gathers that set directly instead: it keeps, while it scans, every
candidate at or above its running k-th score less delta, and returns exactly the candidates with
``a >= T - delta`` (``mmb_topk_floor`` in ``mmbench/native/_native.c`` proves it), unordered: no
top m, no order, no retry. The bound uses a safety factor of 2 on delta. For unit rows and d = 768, delta is about 2e-4 of |q|.

A backend that cannot promise ``|a - s| <= beta`` (reduced precision such as TF32, bf16, or an
approximate index) must say ``exact = False``; its gather is then best effort.
"""

from __future__ import annotations

import numpy as np

from mmbench.search import ties
from mmbench.search.base import Pool, Progress, SearchIndex, as_f32, iter_blocks
from mmbench.util.parallel import map_parts, row_parts, run_parts

__all__ = ["LANES", "rescore_pairs", "rank_rescored", "row_norm_bound", "margin_delta", "gather_and_rescore"]

LANES = 8                 # accumulation lanes of the re-score (part of its definition: never change it)
_PAIR_CHUNK = 2048        # pairs per re-score step (their float64 products stay in cache)
_BUCKET_ROWS = 256        # pairs are re-scored grouped by blocks of this many candidate rows (cost only)
_RETRY_CAP = 8192         # widest gather asked of a backend before the pool is streamed instead


def _gamma(d: int, u: float) -> float:
    return d * u / (1.0 - d * u)


def row_norm_bound(pool: Pool) -> float:
    """An upper bound on every pool row's Euclidean norm (inf where a row has inf; NaN rows ignored).

    Each row's sum of squares is taken in float64 by the C helper ``mmb_max_sumsq`` (exact squares,
    relative error <= gamma_d(2^-53)), or in float32 by numpy (<= gamma_d(2^-24)); the factor below
    covers either."""
    from mmbench import native as native_helpers

    lib = native_helpers.library()
    best = 0.0
    for part in pool.parts:
        if lib is not None and hasattr(lib, "mmb_max_sumsq") and _c_layout(part):
            best = max(best, _max_sumsq_c(lib, part))
            continue
        for block in iter_blocks([part], pool.max_rows):
            rows = as_f32(block.rows)
            if rows.shape[0] == 0:
                continue
            sq = np.einsum("ij,ij->i", rows, rows)          # float32: relative error <= gamma_d(2^-24)
            with np.errstate(invalid="ignore"):
                top = np.nanmax(sq) if not np.isnan(sq).all() else 0.0
            best = max(best, float(top))
    return float(np.sqrt(best * (1.0 + 2.0 * _gamma(pool.dim, 2.0**-24)) + 1e-300) * (1.0 + 1e-6))


def _max_sumsq_c(lib, part: np.ndarray) -> float:
    """The largest row sum of squares of one part (NaN rows passed over), one thread per core."""
    half, ld = int(part.dtype == np.float16), part.strides[0] // part.dtype.itemsize

    def top(span: slice) -> float:
        return lib.mmb_max_sumsq(part[span].ctypes.data, half, ld, part.shape[1], span.stop - span.start)

    return max(map_parts(top, row_parts(part.shape[0], min_rows=16384)))


def margin_delta(queries: np.ndarray, norm_bound: float) -> np.ndarray:
    """Per query, twice the module docstring's delta: how far below the k-th backend score the
    gather must reach."""
    d = queries.shape[1]
    qn = np.sqrt(np.einsum("ij,ij->i", queries.astype(np.float64), queries.astype(np.float64)))
    big = qn * norm_bound * (1.0 + 1e-6)
    beta, rho = _gamma(d, 2.0**-24) * big, _gamma(d, 2.0**-53) * big
    eta = 2.0**-23 * (big + rho) + 2.0**-149
    with np.errstate(invalid="ignore", over="ignore"):
        return 2.0 * (2.0 * beta + 2.0 * rho + eta)


def rescore_pairs(queries: np.ndarray, pool: Pool, rows: np.ndarray, ids: np.ndarray, *,
                  native: bool | None = None) -> np.ndarray:
    """float64 ``r(queries[rows[i]], pool row ids[i])`` for every pair, in the fixed order of the
    module docstring (the same value whatever the pair's position, chunk or thread).

    ``native``: the C loop ``mmb_rescore_grouped`` of ``mmbench/native/_native.c`` (float32 and
    float16 parts, where it is built: None takes it where it can; AVX2 + FMA where the CPU has
    them, else portable C) or numpy's elementwise operations (False); all give the same bits.
    """
    lib = _rescore_library(native)
    queries = np.ascontiguousarray(queries, np.float32)
    rows = np.ascontiguousarray(rows, np.int64)
    ids = np.ascontiguousarray(ids, np.int64)
    out = np.empty(rows.size, np.float64)
    offset = 0
    for part in pool.parts:
        if len(pool.parts) == 1:
            sel, local, q_rows = None, ids, rows
        else:
            sel = np.flatnonzero((ids >= offset) & (ids < offset + part.shape[0]))
            local, q_rows = ids[sel] - offset, rows[sel]
        offset += part.shape[0]
        if local.size == 0:
            continue
        res = out if sel is None else np.empty(local.size, np.float64)
        if lib is not None and _c_layout(part):
            _rescore_c(lib, queries, part, q_rows, local, res)
        else:
            _rescore_numpy(queries, part, q_rows, local, res)
        if sel is not None:
            out[sel] = res
    return out


def _rescore_library(native: bool | None):
    """The compiled helpers holding the re-score, or None for numpy's (``native``: rescore_pairs)."""
    from mmbench import native as native_helpers

    lib = None if native is False else native_helpers.library()
    if lib is not None and not hasattr(lib, "mmb_rescore_grouped"):
        lib = None
    if native and lib is None:
        raise RuntimeError("the C re-score is not built: reinstall mmbench with a C compiler")
    return lib


def _c_layout(part: np.ndarray) -> bool:
    """Whether the C loop reads this part in place: native-order float32 or float16 rows of
    contiguous values, a positive whole number of values apart."""
    size = part.dtype.itemsize
    return (part.dtype in (np.float32, np.float16) and part.dtype.isnative and part.shape[0] > 0
            and (part.shape[1] <= 1 or part.strides[1] == size) and part.strides[0] > 0
            and part.strides[0] % size == 0)


def _rescore_c(lib, queries: np.ndarray, part: np.ndarray, q_rows: np.ndarray, local: np.ndarray,
               out: np.ndarray) -> None:
    """:func:`rescore_pairs` of one part with the C loop: the pairs grouped by blocks of
    ``_BUCKET_ROWS`` candidate rows (:func:`_by_candidate_block`), in ranges of about equal size,
    one thread per core."""
    order = _by_candidate_block(lib, local, part.shape[0])
    ld = part.strides[0] // part.dtype.itemsize
    half = int(part.dtype == np.float16)

    def run(span: slice) -> None:
        if lib.mmb_rescore_grouped(queries.ctypes.data, part.ctypes.data, half, ld, part.shape[1],
                                   _BUCKET_ROWS, span.stop - span.start, order[span].ctypes.data,
                                   q_rows.ctypes.data, local.ctypes.data, out.ctypes.data) < 0:
            raise MemoryError("the C re-score: out of memory")

    run_parts(run, row_parts(local.size, min_rows=4096))


def _by_candidate_block(lib, ids: np.ndarray, n_rows: int) -> np.ndarray:
    """An order of the pairs grouped by blocks of ``_BUCKET_ROWS`` candidate rows (a stable counting
    sort, ``mmb_block_order``): a candidate row is then read from memory and cast about once and
    reused from the cache by every query that gathered it, where in the pairs' own (query) order
    each pair reads its row from memory. The order changes no value (each pair's sum has a fixed
    order), only the cost."""
    order = np.empty(ids.size, np.int64)
    if lib.mmb_block_order(ids.ctypes.data, ids.size, _BUCKET_ROWS, -(-n_rows // _BUCKET_ROWS), order.ctypes.data) < 0:
        raise MemoryError("the C re-score: out of memory")
    return order


def _rescore_numpy(queries: np.ndarray, part: np.ndarray, rows: np.ndarray, ids: np.ndarray,
                   out: np.ndarray) -> None:
    """:func:`rescore_pairs` of one part with numpy's elementwise float64 operations."""
    d = queries.shape[1]
    width = -(-d // LANES) * LANES
    q64 = np.zeros((queries.shape[0], width), np.float64)
    q64[:, :d] = queries
    cuts = list(range(0, rows.size, _PAIR_CHUNK)) + [rows.size]

    def chunks(span: slice) -> None:
        for a, b in zip(cuts[span.start:span.stop], cuts[span.start + 1:span.stop + 1]):
            prod = np.zeros((b - a, width), np.float64)
            prod[:, :d] = part[ids[a:b]]                    # exact casts of float32 / float16
            prod *= q64[rows[a:b]]                          # exact: 24-bit x 24-bit significands
            acc = np.zeros((b - a, LANES), np.float64)      # lanes start at +0.0, as the C loop's
            for j in range(0, width, LANES):
                acc += prod[:, j:j + LANES]
            out[a:b] = ((acc[:, 0] + acc[:, 1]) + (acc[:, 2] + acc[:, 3])) + (
                (acc[:, 4] + acc[:, 5]) + (acc[:, 6] + acc[:, 7]))

    run_parts(chunks, row_parts(len(cuts) - 1, min_rows=4))


def gather_and_rescore(index: SearchIndex, queries: np.ndarray, pool: Pool, n: int,
                       margin: int | None = None, progress: Progress | None = None, *,
                       native: bool | None = None, norm_bound: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first n of every query by the rule over re-scored values: (ids int64 (Q, n), float32 (Q, n)).

    ``index`` gathers (its exact top m, m = n + margin, default max(16, n/8)); rows it may have cut
    short are asked again (4m, up to the index's ``max_gather`` attribute where it has one, else
    8192), then streamed (module docstring). ``native``: :func:`rescore_pairs`. ``norm_bound``:
    :func:`row_norm_bound` of this pool, when the caller computed it before (it reads every row:
    a caller searching one pool many times computes it once); None computes it here.

    An index with a method ``gather_above(queries, n, delta, progress)`` (the scan kernel's,
    :func:`mmbench.search.scan_topk.scan_above`) is asked for the floor's set directly when no
    ``margin`` is given and every delta is finite: it returns (counts, ids, complete), every
    candidate with ``a >= a_n - delta`` of each complete row, unordered; no top m, no order, no
    retry. Its rows that are not complete (or None: it cannot answer) take the path above.

    A backend whose index evaluates a candidate more than once (a block's kernel, then its cut-off
    tie fix) fits the proof too: every evaluation obeys the same bound, and a candidate it leaves out
    was left out on an evaluation at or below its m-th score.
    """
    total, n_q = pool.total, queries.shape[0]
    delta = margin_delta(queries, row_norm_bound(pool) if norm_bound is None else norm_bound)
    cap = max(n, getattr(index, "max_gather", _RETRY_CAP))     # the widest gather the index answers
    m = min(total, cap, n + (max(16, n // 8) if margin is None else margin))
    out_i = np.empty((n_q, n), np.int64)
    out_s = np.empty((n_q, n), np.float32)
    todo = np.arange(n_q)
    first = True
    gather = getattr(index, "gather_above", None)
    got = None if gather is None or margin is not None or not np.isfinite(delta).all() else (
        gather(queries, n, delta, progress))
    if got is not None:
        counts, ids, complete = got
        rows = np.flatnonzero(complete)
        if rows.size:
            values = rescore_pairs(queries, pool, np.repeat(rows, counts[rows]), ids, native=native)
            out_i[rows], out_s[rows] = rank_rescored(counts[rows], ids, values, pool.tiebreak, n, native=native)
        todo, first = np.flatnonzero(~complete), False
    while todo.size:
        a_i, a_s = index.search(queries[todo], m, progress if first else None)
        first = False
        a_s = a_s.astype(np.float64)
        floor = a_s[:, n - 1] - delta[todo]
        done = ((a_s[:, -1] < floor) | (m == total)) & ~np.isnan(floor)   # NaN at the n-th: streamed
        if done.any():              # every candidate at or above the floor, re-scored, in the rule's order
            rows = todo[done]
            keep = a_s[done] >= floor[done, None]
            counts = keep.sum(axis=1)
            ids = a_i[done][keep]                               # row-major: each query's candidates together
            values = rescore_pairs(queries, pool, np.repeat(rows, counts), ids, native=native)
            out_i[rows], out_s[rows] = rank_rescored(counts, ids, values, pool.tiebreak, n, native=native)
        todo, rest_floor = todo[~done], floor[~done]
        if todo.size and m < min(total, cap) and not np.isnan(rest_floor).all():
            m = min(total, cap, 4 * m)   # a tie group (or near-ties) wider than the margin: ask for more
            continue
        if todo.size:
            rows, ids = _stream_above(queries, pool, todo, rest_floor)
            scores = rescore_pairs(queries, pool, rows, ids, native=native).astype(np.float32)
            local = np.searchsorted(todo, rows)
            got_i, got_s = ties.select_ragged(local, ids, scores, todo.size, n, pool.tiebreak)
            out_i[todo], out_s[todo] = got_i, got_s
        break
    return out_i, out_s


def rank_rescored(counts: np.ndarray, ids: np.ndarray, values: np.ndarray, tiebreak: np.ndarray | None,
                  n: int, *, native: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first n of each row's re-scored candidates by the rule: row i's are the next ``counts[i]``
    (at least n) entries of ``ids`` with float64 ``values``, ranked by float32 of the value, then
    tie-break key (:mod:`mmbench.search.ties`). Returns (ids int64 (rows, n), float32 (rows, n)).

    ``native``: the C sort ``mmb_rank_rescored`` (where keys fit in 32 bits: None takes it where it
    can) or :func:`ties.select_ragged` (False); the same order (NaN last in both).
    """
    lib = _rescore_library(native)
    if lib is not None and not hasattr(lib, "mmb_rank_rescored"):
        lib = None
    fits = tiebreak is None or tiebreak.size == 0 or (int(tiebreak.min()) >= 0 and int(tiebreak.max()) < 1 << 32)
    n_rows = counts.size
    if lib is None or not fits:
        scores = values.astype(np.float32)
        return ties.select_ragged(np.repeat(np.arange(n_rows), counts), ids, scores, n_rows, n, tiebreak)
    offsets = np.zeros(n_rows + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    keys = None if tiebreak is None else np.ascontiguousarray(tiebreak, np.int64)
    out_i = np.empty((n_rows, n), np.int64)
    out_s = np.empty((n_rows, n), np.float32)

    def part(span: slice) -> None:
        if lib.mmb_rank_rescored(span.stop - span.start, offsets[span.start:].ctypes.data, ids.ctypes.data,
                                 values.ctypes.data, None if keys is None else keys.ctypes.data, n,
                                 out_i[span].ctypes.data, out_s[span].ctypes.data) < 0:
            raise MemoryError("the C ranking: out of memory")

    run_parts(part, row_parts(n_rows, min_rows=ties.ROWS_PER_THREAD))
    return out_i, out_s


def _stream_above(queries: np.ndarray, pool: Pool, rows: np.ndarray, floor: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Every (query row, candidate) with float32 score >= the row's floor (every candidate where the
    floor is NaN), streaming the pool in tiles."""
    q = queries[rows]
    f = np.where(np.isnan(floor), -np.inf, floor)[:, None]
    whole = np.isnan(floor)
    out_r, out_i = [], []
    for block in pool.blocks():
        for c0 in range(0, block.rows.shape[0], 4096):
            tile = (q @ as_f32(block.rows[c0:c0 + 4096]).T).astype(np.float64)
            r, c = np.nonzero((tile >= f) | whole[:, None] | (np.isnan(tile) & whole[:, None]))
            out_r.append(rows[r])
            out_i.append(c.astype(np.int64) + block.offset + c0)
    return np.concatenate(out_r), np.concatenate(out_i)
