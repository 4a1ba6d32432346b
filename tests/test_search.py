"""mmbench.search.engine must equal the plain numpy reference exactly, ties at the cut-off included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmbench.search import scan_topk
from mmbench.search import engine as search_mod
from mmbench.search.engine import MAX_K, describe_backend, exact_search_numpy, search


@st.composite
def tie_heavy_cases(draw: st.DrawFn) -> dict:
    """Quantised queries/pools with duplicated rows (exact ties), random k, budget and block split.

    Values are multiples of 1/4 in [-1, 1] with d <= 32, so every inner product is exact in float16
    storage and float32 arithmetic whatever the summation order: ties are real ties.
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q, n, d = draw(st.integers(1, 50)), draw(st.integers(1, 3000)), draw(st.integers(1, 32))
    levels = draw(st.integers(1, 4))
    queries = rng.integers(-levels, levels + 1, (q, d)).astype(np.float32) / 4
    pool = rng.integers(-levels, levels + 1, (n, d)).astype(np.float32) / 4
    dup = draw(st.floats(0.0, 0.9))
    src = rng.integers(0, n, n)
    copy = rng.random(n) < dup
    pool[copy] = pool[src[copy]]
    k = draw(st.integers(1, min(n + 5, MAX_K)))
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
    """Indices identical, scores within 1e-5, dtypes and shapes as documented."""
    (gi, gs), (wi, ws) = got, want
    assert gi.dtype == np.int64 and gs.dtype == np.float32
    assert gi.shape == wi.shape and gs.shape == ws.shape
    np.testing.assert_array_equal(gi, wi)
    np.testing.assert_allclose(gs, ws, atol=1e-5, rtol=0)


def assert_matches_reference(case: dict, **patches: object) -> None:
    """search() on the case, with module settings patched as given (``scan_topk.NAME`` for the
    kernel's module), equals exact_search_numpy."""
    with pytest.MonkeyPatch.context() as m:
        for name, value in patches.items():
            module, _, attr = name.rpartition(".")
            m.setattr(scan_topk if module == "scan_topk" else search_mod, attr, value)
        got = search(case["queries"], case["pool"], case["k"], tiebreak=case["tiebreak"],
                     memory_budget_bytes=case["budget"], device="cpu")
    assert_same(got, exact_search_numpy(case["queries"], case["pool"], case["k"], case["tiebreak"]))


# On the CPU the threshold-scan kernel (harness/scan_topk.py) searches every pool where it is built;
# without it, blocks of at most GEMM_TOPK_ROWS_PER_HIT rows per hit are ranked from their full score
# rows, larger ones by faiss with a margin and the tie fix: each test says which path it checks.
FAISS_PATH = {"CPU_SCAN": False, "GEMM_TOPK_ROWS_PER_HIT": 0}
GEMM_PATH = {"CPU_SCAN": False, "GEMM_TOPK_ROWS_PER_HIT": 10**9}
# the kernel in small pieces: tiles of 16 candidates, 3 queries per range (several ranges per
# thread), and the threshold estimate on from k=32 with every 2nd candidate as the sample
SCAN_SMALL = {"scan_topk.TILE_BYTES": 16 * 4, "scan_topk.QUERY_CHUNK": 3, "scan_topk.SEED_MIN_K": 1,
              "scan_topk.SEED_STRIDE": 2}


def test_kernel_is_built() -> None:
    """``make test`` installs mmbench with its C kernel: the default-path tests below exercise it."""
    assert scan_topk.kernel() is not None
    assert describe_backend("cpu")["library"] == "mmbench-scan"


