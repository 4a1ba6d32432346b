"""Block-by-block top-k with a margin, the merge by the rule, and the cut-off tie fix: what the
backends built on a "top-kb of one block" kernel (faiss on CPU and GPU, torch) share.

How the cut-off is made exact
-----------------------------
Such a kernel returns *some* members of a tie group that straddles its cut-off. So each block is
searched for ``k + margin`` hits (``margin = max(tie_margin, k * margin_fraction)``), the per-block
hits are merged by the rule (:func:`mmbench.search.ties.select`), and a query row is rescored
against a block only when that block's last retrieved score is at least the final k-th score: only
then can an unretrieved candidate of the block tie with the k-th hit. A tie group has to span more
than the margin for this to happen (M-BEIR has duplicate images under distinct ids, which do tie
exactly; coarse embeddings such as hashed bags of words tie by the hundred at k=1000). The margin
grows with k because each rescored row costs a pass over the whole block while a wider heap costs
the kernel little (docs/perf.md, Search, has the measurements behind the defaults).

A block small enough for its full score rows (at most ``rows_per_hit`` rows per hit) can instead be
ranked exactly from them (:func:`exact_block_topk`): no margin, no tie fix.

NaN scores (a NaN row or query) are ranked last by the rule, but a kernel's heap may keep them over
numbers: a query whose hits from any block include NaN is ranked from its full score rows instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mmbench.search import ties
from mmbench.search.base import Block, Pool, Progress, as_f32
from mmbench.util.parallel import row_parts, run_parts

__all__ = ["Tuning", "TopK", "margin_search", "exact_block_topk"]

TopK = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""(float32 block (B, d), kb) -> (scores float32 (Q, kb) descending, row-in-block int64 (Q, kb))."""


@dataclass(frozen=True)
class Tuning:
    """The knobs of :func:`margin_search`. None of them changes a result, only its cost."""

    tie_margin: int = 32               # extra hits per block, at least ...
    margin_fraction: float = 0.25      # ... and this fraction of k
    rows_per_hit: int = 0              # blocks of at most this many rows per hit: full score rows
    tie_slack: float = 1e-5            # tie-fix floor: this far (relative, at least absolute) below the k-th
    tile_rows: int = 4096              # tie-fix rescoring tile (candidates) ...
    tile_queries: int = 1024           # ... x queries: 16 MiB of float32 scores
    gemm_chunk_bytes: int = 1 << 29    # full-score-rows path: 32 bytes per score per query chunk
    rows_per_thread: int = ties.ROWS_PER_THREAD
    entries_per_thread: int = ties.ENTRIES_PER_THREAD


