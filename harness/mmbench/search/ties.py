"""THE tie rule of mmbench, in one place: every ordering of candidates in mmbench calls this module.

The rule
--------
A query's candidates are ordered by score descending, then by tie-break key descending, where a
candidate's key is its rank in candidate-id string (codepoint) order (:func:`tiebreak_ranks`). That
is trec_eval's and pytrec_eval's own rule ("score desc, then docno desc"), so a run file written in
this order is the order trec_eval re-sorts it into, and mmbench's metrics agree with pytrec_eval on
runs with ties. Where no key is given, the candidate's row number in the pool plays its part (the
larger row wins a tie). The rule holds at the cut-off too: when several candidates tie with the
k-th score, those with the larger keys are the ones kept.

Scores are compared as floats: ``-0.0`` equals ``+0.0``; NaN ranks after every number (numpy's
lexsort order). Keys should be distinct within a row (a permutation of the pool's rows).

Who uses it: :func:`rule_order` is ``mmbench.metrics.scoring.rank_order`` (a run's rows), the
search backends' merge of per-block hits (:func:`select`, :func:`select_ragged`) and the rerank
stage's order (a group key before the rule). The C search kernel (``mmbench/native/_native.c``,
``order_key``) keeps its own copy of :func:`packed_order_keys` for speed; this module is its
definition, and the backend contract tests check the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmbench.util.parallel import row_parts, run_parts

__all__ = ["RULE", "tiebreak_ranks", "packed_order_keys", "rule_order", "select", "select_ragged",
           "ROWS_PER_THREAD", "ENTRIES_PER_THREAD"]

RULE = "score descending, then candidate id descending (trec_eval's rule)"
"""The rule in words, as results record it."""

ROWS_PER_THREAD = 64          # rows below which ordering stays on the calling thread
ENTRIES_PER_THREAD = 1 << 16  # ragged entries below which ordering stays on the calling thread


def tiebreak_ranks(candidate_ids: Sequence[str]) -> np.ndarray:
    """int64 rank of each id in ascending string (codepoint) order: the rule's tie-break keys."""
    n = len(candidate_ids)
    order = sorted(range(n), key=candidate_ids.__getitem__)
    ranks = np.empty(n, dtype=np.int64)
    ranks[np.asarray(order, dtype=np.int64)] = np.arange(n, dtype=np.int64)
    return ranks


def packed_order_keys(scores: np.ndarray, keys: np.ndarray) -> np.ndarray | None:
    """uint64 values whose ascending order is the rule's (score desc, key desc), or None where they
    cannot be built (scores not float32, keys outside [0, 2**32), or NaN scores).

    A float32 score is mapped to an unsigned integer of the same order (``-0.0`` counted as
    ``+0.0``, as the float comparison does: adding ``+0.0`` turns ``-0.0`` into ``+0.0``), placed in
    the high 32 bits above the key, and the whole is complemented so ascending means descending.
    """
    scores = np.asarray(scores)
    if scores.dtype != np.float32:
        return None
    if keys.size and (keys.min() < 0 or keys.max() >= 1 << 32 or np.isnan(scores).any()):
        return None
    bits = (scores + np.float32(0.0)).view(np.uint32).astype(np.uint64)
    ordered = np.where(bits >> 31, ~bits & 0xFFFFFFFF, bits | 0x80000000)
    return ~((ordered << 32) | keys.astype(np.uint64))


def rule_order(scores: np.ndarray, keys: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Per row (last axis), the argsort by the rule: score descending, then key descending; with
    ``groups`` (same shape), by group ascending first.

    float32 scores with keys in [0, 2**32) take one argsort of :func:`packed_order_keys` (what a
    two-key lexsort does, faster); everything else the lexsort, which ranks NaN last.
    """
    keys = np.asarray(keys)
    if groups is None:
        packed = packed_order_keys(scores, keys)
        if packed is not None:
            return np.argsort(packed, axis=-1)
        return np.lexsort((-keys, -np.asarray(scores)), axis=-1)
    return np.lexsort((-keys, -np.asarray(scores), groups), axis=-1)


def select(scores: np.ndarray, idx: np.ndarray, tiebreak: np.ndarray | None, n: int, *,
           rows_per_thread: int = ROWS_PER_THREAD) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first n (at most the row width) of (idx, scores) by the rule, with
    ``tiebreak[idx]`` as keys (``idx`` itself when None). Returns (idx, scores).

    Row ranges are ordered on one thread per core (numpy's sorts release the GIL).
    """
    keys = idx if tiebreak is None else tiebreak[idx]
    n = min(n, idx.shape[1])
    out_i = np.empty((idx.shape[0], n), idx.dtype)
    out_s = np.empty((idx.shape[0], n), scores.dtype)

    def part(rows: slice) -> None:
        order = rule_order(scores[rows], keys[rows])[:, :n]
        out_i[rows] = np.take_along_axis(idx[rows], order, axis=1)
        out_s[rows] = np.take_along_axis(scores[rows], order, axis=1)

    run_parts(part, row_parts(idx.shape[0], min_rows=rows_per_thread))
    return out_i, out_s


def select_ragged(rows: np.ndarray, idx: np.ndarray, scores: np.ndarray, n_rows: int, n: int,
                  tiebreak: np.ndarray | None, *,
                  entries_per_thread: int = ENTRIES_PER_THREAD) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first n of a ragged (row, idx, score) list by the rule; every row has >= n entries."""
    keys = idx if tiebreak is None else tiebreak[idx]
    counts = np.bincount(rows, minlength=n_rows)
    first = np.cumsum(counts) - counts
    packed = packed_order_keys(scores, keys)
    order = (np.lexsort((-keys, -scores, rows)) if packed is None
             else _row_major_order(rows, packed, counts, entries_per_thread))
    take = order[first[:, None] + np.arange(n)]
    return idx[take], scores[take]


def _row_major_order(rows: np.ndarray, packed: np.ndarray, counts: np.ndarray,
                     entries_per_thread: int) -> np.ndarray:
    """The argsort of the entries by (row, packed key): the lexsort ``(packed, rows)``, split into
    ranges of rows of about equal entry counts, one per core.

    A stable radix sort by row (16-bit rows) groups the entries; each range then sorts its entries
    by packed key and regroups them by row with a second stable radix sort.
    """
    small = rows.astype(np.uint16) if counts.size <= 1 << 16 else rows
    by_row = np.argsort(small, kind="stable")
    ends = np.cumsum(counts)
    n_parts = len(row_parts(rows.size, min_rows=entries_per_thread))
    cuts = np.searchsorted(ends, [rows.size * i // n_parts for i in range(1, n_parts)], side="left")
    bounds = [0, *(int(ends[c]) for c in cuts), rows.size]          # whole rows in each range
    order = np.empty_like(by_row)

    def part(span: slice) -> None:
        seg = by_row[span]
        seg = seg[np.argsort(packed[seg])]
        order[span] = seg[np.argsort(small[seg], kind="stable")]

    run_parts(part, [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])])
    return order
