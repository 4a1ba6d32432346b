"""The scan kernel's gather mode (mmbench.search.scan_topk.scan_above, issue #23's speed): every
candidate at or above each query's n-th score less its slack, the set the re-score's margin proof
asks for, with no top m and no ordering.

Cases are quantised (tests/search/search_cases.py): every inner product is exact in float32 whatever
the kernel's summation order, so the set is known exactly from numpy's product: it must be equal,
ties at the floor included; rows with fewer than n numbers (NaN rows) must say they are not
complete. The threshold estimate is forced too high (each row's best score) to reach the rows
that are scanned again.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from search_cases import tie_heavy_cases

from mmbench.search import Pool, scan_topk
from mmbench.search.backends.scan_cpu import ScanCpuBackend
from mmbench.search.base import check_tiebreak, pool_parts

pytestmark = pytest.mark.skipif(not scan_topk.can_scan_above(1), reason="the C kernel is not built")


def _expected(queries: np.ndarray, pool: np.ndarray, n: int, slack: np.ndarray) -> list[set[int] | None]:
    scores = (queries @ pool.T).astype(np.float64)           # exact: quantised values
    want: list[set[int] | None] = []
    for row, s in zip(scores, slack):
        finite = row[~np.isnan(row)]
        if finite.size < n:
            want.append(None)
            continue
        floor = np.sort(finite)[::-1][n - 1] - s
        want.append(set(np.flatnonzero(row >= floor).tolist()))
    return want


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tie_heavy_cases(near_ties=True, nan_rows=True, max_n=1500), data=st.data())
def test_scan_above_gathers_exactly_the_floor_set(case: dict, data: st.DataObject) -> None:
    queries = case["queries"]
    parts = pool_parts(case["pool"], queries.shape[1])
    pool = np.concatenate([p.astype(np.float32) for p in parts])
    total = pool.shape[0]
    n = min(case["k"], total)
    slack = np.asarray(data.draw(st.lists(st.sampled_from([0.0, 1 / 1024, 0.25, 0.3, 2.0]),
                                          min_size=queries.shape[0], max_size=queries.shape[0])), np.float64)
    too_high = data.draw(st.booleans())
    settings_ = scan_topk.ScanSettings(tile_bytes=data.draw(st.sampled_from([64, 4096, 2 << 20])),
                                       query_chunk=data.draw(st.integers(1, 9)))
    index = ScanCpuBackend(settings=settings_).prepare(
        Pool(tuple(parts), total, queries.shape[1], check_tiebreak(case["tiebreak"], total), "cpu", case["budget"]))
    with pytest.MonkeyPatch.context() as m:
        if too_high:        # every row starts from its best score: rows with n > 1 are scanned again
            m.setattr(scan_topk, "_seed_plan", lambda total, n, dim, settings: (1, 1))
        counts, ids, complete = index.gather_above(queries, n, slack)
    assert counts.dtype == np.int64 and ids.dtype == np.int64 and complete.dtype == bool
    assert counts.shape == complete.shape == (queries.shape[0],) and ids.size == counts.sum()
    got = np.split(ids, np.cumsum(counts)[:-1])
    numbers = (~np.isnan(queries @ pool.T)).sum(axis=1)
    for i, want in enumerate(_expected(queries, pool, n, slack)):
        if want is None:
            assert not complete[i] and counts[i] == 0
        elif complete[i]:
            assert set(got[i].tolist()) == want and got[i].size == len(want)
        else:           # only a row that held more than 8n + 1024 candidates within its slack gives up
            assert counts[i] == 0 and numbers[i] > 8 * n + 1024


def test_rows_whose_slack_covers_the_pool_give_up_and_are_gathered_the_other_way() -> None:
    """One row of huge norm makes the margin wider than every other score's spread: the kernel's
    rows give up rather than keep the whole pool, and the search's other path answers them, with
    the same bytes as the numpy backend."""
    from mmbench.search import search

    rng = np.random.default_rng(3)
    pool = rng.standard_normal((3000, 16)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    pool[7] *= 1e6                       # the margin, about 1e-3 of |q| * 1e6, covers every other score
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    from mmbench.search.rescore import margin_delta, row_norm_bound

    index = ScanCpuBackend().prepare(Pool((pool,), 3000, 16, None, "cpu", 1 << 30))
    delta = margin_delta(queries, row_norm_bound(index.pool))
    counts, ids, complete = index.gather_above(queries, 10, delta)
    assert not complete.any() and counts.sum() == 0 and ids.size == 0
    got = search(queries, pool, 10, backend="scan-cpu")
    want = search(queries, pool, 10, backend="numpy")
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1].view(np.int32), want[1].view(np.int32))


def test_scan_above_refuses_a_bad_slack() -> None:
    q = np.ones((2, 4), np.float32)
    for slack in ([0.0, np.inf], [0.0, -1.0], [0.0]):
        with pytest.raises(ValueError, match="slack"):
            scan_topk.scan_above(q, lambda: [(0, q)], 2, 1, np.asarray(slack))