@pytest.mark.parametrize("path", [FAISS_PATH, GEMM_PATH, SCAN_SMALL, {}], ids=["faiss", "gemm", "scan-small", "default"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tie_heavy_cases())
def test_matches_reference_with_ties(case: dict, path: dict) -> None:
    assert_matches_reference(case, **path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tie_heavy_cases())
def test_gemm_path_in_small_query_chunks(case: dict) -> None:
    """The full-score-rows path a few queries at a time, its ordering split per row: the same answer."""
    assert_matches_reference(case, **GEMM_PATH, _GEMM_CHUNK_BYTES=1, _ROWS_PER_THREAD=1)


@settings(max_examples=40, deadline=None)
@given(case=tie_heavy_cases())
def test_matches_reference_without_margin(case: dict) -> None:
    """With no margin nearly every row goes through the exact cut-off recompute."""
    assert_matches_reference(case, **FAISS_PATH, TIE_MARGIN=0, TIE_MARGIN_FRACTION=0.0)


@pytest.mark.parametrize("slack", [-1.0, 10.0])
@settings(max_examples=25, deadline=None)
@given(case=tie_heavy_cases())
def test_tie_fix_floor_extremes(case: dict, slack: float) -> None:
    """A floor above every cut-off (each row takes the full-block fallback) and one below every score
    (each rescored candidate is collected) both give the reference answer."""
    assert_matches_reference(case, **FAISS_PATH, TIE_MARGIN=0, TIE_MARGIN_FRACTION=0.0, _TIE_SLACK=slack,
                             _TILE_ROWS=97, _TILE_QUERIES=7)      # several tiles per block


@settings(max_examples=30, deadline=None)
@given(case=tie_heavy_cases())
def test_torch_path_matches_reference(case: dict) -> None:
    """The torch mm + topk path (used on GPUs without faiss-gpu), run here on the CPU."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(search_mod, "_resolve_device", lambda device: ("torch", "cpu"))
        got = search(case["queries"], case["pool"], case["k"], tiebreak=case["tiebreak"],
                     memory_budget_bytes=case["budget"])
    assert_same(got, exact_search_numpy(case["queries"], case["pool"], case["k"], case["tiebreak"]))


@pytest.mark.parametrize("path", [FAISS_PATH, GEMM_PATH, {}], ids=["faiss", "gemm", "scan"])
@pytest.mark.parametrize("seed", range(5))
def test_matches_reference_on_random_floats(seed: int, path: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unquantised normalised data, several blocks: equal wherever rounding cannot swap two hits."""
    for name, value in path.items():
        monkeypatch.setattr(search_mod, name, value)
    rng = np.random.default_rng(seed)
    queries = rng.standard_normal((40, 24)).astype(np.float32)
    pool = rng.standard_normal((2500, 24)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    got_i, got_s = search(queries, pool, 100, memory_budget_bytes=300 * 4 * 24)
    want_i, want_s = exact_search_numpy(queries, pool, 101)
    gaps = -np.diff(want_s, axis=1)
    clear = np.minimum(np.hstack((np.full((40, 1), 1.0), gaps[:, :-1])), gaps) > 1e-6
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(got_i[clear], want_i[:, :100][clear])
    np.testing.assert_allclose(got_s, want_s[:, :100], atol=1e-5, rtol=0)


def test_all_identical_candidates_follow_the_rule() -> None:
    """A tie group far wider than the margin: the largest tiebreaks win, in descending order."""
    pool = np.ones((500, 8), np.float32) / np.sqrt(8)
    queries = np.ones((3, 8), np.float32) / np.sqrt(8)
    idx, _ = search(queries, pool, 5, memory_budget_bytes=120 * 4 * 8)
    np.testing.assert_array_equal(idx, np.tile(np.arange(499, 494, -1), (3, 1)))
    tiebreak = np.arange(500)[::-1].copy()
    idx, _ = search(queries, pool, 5, tiebreak=tiebreak, memory_budget_bytes=120 * 4 * 8)
    np.testing.assert_array_equal(idx, np.tile(np.arange(5), (3, 1)))


def test_tiebreak_changes_the_winner_among_exact_ties() -> None:
    pool = np.array([[1, 0], [0, 1], [0, 1], [0, 1], [0.6, 0.8]], np.float32)
    queries = np.array([[0, 1]], np.float32)
    assert search(queries, pool, 1)[0].tolist() == [[3]]
    assert search(queries, pool, 1, tiebreak=np.array([0, 4, 3, 1, 2]))[0].tolist() == [[1]]
    assert search(queries, pool, 3, tiebreak=np.array([0, 4, 3, 1, 2]))[0].tolist() == [[1, 2, 3]]


def test_k_larger_than_pool_returns_pool_size_columns() -> None:
    pool = np.eye(4, dtype=np.float32)
    idx, scores = search(pool[:2], [pool[:1], pool[1:]], 9)
    assert idx.shape == scores.shape == (2, 4)
    assert idx[:, 0].tolist() == [0, 1]


def test_float16_memmap_pool(tmp_path) -> None:
    rng = np.random.default_rng(1)
    data = (rng.integers(-3, 4, (700, 16)) / 4).astype(np.float16)
    mm = np.memmap(tmp_path / "pool.f16", dtype=np.float16, mode="w+", shape=data.shape)
    mm[:] = data
    mm.flush()
    ro = np.memmap(tmp_path / "pool.f16", dtype=np.float16, mode="r", shape=data.shape)
    queries = (rng.integers(-3, 4, (20, 16)) / 4).astype(np.float32)
    assert_same(search(queries, ro, 30, memory_budget_bytes=64 * 4 * 16),
                exact_search_numpy(queries, data, 30))


def test_progress_reports_each_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_mod, "CPU_SCAN", False)
    pool = np.random.default_rng(2).standard_normal((1000, 8)).astype(np.float32)
    calls: list[tuple[int, int]] = []
    search(pool[:5], [pool[:300], pool[300:]], 3, memory_budget_bytes=128 * 4 * 8,
           progress=lambda done, total: calls.append((done, total)))
    assert calls == [(128, 1000), (256, 1000), (300, 1000), (428, 1000), (556, 1000),
                     (684, 1000), (812, 1000), (940, 1000), (1000, 1000)]


@pytest.mark.parametrize("chunk", [1, 2, 4096])
def test_kernel_progress_counts_every_candidate_once(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's query ranges run on several threads: progress rises to the pool size, never past it."""
    monkeypatch.setattr(scan_topk, "QUERY_CHUNK", chunk)
    pool = np.random.default_rng(2).standard_normal((1000, 8)).astype(np.float32)
    calls: list[tuple[int, int]] = []
    search(pool[:5], [pool[:300], pool[300:]], 3, memory_budget_bytes=128 * 4 * 8,
           progress=lambda done, total: calls.append((done, total)))
    done = [d for d, _ in calls]
    assert {t for _, t in calls} == {1000} and done == sorted(done) and done[-1] == 1000
    assert len(calls) == 9 * len(scan_topk._query_ranges(5))      # every block of every range


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tie_heavy_cases())
def test_kernel_estimate_too_high_scans_again(case: dict) -> None:
    """An estimate above every query's k-th score (each row's best sample score, sample = the whole
    pool) leaves rows short: they are scanned again from -inf, and the answer is the reference's."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(scan_topk, "_seed_plan", lambda total, n, dim: (1, 1))
        passes = []
        real_pass = scan_topk._pass
        m.setattr(scan_topk, "_pass", lambda *a: passes.append(a[5] is None) or real_pass(*a))
        assert_matches_reference(case, **{"scan_topk.QUERY_CHUNK": 7})
    _, want = exact_search_numpy(case["queries"], case["pool"], case["k"], case["tiebreak"])
    # a row is short exactly when its best score is above its k-th: then its range is scanned again
    assert (True in passes) == bool((want[:, 0] > want[:, -1]).any())


def test_kernel_rows_with_nan_scores_rank_nan_last() -> None:
    """The kernel keeps no NaN score: a query of NaNs, and a pool with NaN rows that leaves some
    queries fewer finite scores than k, are ranked from full score rows, NaN last (as the reference)."""
    rng = np.random.default_rng(5)
    pool = (rng.integers(-2, 3, (300, 8)) / 4).astype(np.float32)
    queries = (rng.integers(-2, 3, (6, 8)) / 4).astype(np.float32)
    queries[2] = np.nan
    assert_same(search(queries, pool, 50, device="cpu"), exact_search_numpy(queries, pool, 50))
    pool[::2, 0] = np.nan                    # half the pool NaN for every query: k=200 > 150 finite
    assert_same(search(queries, pool, 200, device="cpu"), exact_search_numpy(queries, pool, 200))


def test_kernel_estimate_plan() -> None:
    """The estimate is used from k=500 on pools of at least 8k candidates; it asks for the
    sample's mean + 6 standard deviations + 3 best (k=1000, every 32nd candidate: the 68th)."""
    assert scan_topk._seed_plan(118_000, 1000, 384) == (32, 68)
    assert scan_topk._seed_plan(7_999, 1000, 384) is None and scan_topk._seed_plan(118_000, 100, 384) is None
    stride, rank = scan_topk._seed_plan(5_600_000, 1000, 768)       # M-BEIR's global pool: <= 256 MB of sample
    assert stride == 65 and 5_600_000 // stride * 768 * 4 <= scan_topk.SEED_MAX_BYTES and rank == 42
    assert scan_topk._seed_plan(5_600_000, 1000, 4096) is None      # too few expected sample hits


def test_kernel_refuses_keys_it_cannot_pack() -> None:
    """Tie-break keys past 32 bits (or negative) take the faiss path, with the same answer."""
    assert not scan_topk.usable_keys(np.array([0, 1 << 32]), 2) and not scan_topk.usable_keys(np.array([-1, 0]), 2)
    assert scan_topk.usable_keys(None, 10) and scan_topk.usable_keys(np.array([0, (1 << 32) - 1]), 2)
    rng = np.random.default_rng(3)
    pool = (rng.integers(-2, 3, (400, 8)) / 4).astype(np.float32)
    queries = (rng.integers(-2, 3, (5, 8)) / 4).astype(np.float32)
    keys = rng.permutation(400).astype(np.int64) * (1 << 30)
    assert_same(search(queries, pool, 30, tiebreak=keys, device="cpu"), exact_search_numpy(queries, pool, 30, keys))


def test_empty_inputs() -> None:
    pool = np.zeros((0, 4), np.float32)
    idx, scores = search(np.ones((3, 4), np.float32), pool, 10)
    assert idx.shape == scores.shape == (3, 0)
    idx, scores = search(np.ones((0, 4), np.float32), np.ones((5, 4), np.float32), 10)
    assert idx.shape == scores.shape == (0, 5)


@pytest.mark.parametrize("k", [0, -1, MAX_K + 1, 2.0, True, "10"])
def test_bad_k_raises(k: object) -> None:
    with pytest.raises(ValueError, match="k must be an integer between 1 and 1000"):
        search(np.ones((2, 4), np.float32), np.ones((5, 4), np.float32), k)


def test_dimension_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="dimension mismatch: queries have d=4 but pool block 1 has d=3"):
        search(np.ones((2, 4), np.float32), [np.ones((5, 4), np.float32), np.ones((5, 3), np.float32)], 3)
    with pytest.raises(ValueError, match="dimension mismatch"):
        exact_search_numpy(np.ones((2, 4), np.float32), np.ones((5, 8), np.float32), 3)


