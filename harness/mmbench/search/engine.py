"""Exact maximum-inner-product top-k search: the only module of mmbench that imports faiss.

Inputs are L2-normalised by the caller, so this module does plain inner products in float32.
faiss and torch are imported inside functions, never when this module is imported.

The tie-break rule (the one rule of mmbench, shared with the metrics and the TREC writer)
--------------------------------------------------------------------------------------
Hits are ordered by score descending, then by ``tiebreak`` descending, where ``tiebreak[i]`` is
candidate ``i``'s rank in candidate-id string order. That is trec_eval's "score desc, then docno
desc". Without ``tiebreak`` the row index plays its part (the larger row index wins a tie).
The rule holds exactly, also at the cut-off: when several candidates tie with the k-th score,
those with the larger ``tiebreak`` are the ones returned. Ties are decided on the float32 scores
as computed; ``tiebreak`` values should be distinct (a permutation).

How the cut-off is made exact
-----------------------------
faiss (and ``torch.topk``) return *some* members of a tie group that straddles their cut-off.
So each block is searched for ``k + margin`` hits (``margin = max(TIE_MARGIN, k * TIE_MARGIN_FRACTION)``),
the per-block hits are merged with the rule above, and a query row is rescored against a block
only when that block's last retrieved score equals the final k-th score: only then can an
unretrieved candidate of the block tie with the k-th hit. A tie group has to span more than the
margin for this to happen (M-BEIR has duplicate images under distinct ids, which do tie exactly;
coarse embeddings such as hashed bags of words tie by the hundred at k=1000), so it is rare. The
margin grows with k because each rescored row costs a pass over the whole block while a wider
heap costs faiss little. Measured at k=1000, 1k queries, 2 cores (margin 32 / 125 / 250 / 500):
random 768-d x 100k 0.71 / 0.73 / 0.74 / 0.76 s; hashed bag-of-words 384-d x 118k WordNet
glosses (538 of 1000 rows tie past a margin of 32) 1.07 / 0.83 / 0.75 / 0.69 s. 250 it is.

Backends
--------
* CPU, where the kernel is built (``mmbench/native/_native.c``, compiled at install): the threshold scan of
  :mod:`mmbench.search.scan_topk` for every pool. numpy BLAS score tiles, each scanned by C against
  per-query thresholds estimated from a sample of the pool; exact by construction (every
  candidate at or above the k-th score is kept, ties at the cut-off included), no margin, no tie
  fix. 1k queries at k=1000, 2-core Zen 4: 118k x 384-d 0.56 s, against 0.72 s for the faiss path
  below (``knn`` 0.63 s + merge + tie fix); 10k x 768-d 0.13 s against 0.21 s for the full score
  rows. The paths below remain for a build without the kernel (no C compiler at install).
* CPU without the kernel, a block of at most ``GEMM_TOPK_ROWS_PER_HIT`` rows per hit (k=1000: up to 16k candidates, as
  many MTEB tasks and CQADupStack forums): its full score rows, a chunk of queries at a time (numpy
  BLAS sgemm), then ``argpartition`` for the k best and the rule's order; in a row whose k-th
  score also belongs to a candidate left out, the slots at that score go to the candidates at it
  with the largest tiebreak. Exact by construction (no margin, no tie fix), and cheaper than
  faiss's heaps there: 1k queries x 384-d at k=1000, 2 cores (faiss + tie fix / full rows), random
  data: 5k 0.128 / 0.075 s, 10k 0.172 / 0.109 s, 20k 0.21 / 0.18 s, 40k 0.27 / 0.32 s (at k=100
  they cross near 50 rows per hit); WordNet 10k hashed bags of words (ties past the cut-off in
  882 of 1000 rows): 0.21 / 0.15 s.
* CPU without the kernel, larger blocks: faiss ``knn`` (the ``IndexFlatIP`` kernel, BLAS sgemm + heaps), all queries in ONE call
  per pool block, with faiss's BLAS threshold lowered so small query batches never take its slow
  non-BLAS path, and its database tile raised from 1024 to ``FAISS_DATABASE_TILE`` rows: as fast
  on an idle machine, and 4x fewer thread barriers (sgemm + parallel heap update per tile), which
  kept it from collapsing when other processes compete for the cores. Both settings are global
  in faiss; they are restored when the call returns. On a shared machine, starting the process
  with ``OMP_WAIT_POLICY=PASSIVE`` helps further (measured 0.75 -> 0.83 of GEMM speed beside a
  busy process, no change on an idle machine); it must be set before faiss loads, so it is the
  caller's choice, not this module's.
* GPU, faiss built with GPU support: ``faiss.knn_gpu`` (the ``GpuIndexFlatIP`` brute-force
  kernel) on ``StandardGpuResources``. float32 storage is used: faiss's float16 option needs the
  queries in float16 too, which would change the ranking.
* GPU, faiss without GPU support but torch with CUDA: float32 ``torch.mm`` + ``torch.topk``
  with TF32 switched off, query chunks sized to bound the score matrix.

Pools larger than ``memory_budget_bytes`` (as float32) are searched block by block with a running
top-k merge; float16 blocks (or memory maps) are cast to float32 one block at a time.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from mmbench.search import scan_topk
from mmbench.util.parallel import row_parts, run_parts

__all__ = ["TIE_MARGIN", "MAX_K", "FAISS_DATABASE_TILE", "search", "exact_search_numpy", "describe_backend"]

MAX_K = 1000
TIE_MARGIN = 32
TIE_MARGIN_FRACTION = 0.25
FAISS_DATABASE_TILE = 4096
_TORCH_SCORE_BYTES = 1 << 30
_TILE_ROWS, _TILE_QUERIES = 4096, 1024   # tie-fix rescoring tile: 16 MiB of float32 scores
_TIE_SLACK = 1e-5   # tie-fix floor: this far (relative, at least absolute) below the k-th score
_GEMM_CHUNK_BYTES = 1 << 29   # exact block top-k: 32 bytes per score (scores, partition, masks) per query chunk
GEMM_TOPK_ROWS_PER_HIT = 16   # CPU: a block of at most this many rows per hit is ranked from its full score rows
CPU_SCAN = True               # CPU: the threshold-scan kernel (mmbench/search/scan_topk.py) where it is built

TopK = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""(float32 block (B, d), kb) -> (scores float32 (Q, kb) descending, row-in-block int64 (Q, kb))."""