def margin_search(queries: np.ndarray, pool: Pool, n: int, topk: TopK, tuning: Tuning,
                  progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-n by the rule: per block, ``topk`` with a margin (or the full score rows where the
    block is small enough), merged, then the cut-off tie fix."""
    tiebreak = pool.tiebreak
    idx = np.empty((queries.shape[0], 0), np.int64)
    scores = np.empty((queries.shape[0], 0), np.float32)
    lasts: list[tuple[Block, np.ndarray]] = []
    with_nan = np.zeros(queries.shape[0], bool)
    done = 0
    for block in pool.blocks():
        size = block.rows.shape[0]
        if size <= tuning.rows_per_hit * n:   # in the rule's order, ties at the cut-off included: no tie fix
            b_i, b_s = exact_block_topk(queries, block, n, tiebreak, pool.memory_budget_bytes, tuning)
            exact = True
        else:
            kb = min(size, n + max(tuning.tie_margin, int(n * tuning.margin_fraction)))
            b_s, b_i = topk(as_f32(block.rows), kb)
            b_s = np.asarray(b_s, np.float32)
            b_i = np.asarray(b_i, np.int64) + block.offset
            if kb < size:
                lasts.append((block, b_s[:, -1].copy()))
            exact = False
        with_nan |= np.isnan(b_s).any(axis=1)
        if done:
            b_s, b_i = np.hstack((scores, b_s)), np.hstack((idx, b_i))
        idx, scores = (b_i, b_s) if exact and not done else ties.select(
            b_s, b_i, tiebreak, n, rows_per_thread=tuning.rows_per_thread)
        done += size
        if progress is not None:
            progress(done, pool.total)
    _fix_cutoff_ties(queries, idx, scores, lasts, pool, tuning)
    rows = np.flatnonzero(with_nan)
    if rows.size:      # a kernel's heap (or argpartition) may keep NaN over a number: the rule's order from full rows
        idx[rows], scores[rows] = full_rows(queries[rows], pool, n)
    return idx, scores


def full_rows(queries: np.ndarray, pool: Pool, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top n of a few queries from their full float32 score rows, by the rule (NaN last, as the reference)."""
    scores = np.concatenate([queries @ as_f32(b.rows).T for b in pool.blocks()], axis=1)
    ids = np.arange(scores.shape[1])
    keys = np.broadcast_to(ids if pool.tiebreak is None else pool.tiebreak, scores.shape)
    order = np.lexsort((-keys, -scores), axis=1)[:, :n]
    return ids[order], np.take_along_axis(scores, order, axis=1)


def exact_block_topk(queries: np.ndarray, block: Block, n: int, tiebreak: np.ndarray | None,
                     budget: int, tuning: Tuning) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-n (at most the block's rows) of one block for each query row, by the rule, in
    global row ids, from the block's full score rows (BLAS GEMM, a chunk of queries at a time):
    ``argpartition`` picks n best, which are then put in the rule's order.

    ``argpartition`` takes every candidate above the n-th score, but *some* of those at it. Where a
    row's n-th score also belongs to a candidate left out (a tie straddling the cut-off), the row's
    slots holding that score are given to the candidates at it with the largest tiebreak: only
    the tie group is ordered."""
    matrix = as_f32(block.rows)
    size = matrix.shape[0]
    n = min(n, size)
    chunk = max(1, min(budget, tuning.gemm_chunk_bytes) // (32 * size))
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

        run_parts(part, row_parts(scores.shape[0], min_rows=tuning.rows_per_thread))
        top_s = np.take_along_axis(scores, top, axis=1)
        kth = top_s.min(axis=1, keepdims=True)
        at_cut, slots = scores == kth, top_s == kth
        straddle = np.flatnonzero(np.count_nonzero(at_cut, axis=1) > np.count_nonzero(slots, axis=1))
        if straddle.size:
            _give_tied_slots(top, straddle, at_cut[straddle], slots[straddle], rule_keys)
        rows = slice(start, start + scores.shape[0])
        out_i[rows], out_s[rows] = ties.select(top_s, top + block.offset, tiebreak, n,
                                               rows_per_thread=tuning.rows_per_thread)
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


def _entries_above(queries: np.ndarray, block: Block, floor: np.ndarray, tuning: Tuning
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (query row, global row id, score) of the block with score >= that row's floor, scored
    tile by tile (no (Q, N) matrix is ever materialised)."""
    matrix = as_f32(block.rows)
    found_r, found_c, found_s = [], [], []
    for q0 in range(0, queries.shape[0], tuning.tile_queries):
        q = queries[q0:q0 + tuning.tile_queries]
        f = floor[q0:q0 + tuning.tile_queries, None]
        for c0 in range(0, matrix.shape[0], tuning.tile_rows):
            tile = q @ matrix[c0:c0 + tuning.tile_rows].T
            r, c = np.nonzero(tile >= f)
            found_s.append(tile[r, c])
            found_r.append(r + q0)
            found_c.append(c.astype(np.int64) + (block.offset + c0))
    if not found_r:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(found_r), np.concatenate(found_c), np.concatenate(found_s)


def _hits_outside(block: Block, idx: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(idx, a copy of scores with the hits that lie in ``block`` set to -inf): the hits it keeps."""
    scores = scores.copy()
    scores[(idx >= block.offset) & (idx < block.offset + block.rows.shape[0])] = -np.inf
    return idx, scores


def _fix_cutoff_ties(queries: np.ndarray, idx: np.ndarray, scores: np.ndarray,
                     lasts: list[tuple[Block, np.ndarray]], pool: Pool, tuning: Tuning) -> None:
    """Recompute, in place, the rows whose k-th score may tie with an unretrieved candidate.

    For each such row and block, the block is rescored and every candidate scoring at least a
    floor just below the row's k-th score is collected; the row's hits from the block are replaced
    by those and the row is re-selected. That is exact whenever the new n-th score is still >= the
    floor (no candidate left out can reach it); the few rows where it is not (the floor was above
    the rescored cut-off) take the full recompute of the block.
    """
    if not lasts:
        return
    tiebreak = pool.tiebreak
    kth = scores[:, -1]
    n = idx.shape[1]
    for block, last in lasts:
        rows = np.flatnonzero(last >= kth)
        if rows.size == 0:
            continue
        floor = kth[rows] - tuning.tie_slack * np.maximum(1.0, np.abs(kth[rows]))
        cur_i, cur_s = _hits_outside(block, idx[rows], scores[rows])
        found_r, found_i, found_s = _entries_above(queries[rows], block, floor.astype(np.float32), tuning)
        new_i, new_s = ties.select_ragged(
            np.concatenate((np.repeat(np.arange(rows.size), n), found_r)),
            np.concatenate((cur_i.ravel(), found_i)), np.concatenate((cur_s.ravel(), found_s)),
            rows.size, n, tiebreak, entries_per_thread=tuning.entries_per_thread)
        ok = new_s[:, -1] >= floor
        idx[rows[ok]], scores[rows[ok]] = new_i[ok], new_s[ok]
        if ok.all():
            continue
        bad = rows[~ok]                         # the floor was too high: rescore the whole block
        exact_i, exact_s = exact_block_topk(queries[bad], block, n, tiebreak, pool.memory_budget_bytes, tuning)
        cur_i, cur_s = _hits_outside(block, idx[bad], scores[bad])
        idx[bad], scores[bad] = ties.select(np.hstack((cur_s, exact_s)), np.hstack((cur_i, exact_i)),
                                            tiebreak, n, rows_per_thread=tuning.rows_per_thread)