def test_bad_tiebreak_and_device_raise() -> None:
    with pytest.raises(ValueError, match=r"tiebreak must be an integer array of shape \(5,\)"):
        search(np.ones((2, 4), np.float32), np.ones((5, 4), np.float32), 3, tiebreak=np.arange(4))
    for device in ("tpu", "cuda:x", "gpu"):
        with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
            search(np.ones((2, 4), np.float32), np.ones((5, 4), np.float32), 3, device=device)


def test_device_resolution_prefers_faiss_gpu_then_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import faiss

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    monkeypatch.setattr(search_mod, "_torch_cuda_count", lambda: 1)
    assert search_mod._resolve_device("auto") == ("torch", "cuda")
    assert search_mod._resolve_device("cuda:0") == ("torch", "cuda:0")
    assert search_mod._resolve_device("cpu") == ("faiss", "cpu")
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2)
    assert search_mod._resolve_device("auto") == ("faiss", "cuda")
    assert search_mod._resolve_device("cuda:1") == ("faiss", "cuda:1")


def test_cuda_request_without_a_gpu_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    import faiss

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    monkeypatch.setattr(search_mod, "_torch_cuda_count", lambda: 0)
    with pytest.raises(ValueError, match="neither faiss nor torch can see that CUDA GPU"):
        search(np.ones((2, 4), np.float32), np.ones((5, 4), np.float32), 3, device="cuda:1")
    assert describe_backend("auto")["device"] == "cpu"


