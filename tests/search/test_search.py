"""mmbench.search's backends must equal the plain numpy reference exactly, ties at the cut-off included
(path by path; tests/search/test_backend_contract.py runs every registered backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from search_cases import assert_same, search_with, tie_heavy_cases

from mmbench.search import MAX_K, describe_backend, exact_search_numpy, resolve, search
from mmbench.search import scan_topk, ties
from mmbench.search.backends.faiss_cpu import FaissCpuBackend
from mmbench.search.backends.scan_cpu import ScanCpuBackend
from mmbench.search.backends.torch_cuda import TorchBackend
from mmbench.search.blocks import Tuning


def assert_matches_reference(case: dict, backend=None) -> None:
    """``backend`` (default: search() on the CPU) on the case equals exact_search_numpy."""
    if backend is None:
        got = search(case["queries"], case["pool"], case["k"], tiebreak=case["tiebreak"],
                     memory_budget_bytes=case["budget"], device="cpu")
    else:
        got = search_with(backend, case)
    assert_same(got, exact_search_numpy(case["queries"], case["pool"], case["k"], case["tiebreak"]))


# On the CPU the threshold-scan kernel searches every pool where it is built; faiss-cpu ranks blocks
# of at most rows_per_hit rows per hit from their full score rows, larger ones by faiss with a
# margin and the tie fix: each test says which path it checks.
FAISS_PATH = FaissCpuBackend(tuning=Tuning(rows_per_hit=0))
GEMM_PATH = FaissCpuBackend(tuning=Tuning(rows_per_hit=10**9))
# the kernel in small pieces: tiles of 16 candidates, 3 queries per range (several ranges per
# thread), and the threshold estimate on from k=1 with every 2nd candidate as the sample
SCAN_SMALL = ScanCpuBackend(settings=scan_topk.ScanSettings(tile_bytes=16 * 4, query_chunk=3, seed_min_k=1,
                                                            seed_stride=2))


def test_kernel_is_built() -> None:
    """``make test`` installs mmbench with its C kernel: the default-path tests below exercise it."""
    assert scan_topk.kernel() is not None
    assert describe_backend(device="cpu")["library"] == "mmbench-scan"


@pytest.mark.parametrize("path", [FAISS_PATH, GEMM_PATH, SCAN_SMALL, None], ids=["faiss", "gemm", "scan-small", "default"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tie_heavy_cases())
def test_matches_reference_with_ties(case: dict, path) -> None:
    assert_matches_reference(case, path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tie_heavy_cases())
def test_gemm_path_in_small_query_chunks(case: dict) -> None:
    """The full-score-rows path a few queries at a time, its ordering split per row: the same answer."""
    assert_matches_reference(case, FaissCpuBackend(tuning=Tuning(rows_per_hit=10**9, gemm_chunk_bytes=1, rows_per_thread=1)))


@settings(max_examples=40, deadline=None)
@given(case=tie_heavy_cases())
def test_matches_reference_without_margin(case: dict) -> None:
    """With no margin nearly every row goes through the exact cut-off recompute."""
    assert_matches_reference(case, FaissCpuBackend(tuning=Tuning(tie_margin=0, margin_fraction=0.0)))


@pytest.mark.parametrize("slack", [-1.0, 10.0])
@settings(max_examples=25, deadline=None)
@given(case=tie_heavy_cases())
def test_tie_fix_floor_extremes(case: dict, slack: float) -> None:
    """A floor above every cut-off (each row takes the full-block fallback) and one below every score
    (each rescored candidate is collected) both give the reference answer."""
    assert_matches_reference(case, FaissCpuBackend(tuning=Tuning(tie_margin=0, margin_fraction=0.0, tie_slack=slack,
                                                                 tile_rows=97, tile_queries=7)))  # several tiles per block


@settings(max_examples=30, deadline=None)
@given(case=tie_heavy_cases())
def test_torch_path_matches_reference(case: dict) -> None:
    """The torch mm + topk path (used on GPUs without faiss-gpu), run here on the CPU, by name."""
    got = search(case["queries"], case["pool"], case["k"], tiebreak=case["tiebreak"],
                 memory_budget_bytes=case["budget"], backend="torch")
    assert_same(got, exact_search_numpy(case["queries"], case["pool"], case["k"], case["tiebreak"]))
    assert_matches_reference(case, TorchBackend(tuning=Tuning(tie_margin=0, margin_fraction=0.0)))


@pytest.mark.parametrize("path", ["faiss", "gemm", "scan-cpu"])
@pytest.mark.parametrize("seed", range(5))
def test_matches_reference_on_random_floats(seed: int, path: str) -> None:
    """Unquantised normalised data, several blocks: equal wherever rounding cannot swap two hits."""
    rng = np.random.default_rng(seed)
    queries = rng.standard_normal((40, 24)).astype(np.float32)
    pool = rng.standard_normal((2500, 24)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    backend = {"faiss": FAISS_PATH, "gemm": GEMM_PATH}.get(path) or ScanCpuBackend()
    got_i, got_s = search_with(backend, {"queries": queries, "pool": pool, "k": 100, "tiebreak": None,
                                         "budget": 300 * 4 * 24})
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


def test_progress_reports_each_block() -> None:
    pool = np.random.default_rng(2).standard_normal((1000, 8)).astype(np.float32)
    calls: list[tuple[int, int]] = []
    search(pool[:5], [pool[:300], pool[300:]], 3, memory_budget_bytes=128 * 4 * 8, backend="faiss-cpu",
           progress=lambda done, total: calls.append((done, total)))
    assert calls == [(128, 1000), (256, 1000), (300, 1000), (428, 1000), (556, 1000),
                     (684, 1000), (812, 1000), (940, 1000), (1000, 1000)]


@pytest.mark.parametrize("chunk", [1, 2, 4096])
def test_kernel_progress_counts_every_candidate_once(chunk: int) -> None:
    """The kernel's query ranges run on several threads: progress rises to the pool size, never past it."""
    from mmbench.search import Pool

    pool = np.random.default_rng(2).standard_normal((1000, 8)).astype(np.float32)
    calls: list[tuple[int, int]] = []
    index = ScanCpuBackend(settings=scan_topk.ScanSettings(query_chunk=chunk)).prepare(
        Pool((pool[:300], pool[300:]), 1000, 8, None, "cpu", 128 * 4 * 8))
    index.search(pool[:5], 3, progress=lambda done, total: calls.append((done, total)))
    done = [d for d, _ in calls]
    assert {t for _, t in calls} == {1000} and done == sorted(done) and done[-1] == 1000
    assert len(calls) == 9 * len(scan_topk._query_ranges(5, chunk))      # every block of every range


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tie_heavy_cases())
def test_kernel_estimate_too_high_scans_again(case: dict) -> None:
    """An estimate above every query's k-th score (each row's best sample score, sample = the whole
    pool) leaves rows short: they are scanned again from -inf, and the answer is the reference's."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(scan_topk, "_seed_plan", lambda total, n, dim, settings: (1, 1))
        passes = []
        real_pass = scan_topk._pass
        m.setattr(scan_topk, "_pass", lambda *a: passes.append(a[5] is None) or real_pass(*a))
        assert_matches_reference(case, ScanCpuBackend(settings=scan_topk.ScanSettings(query_chunk=7)))
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
    assert stride == 65 and 5_600_000 // stride * 768 * 4 <= scan_topk.ScanSettings().seed_max_bytes and rank == 42
    assert scan_topk._seed_plan(5_600_000, 1000, 4096) is None      # too few expected sample hits


def test_kernel_refuses_keys_it_cannot_pack() -> None:
    """Tie-break keys past 32 bits (or negative) take the faiss path, with the same answer."""
    assert not scan_topk.usable_keys(np.array([0, 1 << 32]), 2) and not scan_topk.usable_keys(np.array([-1, 0]), 2)
    assert scan_topk.usable_keys(None, 10) and scan_topk.usable_keys(np.array([0, (1 << 32) - 1]), 2)
    rng = np.random.default_rng(3)
    pool = (rng.integers(-2, 3, (400, 8)) / 4).astype(np.float32)
    queries = (rng.integers(-2, 3, (5, 8)) / 4).astype(np.float32)
    keys = rng.permutation(400).astype(np.int64) * (1 << 30)
    assert_same(search(queries, pool, 30, tiebreak=keys, backend="scan-cpu"), exact_search_numpy(queries, pool, 30, keys))


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
    """The GPU counts faiss and torch report are the environment here (no GPU on the test host)."""
    from mmbench.search import backends

    monkeypatch.setattr(backends, "faiss_gpus", lambda: 0)
    monkeypatch.setattr(backends, "torch_cuda_count", lambda: 1)
    names = lambda request: (resolve("auto", request)[0].name, resolve("auto", request)[1])  # noqa: E731
    assert names("auto") == ("torch", "cuda")
    assert names("cuda:0") == ("torch", "cuda:0")
    assert names("cpu") == ("scan-cpu", "cpu")
    monkeypatch.setattr(backends, "faiss_gpus", lambda: 2)
    assert names("auto") == ("faiss-gpu", "cuda")
    assert names("cuda:1") == ("faiss-gpu", "cuda:1")


def test_cuda_request_without_a_gpu_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmbench.search import backends

    monkeypatch.setattr(backends, "faiss_gpus", lambda: 0)
    monkeypatch.setattr(backends, "torch_cuda_count", lambda: 0)
    with pytest.raises(ValueError, match="neither faiss nor torch can see that CUDA GPU"):
        search(np.ones((2, 4), np.float32), np.ones((5, 4), np.float32), 3, device="cuda:1")
    assert describe_backend("auto")["device"] == "cpu"


def test_faiss_global_settings_are_restored() -> None:
    import faiss

    before = (faiss.cvar.distance_compute_blas_threshold, faiss.cvar.distance_compute_blas_database_bs)
    search(np.ones((2, 4), np.float32), np.ones((5, 4), np.float32), 3)
    assert (faiss.cvar.distance_compute_blas_threshold,
            faiss.cvar.distance_compute_blas_database_bs) == before


def test_describe_backend_cpu() -> None:
    info = describe_backend(device="cpu")
    assert info["library"] == "mmbench-scan" and info["device"] == "cpu" and info["version"] == scan_topk.KERNEL_VERSION
    assert info["blas"].startswith("openblas ")        # numpy's BLAS computes the kernel's scores
    assert info["name"] == "scan-cpu" and info["exact"] is True
    info = describe_backend("faiss-cpu", "cpu")
    assert info["library"] == "faiss" and info["device"] == "cpu" and info["name"] == "faiss-cpu"
    assert isinstance(info["version"], str) and isinstance(info["gpus"], int)
    assert describe_backend("torch", "auto")["device"] == "cpu"          # no GPU here: torch on the CPU


def test_import_is_cheap() -> None:
    """faiss and torch are imported inside functions, never by importing the module."""
    import subprocess
    import sys

    code = ("import sys, mmbench.search, mmbench.search.backends; mmbench.search.backend_names();"
            " print('faiss' in sys.modules, 'torch' in sys.modules)")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.split() == ["False", "False"]


@settings(max_examples=40, deadline=None)
@given(case=tie_heavy_cases())
def test_matches_reference_when_ordering_is_split_across_threads(case: dict) -> None:
    """Every ordering step split into one part per row (or a few entries): the same answer."""
    assert_matches_reference(case, FaissCpuBackend(tuning=Tuning(tie_margin=0, margin_fraction=0.0, rows_per_thread=1,
                                                                 entries_per_thread=3)))


def test_unknown_backend_suggests_close_names() -> None:
    from mmbench.errors import UnknownNameError
    from mmbench.search import backend_names

    assert {"auto", "scan-cpu", "faiss-cpu", "faiss-gpu", "torch", "numpy"} <= set(backend_names())
    with pytest.raises(UnknownNameError, match="faiss-cpu"):
        search(np.ones((2, 4), np.float32), np.ones((5, 4), np.float32), 3, backend="faiss-cpux")


def test_named_backend_that_cannot_run_here_is_refused() -> None:
    from mmbench.errors import MmbenchError

    with pytest.raises(MmbenchError, match="'numpy' cannot run on cuda"):
        search(np.ones((2, 4), np.float32), np.ones((5, 4), np.float32), 3, backend="numpy", device="cuda")
