"""``search(..., norm_bound=...)``: a caller that searches one pool many times passes the pool's row-norm
bound, computed once (:func:`mmbench.search.pool_norm_bound`; the pipeline keeps it on its pool); the
answer is the same bytes as when search computes it."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbench.search import pool_norm_bound, search
from mmbench.search.base import Pool
from mmbench.search.rescore import row_norm_bound
from search_cases import tie_heavy_cases


@settings(max_examples=30, deadline=None)
@given(tie_heavy_cases(near_ties=True, nan_rows=True, max_n=600))
def test_a_bound_passed_in_gives_the_same_bytes(case):
    parts = case["pool"]
    kw = {"tiebreak": case["tiebreak"], "memory_budget_bytes": case["budget"]}
    bound = pool_norm_bound(parts, case["budget"])
    alone = search(case["queries"], parts, case["k"], **kw)
    given_bound = search(case["queries"], parts, case["k"], **kw, norm_bound=bound)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(alone, given_bound))


@given(st.integers(1, 300), st.integers(1, 20), st.booleans())
def test_pool_norm_bound_is_the_rescores_bound_and_covers_every_row(n, d, half):
    rows = np.random.default_rng(n * 31 + d).standard_normal((n, d)).astype(np.float16 if half else np.float32)
    parts = np.array_split(rows, 3) if n >= 3 else [rows]
    bound = pool_norm_bound(parts)
    assert bound == row_norm_bound(Pool(tuple(parts), n, d, None, "cpu", 2 * 1024**3))
    assert bound >= np.linalg.norm(rows.astype(np.float64), axis=1).max()