def test_faiss_global_settings_are_restored() -> None:
    import faiss

    before = (faiss.cvar.distance_compute_blas_threshold, faiss.cvar.distance_compute_blas_database_bs)
    search(np.ones((2, 4), np.float32), np.ones((5, 4), np.float32), 3)
    assert (faiss.cvar.distance_compute_blas_threshold,
            faiss.cvar.distance_compute_blas_database_bs) == before


def test_describe_backend_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    info = describe_backend("cpu")
    assert info["library"] == "mmbench-scan" and info["device"] == "cpu" and info["version"] == scan_topk.KERNEL_VERSION
    assert info["blas"].startswith("openblas ")        # numpy's BLAS computes the kernel's scores
    monkeypatch.setattr(search_mod, "CPU_SCAN", False)
    info = describe_backend("cpu")
    assert info["library"] == "faiss" and info["device"] == "cpu"
    assert isinstance(info["version"], str) and isinstance(info["gpus"], int)


def test_import_is_cheap() -> None:
    """faiss and torch are imported inside functions, never by importing the module."""
    import subprocess
    import sys

    code = "import sys, mmbench.search.engine; print('faiss' in sys.modules, 'torch' in sys.modules)"
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.split() == ["False", "False"]


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 6), cols=st.integers(1, 40),
       key_range=st.sampled_from([50, 2**32, 2**40]))
