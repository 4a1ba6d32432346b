"""The C re-score helpers against their numpy definitions (mmbench.search.rescore, issue #23).

The C loop groups pairs by candidate block, casts float16 rows itself and sums four pairs of one
query at once, with AVX2 + FMA where the CPU has them, else portable C; the C ranking sorts each
query's re-scored candidates by the rule. Each must give numpy's bits and order on any input, on
both SIMD paths (``mmb_set_simd`` forces the portable one): pairs in query order (as a gather makes
them, so runs of one query share loads) or shuffled, float16 parts, -0.0, NaN and infinite values,
ties, several parts, every d modulo 8 (the SIMD tail). A NaN value's sign bit may differ (it
follows the operand order of the addition that made it): the rule ranks every NaN alike, and run
files refuse NaN scores.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import contextlib
import platform
from collections.abc import Iterator
from pathlib import Path

from mmbench import native
from mmbench.search import Pool
from mmbench.search.rescore import rank_rescored, rescore_pairs

BUILT = native.library() is not None and hasattr(native.library(), "mmb_rank_rescored")
pytestmark = pytest.mark.skipif(not BUILT, reason="the C helpers are not built")


@contextlib.contextmanager
def simd(level: int) -> Iterator[int]:
    """The re-score's SIMD path capped at ``level`` (0 portable C, 1 AVX2 + FMA) while inside; yields
    the level that runs."""
    try:
        yield native.library().mmb_set_simd(level)
    finally:
        native.library().mmb_set_simd(1)


def _cpu_flags() -> set[str]:
    info = Path("/proc/cpuinfo")
    if not info.exists():
        return set()
    for line in info.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_simd_path_is_taken_where_the_cpu_has_it() -> None:
    """So that the equality tests below compare two different code paths here."""
    with simd(0) as level:
        assert level == 0
    with simd(1) as level:
        x86_avx2 = platform.machine() in ("x86_64", "AMD64") and {"avx2", "fma"} <= _cpu_flags()
        assert level == int(x86_avx2)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(1, 70), rows=st.integers(1, 400),
       f16=st.sampled_from(["none", "all", "some"]), query_order=st.booleans(), special=st.booleans())
def test_c_rescore_gives_numpy_bits(seed: int, d: int, rows: int, f16: str, query_order: bool, special: bool) -> None:
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((9, d)).astype(np.float32)
    pool = rng.standard_normal((rows, d)).astype(np.float32)
    if special:
        pool.flat[rng.integers(0, pool.size, 5)] = rng.choice([np.nan, np.inf, -np.inf, -0.0, 1e-7], 5)
        q[0] = -0.0
        q *= rng.choice([1e-30, 1.0, 1e20], (9, 1)).astype(np.float32)       # tiny and huge products
        pool[rng.integers(0, rows)] = 1e-40                                   # float32 subnormals
    pool[rng.integers(0, rows, rows // 3)] = pool[0]                       # copies of one row
    cut = int(rng.integers(0, rows + 1))
    parts = [pool[:cut], pool[cut:]]
    if f16 != "none":
        parts[0] = parts[0].astype(np.float16)
        if f16 == "all":
            parts[1] = parts[1].astype(np.float16)
    parts = [p for p in parts if p.shape[0]]
    p = Pool(tuple(parts), rows, d, None, "cpu", 1 << 20)
    per_query = int(rng.integers(1, 3 * rows + 1))
    r = np.repeat(np.arange(9), per_query)
    c = rng.integers(0, rows, r.size)
    if not query_order:
        shuffle = rng.permutation(r.size)
        r, c = r[shuffle], c[shuffle]
    b = rescore_pairs(q, p, r, c, native=False)
    for level in (1, 0):
        with simd(level):
            a = rescore_pairs(q, p, r, c, native=True)
        nan = np.isnan(a)          # a NaN's sign depends on operand order: the rule ranks every NaN alike
        assert np.array_equal(nan, np.isnan(b))
        assert np.array_equal(a[~nan].view(np.int64), b[~nan].view(np.int64)), f"SIMD level {level}"


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_rows=st.integers(1, 12),
       n=st.one_of(st.integers(1, 30), st.integers(250, 600)),        # the C sort's two methods
       keys=st.booleans(), nan=st.booleans())
def test_c_ranking_follows_the_rule(seed: int, n_rows: int, n: int, keys: bool, nan: bool) -> None:
    rng = np.random.default_rng(seed)
    total = max(200, 2 * (n + 20))
    counts = rng.integers(n, n + 20, n_rows)
    ids = np.concatenate([rng.choice(total, c, replace=False) for c in counts]).astype(np.int64)
    values = rng.choice([0.5, 0.25, -0.0, 0.0, 1e-9, -1.0, 0.5 + 1e-12], ids.size)   # ties, also after float32
    if rng.random() < 0.5:
        values = rng.standard_normal(ids.size) * rng.choice([1e-3, 1.0, 1e30])              # spread scores
    if nan:
        values[rng.random(ids.size) < 0.1] = np.nan
    tiebreak = rng.permutation(total).astype(np.int64) if keys else None
    a_i, a_s = rank_rescored(counts, ids, values, tiebreak, n, native=True)
    b_i, b_s = rank_rescored(counts, ids, values, tiebreak, n, native=False)
    assert np.array_equal(a_i, b_i)
    assert np.array_equal(a_s.view(np.int32), b_s.view(np.int32))
