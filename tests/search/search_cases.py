"""Shared search test cases: tie-heavy pools whose inner products are exact in float32."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from mmbench.search import MAX_K


@st.composite
def tie_heavy_cases(draw: st.DrawFn, *, near_ties: bool = False, nan_rows: bool = False,
                    max_n: int = 3000) -> dict:
    """Quantised queries/pools with duplicated rows at random positions (exact ties), random k (up to
    past the pool size), budget (several blocks) and block split (float16 blocks among them).

    Values are multiples of 1/4 in [-1, 1] with d <= 32, so every inner product is exact in float16
    storage and float32 arithmetic whatever the summation order: ties are real ties. ``near_ties``:
    some duplicates get one coordinate moved by 1/256 (scores 1/1024 apart, still exact).
    ``nan_rows``: a few pool rows are NaN (ranked last by the rule).
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q, n, d = draw(st.integers(1, 50)), draw(st.integers(1, max_n)), draw(st.integers(1, 32))
    levels = draw(st.integers(1, 4))
    queries = rng.integers(-levels, levels + 1, (q, d)).astype(np.float32) / 4
    pool = rng.integers(-levels, levels + 1, (n, d)).astype(np.float32) / 4
    dup = draw(st.floats(0.0, 0.9))
    src = rng.integers(0, n, n)
    copy = rng.random(n) < dup
    pool[copy] = pool[src[copy]]
    if near_ties and draw(st.booleans()):
        moved = np.flatnonzero(copy & (rng.random(n) < 0.5))
        pool[moved, rng.integers(0, d, moved.size)] += np.float32(1 / 256)
    if nan_rows and draw(st.booleans()):
        pool[rng.random(n) < draw(st.floats(0.0, 0.3)), 0] = np.nan
    k = draw(st.sampled_from([n, min(n + 5, MAX_K)])) if draw(st.booleans()) else draw(st.integers(1, min(n + 5, MAX_K)))
    k = min(k, MAX_K)
    rows_per_block = draw(st.integers(max(1, n // 40), n + 1))
    cuts = sorted(rng.choice(np.arange(1, n), size=min(n - 1, draw(st.integers(0, 4))),
                             replace=False).tolist()) if n > 1 else []
    as_list = draw(st.booleans())
    parts = np.split(pool, cuts)
    if as_list:
        parts = [p.astype(np.float16) if rng.random() < 0.5 else p for p in parts]
    tiebreak = rng.permutation(n).astype(np.int64) if draw(st.booleans()) else None
    return {"queries": queries, "pool": parts if as_list else pool, "k": k, "tiebreak": tiebreak,
            "budget": rows_per_block * 4 * d}


def assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    """Indices identical, scores within 1e-5 (NaN where NaN), dtypes and shapes as documented."""
    (gi, gs), (wi, ws) = got, want
    assert gi.dtype == np.int64 and gs.dtype == np.float32
    assert gi.shape == wi.shape and gs.shape == ws.shape
    np.testing.assert_array_equal(gi, wi)
    np.testing.assert_allclose(gs, ws, atol=1e-5, rtol=0)


def search_with(backend, case: dict, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """``backend`` (a SearchBackend instance, registered or not) on the case, as search() runs it."""
    from mmbench.search import Pool
    from mmbench.search.base import as_queries, check_tiebreak, pool_parts

    queries = as_queries(case["queries"])
    parts = pool_parts(case["pool"], queries.shape[1])
    total = sum(p.shape[0] for p in parts)
    pool = Pool(tuple(parts), total, queries.shape[1], check_tiebreak(case["tiebreak"], total), device,
                case["budget"])
    return backend.prepare(pool).search(queries, case["k"])