def test_rule_order_equals_two_key_lexsort(seed: int, rows: int, cols: int, key_range: int) -> None:
    """The packed-key argsort orders exactly as lexsort by (score desc, key desc): negative scores,
    -0.0 against +0.0, infinities and many exact ties included; keys past 32 bits and NaN scores
    (ranked last, as lexsort does) take the lexsort."""
    rng = np.random.default_rng(seed)
    pool = np.array([-np.inf, -1.5, -1e-30, -0.0, 0.0, 1e-30, 0.25, 0.5, 3.0, np.inf]
                    + ([np.nan] if seed % 5 == 0 else []), np.float32)
    scores = rng.choice(pool, (rows, cols)).astype(np.float32)
    keys = np.stack([rng.choice(key_range, cols, replace=False) if key_range >= cols else rng.permutation(cols)
                     for _ in range(rows)]).astype(np.int64)
    got = search_mod._rule_order(scores, keys)
    want = np.lexsort((-keys, -scores), axis=-1)
    np.testing.assert_array_equal(np.take_along_axis(keys, got, 1), np.take_along_axis(keys, want, 1))


@settings(max_examples=40, deadline=None)
@given(case=tie_heavy_cases())
def test_matches_reference_when_ordering_is_split_across_threads(case: dict) -> None:
    """Every ordering step split into one part per row (or a few entries): the same answer."""
    assert_matches_reference(case, **FAISS_PATH, TIE_MARGIN=0, TIE_MARGIN_FRACTION=0.0, _ROWS_PER_THREAD=1,
                             _ENTRIES_PER_THREAD=3)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_rows=st.integers(1, 30), n=st.integers(1, 8),
       per_thread=st.sampled_from([1, 5, 1 << 16]), skew=st.booleans())
def test_select_ragged_equals_one_lexsort_of_the_list(seed: int, n_rows: int, n: int, per_thread: int,
                                                      skew: bool) -> None:
    """Per row, the first n entries by (score desc, tiebreak desc), rows in any order and of any
    length (one row holding most entries included), split into any number of parts."""
    rng = np.random.default_rng(seed)
    counts = n + rng.integers(0, 500 if skew else 20, n_rows) * (rng.random(n_rows) < (0.1 if skew else 1.0))
    rows = rng.permutation(np.repeat(np.arange(n_rows), counts))
    idx = rng.permutation(rows.size * 2)[:rows.size].astype(np.int64)     # distinct candidates
    scores = rng.choice(np.array([-np.inf, -0.0, 0.0, 0.5, 1.0], np.float32), rows.size)
    tiebreak = rng.permutation(rows.size * 2).astype(np.int64)
    order = np.lexsort((-tiebreak[idx], -scores, rows))
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    want = order[first[:, None] + np.arange(n)]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(search_mod, "_ENTRIES_PER_THREAD", per_thread)
        got_i, got_s = search_mod._select_ragged(rows, idx, scores, n_rows, n, tiebreak)
    np.testing.assert_array_equal(got_i, idx[want])
    np.testing.assert_array_equal(got_s, scores[want])
