"""Issue #23: the ranking is a function of the stored embeddings and the rule alone.

Every available backend, with the C re-score and with numpy's (a build without the C helpers),
writes byte-identical run files on tie-heavy cases, including float data whose float32 products
round differently in different kernels; identical rows tie exactly; the gather margin is proven
in mmbench.search.rescore and exercised here with no margin at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from search_cases import tie_heavy_cases

from mmbench import native
from mmbench.search import MAX_K, Pool, backend_names, get_backend, search
from mmbench.search.base import as_queries, check_tiebreak, pool_parts
from mmbench.search.rescore import gather_and_rescore, rescore_pairs

BUILT = native.library() is not None and hasattr(native.library(), "mmb_rescore_grouped")


def _runnable() -> list[str]:
    return [n for n in backend_names() if n != "auto" and "cpu" in get_backend(n).devices
            and get_backend(n).available("cpu") is True]


@st.composite
def float_cases(draw: st.DrawFn) -> dict:
    """Unit-norm float rows (products round), with duplicate rows at random positions, near-ties
    (a duplicate moved by a few float32 steps), NaN rows, k up to the pool size, float16 blocks."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q, n, d = draw(st.integers(1, 30)), draw(st.integers(1, 1200)), draw(st.integers(1, 96))
    queries = rng.standard_normal((q, d)).astype(np.float32)
    pool = rng.standard_normal((n, d)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    copy = rng.random(n) < draw(st.floats(0.0, 0.8))
    pool[copy] = pool[rng.integers(0, n, n)][copy]
    near = copy & (rng.random(n) < 0.3)
    pool[near] = np.nextafter(pool[near], np.float32(2.0))
    if draw(st.booleans()):
        pool[rng.random(n) < 0.05, 0] = np.nan
    k = min(MAX_K, n if draw(st.booleans()) else draw(st.integers(1, n)))
    cuts = sorted(rng.choice(np.arange(1, n), size=min(n - 1, draw(st.integers(0, 3))), replace=False).tolist()) if n > 1 else []
    parts = np.split(pool, cuts)
    if draw(st.booleans()):
        parts = [p.astype(np.float16) if rng.random() < 0.5 else p for p in parts]
    return {"queries": queries, "pool": parts, "k": k,
            "tiebreak": rng.permutation(n).astype(np.int64) if draw(st.booleans()) else None,
            "budget": draw(st.integers(max(1, n // 8), n + 1)) * 4 * d}


def _run_bytes(case: dict, name: str, native_rescore: bool | None, tmp: Path, margin: int | None = None) -> bytes:
    from mmbench.results.trec import write_trec

    queries = as_queries(case["queries"])
    parts = pool_parts(case["pool"], queries.shape[1])
    total = sum(p.shape[0] for p in parts)
    pool = Pool(tuple(parts), total, queries.shape[1], check_tiebreak(case["tiebreak"], total), "cpu", case["budget"])
    n = min(case["k"], total)
    idx, scores = gather_and_rescore(get_backend(name).prepare(pool), queries, pool, n, margin, native=native_rescore)
    assert idx.dtype == np.int64 and scores.dtype == np.float32 and idx.shape == (queries.shape[0], n)
    ids = [f"d{i:05d}" for i in range(total)]
    path = tmp / f"{name}-{native_rescore}-{margin}.trec"
    write_trec(path, [f"q{i}" for i in range(queries.shape[0])], ids, idx, scores, "t", fsync=False)
    return path.read_bytes()


def _variants() -> list[tuple[str, bool | None]]:
    return [(n, flag) for n in _runnable() for flag in ([True, False] if BUILT else [False])]


@pytest.mark.parametrize("cases", ["floats", "quantised"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_backend_writes_the_same_bytes(cases: str, data: st.DataObject, tmp_path: Path) -> None:
    case = data.draw(float_cases() if cases == "floats" else tie_heavy_cases(near_ties=True, nan_rows=True, max_n=1500))
    runs = {v: _run_bytes(case, *v, tmp_path) for v in _variants()}
    runs[("numpy", "no margin")] = _run_bytes(case, "numpy", False, tmp_path, margin=0)
    first = next(iter(runs.values()))
    for variant, got in runs.items():
        assert got == first, f"{variant} wrote other bytes than {next(iter(runs))}"


def test_identical_rows_tie_exactly_and_follow_the_rule() -> None:
    """Copies of one row at positions a BLAS tile treats differently score the same; the largest
    tie-break keys come first."""
    rng = np.random.default_rng(7)
    pool = rng.standard_normal((5000, 384)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    queries = rng.standard_normal((64, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    spots = np.array([3, 1001, 2047, 2048, 4095, 4999])
    pool[spots] = (queries[0] + pool[spots[0]]) / np.linalg.norm(queries[0] + pool[spots[0]])  # one row, six places
    for name in _runnable():
        idx, scores = search(queries, pool, 10, backend=name)
        assert sorted(idx[0, :6].tolist()) == sorted(spots.tolist()) and idx[0, :6].tolist() == sorted(spots, reverse=True)
        assert len(set(scores[0, :6].tolist())) == 1


@pytest.mark.skipif(not BUILT, reason="the C helpers are not built")
@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(1, 70), f16=st.booleans())
def test_c_and_numpy_rescore_give_the_same_bits(seed: int, d: int, f16: bool) -> None:
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((7, d)).astype(np.float32) * rng.choice([1e-30, 1.0, 1e20], (7, 1)).astype(np.float32)
    q[0] = -0.0
    rows = rng.standard_normal((300, d)).astype(np.float32)
    rows[5] = -0.0
    parts = (rows[:100].astype(np.float16) if f16 else rows[:100], rows[100:])
    pool = Pool(parts, 300, d, None, "cpu", 1 << 20)
    r, c = rng.integers(0, 7, 2000), rng.integers(0, 300, 2000)
    a = rescore_pairs(q, pool, r, c, native=True)
    b = rescore_pairs(q, pool, r, c, native=False)
    assert np.array_equal(a.view(np.int64), b.view(np.int64))