@dataclass(frozen=True)
class _Block:
    """One contiguous run of pool rows: ``rows`` (a view, cast lazily) starting at global row ``offset``."""

    offset: int
    rows: np.ndarray


# --------------------------------------------------------------------------- validation


def _check_k(k: object) -> int:
    """Return k as int, or raise ValueError unless it is an integer in [1, MAX_K]."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    return int(k)


def _as_queries(queries: np.ndarray) -> np.ndarray:
    """The queries as a C-contiguous float32 (Q, d) array."""
    queries = np.asarray(queries)
    if queries.ndim != 2 or not np.issubdtype(queries.dtype, np.floating):
        raise ValueError(
            f"queries must be a 2-D float array (Q, d), got shape {queries.shape} dtype {queries.dtype}"
        )
    return np.ascontiguousarray(queries, dtype=np.float32)


def _pool_parts(pool: np.ndarray | Sequence[np.ndarray], d: int) -> list[np.ndarray]:
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


def _check_tiebreak(tiebreak: np.ndarray | None, n: int) -> np.ndarray | None:
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


# --------------------------------------------------------------------------- ordering


_ROWS_PER_THREAD = 64          # rows below which ordering stays on the calling thread
_ENTRIES_PER_THREAD = 1 << 16  # ragged entries below which ordering stays on the calling thread


def _select(scores: np.ndarray, idx: np.ndarray, tiebreak: np.ndarray | None,
            n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first n (at most the row width) of (idx, scores) by score desc, then tiebreak
    desc (row index if None). Row ranges are ordered on one thread per core (numpy's sorts release the GIL)."""
    keys = idx if tiebreak is None else tiebreak[idx]
    n = min(n, idx.shape[1])
    out_i = np.empty((idx.shape[0], n), idx.dtype)
    out_s = np.empty((idx.shape[0], n), scores.dtype)

    def part(rows: slice) -> None:
        order = _rule_order(scores[rows], keys[rows])[:, :n]
        out_i[rows] = np.take_along_axis(idx[rows], order, axis=1)
        out_s[rows] = np.take_along_axis(scores[rows], order, axis=1)

    run_parts(part, row_parts(idx.shape[0], min_rows=_ROWS_PER_THREAD))
    return out_i, out_s


