"""The numpy oracle: exact top-k from the full float32 score matrix, ordered by the rule with a lexsort.

Every backend is tested against it (tests/search/test_backend_contract.py). It holds the whole
(Q, N) score matrix, so it is for tests and small pools; it is also registered as the backend
``numpy``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmbench.search.base import as_f32, as_queries, check_k, check_tiebreak, pool_parts

__all__ = ["exact_search_numpy"]


def exact_search_numpy(queries: np.ndarray, pool: np.ndarray | Sequence[np.ndarray], k: int,
                       tiebreak: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64 (Q, min(k, N)), scores float32): the full float32 score matrix, then a lexsort
    by the rule (score descending, then ``tiebreak`` descending; the row number when None)."""
    queries = as_queries(queries)
    parts = pool_parts(pool, queries.shape[1])
    matrix = np.concatenate([as_f32(p) for p in parts]) if parts else np.empty((0, queries.shape[1]), np.float32)
    tiebreak = check_tiebreak(tiebreak, matrix.shape[0])
    return rule_top(queries, matrix, min(check_k(k), matrix.shape[0]), tiebreak)


def rule_top(queries: np.ndarray, matrix: np.ndarray, n: int, tiebreak: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray]:
    """The first n of every row of ``queries @ matrix.T`` (float32) by the rule (any n <= N)."""
    scores = queries @ matrix.T
    keys = np.broadcast_to(np.arange(matrix.shape[0]) if tiebreak is None else tiebreak, scores.shape)
    order = np.lexsort((-keys, -scores), axis=1)[:, :n]
    return order.astype(np.int64), np.take_along_axis(scores, order, axis=1)