def _packed_order_keys(scores: np.ndarray, keys: np.ndarray) -> np.ndarray | None:
    """uint64 values whose ascending order is (score desc, key desc), or None where they cannot be
    built (keys outside [0, 2**32) or NaN scores: the caller takes a lexsort).

    Scores are mapped to unsigned integers of the same order (-0.0 counted as +0.0, as the float
    comparison does) and packed above the keys.
    """
    if keys.size and (keys.min() < 0 or keys.max() >= 1 << 32 or np.isnan(scores).any()):
        return None
    bits = (np.asarray(scores, np.float32) + np.float32(0.0)).view(np.uint32).astype(np.uint64)
    ordered = np.where(bits >> 31, ~bits & 0xFFFFFFFF, bits | 0x80000000)
    return ~((ordered << 32) | keys.astype(np.uint64))


def _rule_order(scores: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Per row, the argsort of (score desc, key desc).

    One argsort of the packed keys (:func:`_packed_order_keys`) does what a two-key lexsort does,
    3x faster at 1k x 1.5k; where they cannot be packed, the lexsort (which ranks NaN last).
    """
    packed = _packed_order_keys(scores, keys)
    if packed is None:
        return np.lexsort((-keys, -scores), axis=-1)
    return np.argsort(packed, axis=-1)


def _iter_blocks(parts: list[np.ndarray], max_rows: int) -> Iterator[_Block]:
    """Split the logical concatenation of parts into blocks of at most max_rows rows."""
    offset = 0
    for part in parts:
        for start in range(0, part.shape[0], max_rows):
            rows = part[start:start + max_rows]
            yield _Block(offset + start, rows)
        offset += part.shape[0]


def _as_f32(rows: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 version of rows (no copy when it already is one)."""
    return np.ascontiguousarray(rows, dtype=np.float32)


# --------------------------------------------------------------------------- exact recompute


def _exact_block_topk(queries: np.ndarray, block: _Block, n: int, tiebreak: np.ndarray | None,
                      budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-n (at most the block's rows) of one block for each query row, by the tie-break
    rule, in global row ids, from the block's full score rows (BLAS GEMM, a chunk of queries at a
    time): ``argpartition`` picks n best, which are then put in the rule's order.

    ``argpartition`` takes every candidate above the n-th score, but *some* of those at it. Where a
    row's n-th score also belongs to a candidate left out (a tie straddling the cut-off), the row's
    slots holding that score are given to the candidates at it with the largest tiebreak: only
    the tie group is ordered (bag-of-words embeddings put ties past the cut-off in most rows, a few
    dozen candidates each)."""
    matrix = _as_f32(block.rows)
    size = matrix.shape[0]
    n = min(n, size)
    chunk = max(1, min(budget, _GEMM_CHUNK_BYTES) // (32 * size))
    rule_keys = np.arange(block.offset, block.offset + size)
    if tiebreak is not None:
        rule_keys = tiebreak[rule_keys]
    out_i = np.empty((queries.shape[0], n), np.int64)
    out_s = np.empty((queries.shape[0], n), np.float32)
    for start in range(0, queries.shape[0], chunk):
        scores = queries[start:start + chunk] @ matrix.T
        top = np.empty((scores.shape[0], n), np.int64)

        def part(rows: slice) -> None:
            top[rows] = np.argpartition(scores[rows], size - n, axis=1)[:, size - n:]

        run_parts(part, row_parts(scores.shape[0], min_rows=_ROWS_PER_THREAD))
        top_s = np.take_along_axis(scores, top, axis=1)
        kth = top_s.min(axis=1, keepdims=True)
        at_cut, slots = scores == kth, top_s == kth
        straddle = np.flatnonzero(np.count_nonzero(at_cut, axis=1) > np.count_nonzero(slots, axis=1))
        if straddle.size:
            _give_tied_slots(top, straddle, at_cut[straddle], slots[straddle], rule_keys)
        rows = slice(start, start + scores.shape[0])
        out_i[rows], out_s[rows] = _select(top_s, top + block.offset, tiebreak, n)
    return out_i, out_s


def _give_tied_slots(top: np.ndarray, straddle: np.ndarray, at_cut: np.ndarray, slots: np.ndarray,
                     rule_keys: np.ndarray) -> None:
    """In rows ``straddle`` of ``top``, the slots marked in ``slots`` (those holding the cut-off
    score) get, in place, the columns at the cut-off (``at_cut``) with the largest ``rule_keys``."""
    r, c = np.nonzero(at_cut)                         # every candidate at the cut-off, row by row
    best_first = np.lexsort((-rule_keys[c], r))       # by row, then largest key first
    per_row = np.bincount(r, minlength=straddle.size)
    wanted = np.count_nonzero(slots, axis=1)          # slots to give per row (fewer than per_row)
    row_first = np.cumsum(per_row) - per_row
    nth = np.arange(wanted.sum()) - np.repeat(np.cumsum(wanted) - wanted, wanted)
    chosen = c[best_first[np.repeat(row_first, wanted) + nth]]
    slot_r, slot_c = np.nonzero(slots)                # row by row too, ``wanted`` per row
    top[straddle[slot_r], slot_c] = chosen


def _entries_above(queries: np.ndarray, block: _Block, floor: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (query row, global row id, score) of the block with score >= that row's floor.

    The block is scored tile by tile (``_TILE_ROWS`` candidates x at most ``_TILE_QUERIES``
    queries), so the score tile stays in cache and no (Q, N) matrix is ever materialised.
    """
    matrix = _as_f32(block.rows)
    found_r, found_c, found_s = [], [], []
    for q0 in range(0, queries.shape[0], _TILE_QUERIES):
        q = queries[q0:q0 + _TILE_QUERIES]
        f = floor[q0:q0 + _TILE_QUERIES, None]
        for c0 in range(0, matrix.shape[0], _TILE_ROWS):
            tile = q @ matrix[c0:c0 + _TILE_ROWS].T
            r, c = np.nonzero(tile >= f)
            found_s.append(tile[r, c])
            found_r.append(r + q0)
            found_c.append(c.astype(np.int64) + (block.offset + c0))
    if not found_r:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(found_r), np.concatenate(found_c), np.concatenate(found_s)


def _select_ragged(rows: np.ndarray, idx: np.ndarray, scores: np.ndarray, n_rows: int, n: int,
                   tiebreak: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first n of a ragged (row, idx, score) list by the rule; every row has >= n entries."""
    keys = idx if tiebreak is None else tiebreak[idx]
    counts = np.bincount(rows, minlength=n_rows)
    first = np.cumsum(counts) - counts
    packed = _packed_order_keys(scores, keys)
    order = np.lexsort((-keys, -scores, rows)) if packed is None else _row_major_order(rows, packed, counts)
    take = order[first[:, None] + np.arange(n)]
    return idx[take], scores[take]


def _row_major_order(rows: np.ndarray, packed: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The argsort of the entries by (row, packed key): the lexsort ``(packed, rows)``, 1.3x faster
    on one thread, and split into ranges of rows of about equal entry counts, one per core.

    A stable radix sort by row (16-bit rows) groups the entries; each range then sorts its entries
    by packed key and regroups them by row with a second stable radix sort.
    """
    small = rows.astype(np.uint16) if counts.size <= 1 << 16 else rows
    by_row = np.argsort(small, kind="stable")
    ends = np.cumsum(counts)
    n_parts = len(row_parts(rows.size, min_rows=_ENTRIES_PER_THREAD))
    cuts = np.searchsorted(ends, [rows.size * i // n_parts for i in range(1, n_parts)], side="left")
    bounds = [0, *(int(ends[c]) for c in cuts), rows.size]          # whole rows in each range
    order = np.empty_like(by_row)

    def part(span: slice) -> None:
        seg = by_row[span]
        seg = seg[np.argsort(packed[seg])]
        order[span] = seg[np.argsort(small[seg], kind="stable")]

    run_parts(part, [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])])
    return order


def _hits_outside(block: _Block, idx: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(idx, a copy of scores with the hits that lie in ``block`` set to -inf): the hits it keeps."""
    scores = scores.copy()
    scores[(idx >= block.offset) & (idx < block.offset + block.rows.shape[0])] = -np.inf
    return idx, scores


def _fix_cutoff_ties(queries: np.ndarray, idx: np.ndarray, scores: np.ndarray,
                     lasts: list[tuple[_Block, np.ndarray]], tiebreak: np.ndarray | None,
                     budget: int) -> None:
    """Recompute, in place, the rows whose k-th score may tie with an unretrieved candidate.

    For each such row and block, the block is rescored and every candidate scoring at least a
    floor just below the row's k-th score is collected (``_entries_above``); the row's hits from
    the block are replaced by those and the row is re-selected. That is exact whenever the new
    n-th score is still >= the floor (no candidate left out can reach it); the few rows where it
    is not (the floor was above the rescored cut-off) take the full recompute of the block.
    """
    kth = scores[:, -1]
    n = idx.shape[1]
    for block, last in lasts:
        rows = np.flatnonzero(last >= kth)
        if rows.size == 0:
            continue
        floor = kth[rows] - _TIE_SLACK * np.maximum(1.0, np.abs(kth[rows]))
        cur_i, cur_s = _hits_outside(block, idx[rows], scores[rows])
        found_r, found_i, found_s = _entries_above(queries[rows], block, floor.astype(np.float32))
        new_i, new_s = _select_ragged(
            np.concatenate((np.repeat(np.arange(rows.size), n), found_r)),
            np.concatenate((cur_i.ravel(), found_i)), np.concatenate((cur_s.ravel(), found_s)),
            rows.size, n, tiebreak)
        ok = new_s[:, -1] >= floor
        idx[rows[ok]], scores[rows[ok]] = new_i[ok], new_s[ok]
        if ok.all():
            continue
        bad = rows[~ok]                         # the floor was too high: rescore the whole block
        exact_i, exact_s = _exact_block_topk(queries[bad], block, n, tiebreak, budget)
        cur_i, cur_s = _hits_outside(block, idx[bad], scores[bad])
        idx[bad], scores[bad] = _select(np.hstack((cur_s, exact_s)), np.hstack((cur_i, exact_i)),
                                        tiebreak, n)


# --------------------------------------------------------------------------- backends


def _resolve_device(device: str) -> tuple[str, str]:
    """(library, device) for a device request: ("faiss"|"torch", "cpu"|"cuda"|"cuda:N")."""
    match = re.fullmatch(r"auto|cpu|cuda(?::(\d+))?", device) if isinstance(device, str) else None
    if match is None:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "cpu":
        return "faiss", "cpu"
    import faiss

    wanted = int(match.group(1) or 0)
    if faiss.get_num_gpus() > wanted:
        return "faiss", "cuda" if device == "auto" else device
    if _torch_cuda_count() > wanted:
        return "torch", "cuda" if device == "auto" else device
    if device != "auto":
        raise ValueError(f"device={device!r} requested but neither faiss nor torch can see that CUDA GPU")
    return "faiss", "cpu"


def _torch_cuda_count() -> int:
    """How many CUDA GPUs torch sees (0 when torch is not installed)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def describe_backend(device: str = "auto") -> dict:
    """Provenance of the backend that ``search(..., device=device)`` would use."""
    import faiss

    library, dev = _resolve_device(device)
    info = {"library": library, "device": dev, "faiss_version": faiss.__version__}
    if library == "faiss" and dev == "cpu" and _scan_kernel_usable(None, 0):
        info.update(library="mmbench-scan", version=scan_topk.KERNEL_VERSION, gpus=faiss.get_num_gpus(),
                    blas=_numpy_blas())
    elif library == "torch":
        import torch

        info.update(version=torch.__version__, gpus=_torch_cuda_count())
    else:
        info.update(version=faiss.__version__, gpus=faiss.get_num_gpus())
    return info


def _numpy_blas() -> str | None:
    """The BLAS numpy multiplies with (it computes the CPU kernel's scores), as ``name version``."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for lib in threadpool_info():
        if lib.get("user_api") == "blas" and "numpy" in str(lib.get("filepath", "")):
            return f"{lib.get('internal_api')} {lib.get('version')}"
    return None


@contextlib.contextmanager
def _faiss_cpu_topk(queries: np.ndarray) -> Iterator[TopK]:
    """faiss CPU kernel, BLAS path forced on, larger database tile (both restored afterwards)."""
    import faiss

    saved = (faiss.cvar.distance_compute_blas_threshold, faiss.cvar.distance_compute_blas_database_bs)
    faiss.cvar.distance_compute_blas_threshold = 0
    faiss.cvar.distance_compute_blas_database_bs = FAISS_DATABASE_TILE

    def topk(rows: np.ndarray, kb: int) -> tuple[np.ndarray, np.ndarray]:
        return faiss.knn(queries, rows, kb, metric=faiss.METRIC_INNER_PRODUCT)

    try:
        yield topk
    finally:
        faiss.cvar.distance_compute_blas_threshold, faiss.cvar.distance_compute_blas_database_bs = saved


@contextlib.contextmanager
def _faiss_gpu_topk(queries: np.ndarray, device: str) -> Iterator[TopK]:
    """faiss-gpu brute-force kernel (what GpuIndexFlatIP runs), float32 storage."""
    import faiss

    res = faiss.StandardGpuResources()
    gpu = int(device.partition(":")[2] or -1)   # -1: the current CUDA device

    def topk(rows: np.ndarray, kb: int) -> tuple[np.ndarray, np.ndarray]:
        return faiss.knn_gpu(res, queries, rows, kb, metric=faiss.METRIC_INNER_PRODUCT, device=gpu)

    yield topk


@contextlib.contextmanager
def _torch_topk(queries: np.ndarray, device: str) -> Iterator[TopK]:
    """float32 torch.mm + torch.topk on ``device``, TF32 off (restored afterwards)."""
    import torch

    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    q = torch.from_numpy(queries).to(device)

    def topk(rows: np.ndarray, kb: int) -> tuple[np.ndarray, np.ndarray]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            block = torch.from_numpy(rows).to(device)
        chunk = max(1, _TORCH_SCORE_BYTES // (4 * rows.shape[0]))
        out_s = np.empty((q.shape[0], kb), np.float32)
        out_i = np.empty((q.shape[0], kb), np.int64)
        for start in range(0, q.shape[0], chunk):
            values, indices = torch.topk(q[start:start + chunk] @ block.T, kb, dim=1)
            out_s[start:start + chunk] = values.cpu().numpy()
            out_i[start:start + chunk] = indices.cpu().numpy()
        return out_s, out_i

    try:
        yield topk
    finally:
        torch.set_float32_matmul_precision(saved)


def _backend(queries: np.ndarray, library: str, dev: str) -> contextlib.AbstractContextManager[TopK]:
    """The top-k kernel of a resolved (library, device)."""
    if library == "torch":
        return _torch_topk(queries, dev)
    return _faiss_cpu_topk(queries) if dev == "cpu" else _faiss_gpu_topk(queries, dev)


# --------------------------------------------------------------------------- search


def search(queries: np.ndarray, pool: np.ndarray | Sequence[np.ndarray], k: int, *,
           tiebreak: np.ndarray | None = None, device: str = "auto",
           memory_budget_bytes: int = 2 * 1024**3,
           progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact maximum-inner-product top-k. Returns (indices int64 (Q, min(k, N)), scores float32 (Q, min(k,N))).

    ``pool`` is one (N, d) float array (possibly a memmap) or a sequence of blocks whose rows are
    numbered consecutively across the blocks. Hits are ordered by the module's tie-break rule.
    ``progress(done_rows, total_rows)`` is called after each searched block.
    """
    k = _check_k(k)
    library, dev = _resolve_device(device)
    queries = _as_queries(queries)
    parts = _pool_parts(pool, queries.shape[1])
    total = sum(p.shape[0] for p in parts)
    tiebreak = _check_tiebreak(tiebreak, total)
    n = min(k, total)
    idx = np.empty((queries.shape[0], n), np.int64)
    scores = np.empty((queries.shape[0], n), np.float32)
    if n == 0 or queries.shape[0] == 0:
        return idx, scores
    max_rows = max(1, memory_budget_bytes // (4 * queries.shape[1]))
    if library == "faiss" and dev == "cpu" and _scan_kernel_usable(tiebreak, total):
        # blocks as stored (float16 too): the kernel casts a tile at a time, so no thread ever holds
        # a float32 copy of a whole block (one per core would multiply --memory-budget-gb)
        return scan_topk.scan_topk(
            queries, lambda: ((b.offset, b.rows) for b in _iter_blocks(parts, max_rows)), total, n,
            tiebreak, sample=lambda stride: _every_nth_row(parts, stride), progress=progress)
    lasts: list[tuple[_Block, np.ndarray]] = []
    done = 0
    with _backend(queries, library, dev) as topk:
        for block in _iter_blocks(parts, max_rows):
            size = block.rows.shape[0]
            exact = library == "faiss" and dev == "cpu" and size <= GEMM_TOPK_ROWS_PER_HIT * n
            if exact:             # in the rule's order, ties at the cut-off included: no tie fix
                b_i, b_s = _exact_block_topk(queries, block, n, tiebreak, memory_budget_bytes)
            else:
                kb = min(size, n + max(TIE_MARGIN, int(n * TIE_MARGIN_FRACTION)))
                b_s, b_i = topk(_as_f32(block.rows), kb)
                b_i = b_i + block.offset
                if kb < size:
                    lasts.append((block, b_s[:, -1].copy()))
            if done:
                b_s, b_i = np.hstack((scores, b_s)), np.hstack((idx, b_i))
            idx, scores = (b_i, b_s) if exact and not done else _select(b_s, b_i, tiebreak, n)
            done += size
            if progress is not None:
                progress(done, total)
    _fix_cutoff_ties(queries, idx, scores, lasts, tiebreak, memory_budget_bytes)
    return idx, scores


def _scan_kernel_usable(tiebreak: np.ndarray | None, total: int) -> bool:
    """Whether the CPU search takes the threshold-scan kernel (built, enabled, keys it can pack)."""
    return CPU_SCAN and scan_topk.kernel() is not None and scan_topk.usable_keys(tiebreak, total)


def _every_nth_row(parts: list[np.ndarray], stride: int) -> np.ndarray:
    """Rows 0, stride, 2*stride... of the parts' logical concatenation, as one float32 array."""
    rows, offset = [], 0
    for part in parts:
        rows.append(_as_f32(part[(-offset) % stride::stride]))
        offset += part.shape[0]
    return np.concatenate(rows)


def exact_search_numpy(queries: np.ndarray, pool: np.ndarray | Sequence[np.ndarray], k: int,
                       tiebreak: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reference implementation: the full float32 score matrix, then a lexsort by the tie-break rule."""
    queries = _as_queries(queries)
    parts = _pool_parts(pool, queries.shape[1])
    matrix = np.concatenate([_as_f32(p) for p in parts]) if parts else np.empty((0, queries.shape[1]),
                                                                             np.float32)
    tiebreak = _check_tiebreak(tiebreak, matrix.shape[0])
    n = min(_check_k(k), matrix.shape[0])
    scores = queries @ matrix.T
    keys = np.broadcast_to(np.arange(matrix.shape[0]) if tiebreak is None else tiebreak, scores.shape)
    order = np.lexsort((-keys, -scores), axis=1)[:, :n]
    return order.astype(np.int64), np.take_along_axis(scores, order, axis=1)
