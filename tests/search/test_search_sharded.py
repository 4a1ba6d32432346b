"""Issue #26: the pool sharded over several devices in one process (``sharded``), float16 and
streamed storage, answers exactly as the reference and writes the same run-file bytes.

The device-agnostic code (plan, per-shard loop, merge, cut-off fix) runs here on CPU tensors with
several ``"cpu"`` devices; tiny budgets and score steps push it through streamed blocks, query
batches and row steps; pools are tie-heavy (duplicate rows, near-ties, NaN rows, k at the pool size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from search_cases import assert_same, tie_heavy_cases

from mmbench.errors import MmbenchError
from mmbench.search import Pool, describe_backend, exact_search_numpy, get_backend, resolve, search
from mmbench.search.base import as_queries, check_tiebreak, pool_parts
from mmbench.search.blocks import Tuning
from mmbench.search.rescore import gather_and_rescore

pytest.importorskip("torch")

from mmbench.search.backends.sharded import STORAGES, ShardedBackend, ShardSettings, plan_shards  # noqa: E402

# small steps: a few rows and queries per product, a narrow margin (the cut-off fix runs often)
SMALL = ShardedBackend(settings=ShardSettings(tuning=Tuning(tie_margin=1, margin_fraction=0.0),
                                              score_bytes=4 * 6 * 7, min_step_rows=7))


def _pool(case: dict, devices: tuple[str, ...], budget: int | None = None) -> tuple[np.ndarray, Pool]:
    queries = as_queries(case["queries"])
    parts = pool_parts(case["pool"], queries.shape[1])
    total = sum(p.shape[0] for p in parts)
    return queries, Pool(tuple(parts), total, queries.shape[1], check_tiebreak(case["tiebreak"], total), "cpu",
                         case["budget"] if budget is None else budget, devices)


def _run_bytes(backend, queries: np.ndarray, pool: Pool, k: int, tmp: Path, name: str) -> bytes:
    from mmbench.results.trec import write_trec

    n = min(k, pool.total)
    idx, scores = gather_and_rescore(backend.prepare(pool), queries, pool, n)
    path = tmp / f"{name}.trec"
    write_trec(path, [f"q{i}" for i in range(queries.shape[0])], [f"d{i:05d}" for i in range(pool.total)],
               idx, scores, "t", fsync=False)
    return path.read_bytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tie_heavy_cases(near_ties=True, nan_rows=True, max_n=700), shards=st.integers(1, 4),
       small=st.booleans())
def test_sharded_index_is_the_reference(case: dict, shards: int, small: bool) -> None:
    """Shards on several CPU 'devices' (odd sizes), streamed or resident by the case's budget."""
    queries, pool = _pool(case, ("cpu",) * shards)
    backend = SMALL if small else get_backend("sharded")
    got = backend.prepare(pool).search(queries, case["k"])
    assert_same(got, exact_search_numpy(case["queries"], case["pool"], case["k"], case["tiebreak"]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 900), shards=st.integers(2, 4), f16=st.booleans(),
       budget_rows=st.integers(4, 1000), whole=st.booleans())
def test_sharded_run_files_are_the_reference_bytes(seed: int, n: int, shards: int, f16: bool, budget_rows: int,
                                                   whole: bool, tmp_path: Path) -> None:
    """Unit float rows (products round differently per kernel), duplicates and near-ties, float16
    pools, k up to the pool size: the run file equals the ``numpy`` backend's byte for byte."""
    rng = np.random.default_rng(seed)
    d = int(rng.integers(1, 48))
    rows = rng.standard_normal((n, d)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    copy = rng.random(n) < 0.5
    rows[copy] = rows[rng.integers(0, n, n)][copy]
    near = copy & (rng.random(n) < 0.3)
    rows[near] = np.nextafter(rows[near], np.float32(2.0))
    queries = rng.standard_normal((int(rng.integers(1, 20)), d)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    case = {"queries": queries, "pool": rows.astype(np.float16) if f16 else rows, "tiebreak": rng.permutation(n),
            "budget": budget_rows * 4 * d}
    k = min(1000, n if whole else int(rng.integers(1, n + 1)))
    q, pool = _pool(case, ("cpu",) * shards)
    want = _run_bytes(get_backend("numpy"), q, pool, k, tmp_path, "numpy")
    for name, backend in (("sharded", get_backend("sharded")), ("small", SMALL)):
        assert _run_bytes(backend, q, pool, k, tmp_path, name) == want, name


def test_plan_cuts_contiguous_shards_and_picks_storage_by_budget() -> None:
    parts = (np.zeros((5, 4), np.float16), np.zeros((6, 4), np.float16))
    for devices in (("cpu",), ("cpu",) * 3, ("cpu",) * 4, ("cpu",) * 20):
        for budget in (1, 8 * 4, 11 * 4 * 2, 11 * 4 * 4, 1 << 20):
            shards = plan_shards(Pool(parts, 11, 4, None, "cpu", budget, devices), devices)
            assert len(shards) == min(len(devices), 11)
            assert [s.offset for s in shards] == list(np.cumsum([0] + [s.rows for s in shards])[:-1])
            assert sum(s.rows for s in shards) == 11 and max(s.rows for s in shards) - min(s.rows for s in shards) <= 1
            for s in shards:
                assert s.storage in STORAGES
                assert [b.offset for b in s.blocks] == list(s.offset + np.cumsum([0] + [b.rows.shape[0] for b in s.blocks])[:-1])
                assert sum(b.rows.shape[0] for b in s.blocks) == s.rows
                fits32, fits16 = s.rows * 16 <= budget, s.rows * 8 <= budget
                assert s.storage == ("float32" if fits32 else "float16" if fits16 else "streamed")
                if s.storage == "streamed":     # two blocks in flight within the budget
                    assert all(b.rows.shape[0] <= max(1, budget // 16 // 2) for b in s.blocks)
    # a float32 pool is never narrowed to float16: it streams instead
    shards = plan_shards(Pool((np.zeros((10, 4), np.float32),), 10, 4, None, "cpu", 100, ("cpu",)), ("cpu",))
    assert shards[0].storage == "streamed"


@pytest.mark.parametrize("budget", [1 << 20, 300 * 16 * 2, 40 * 16 * 4], ids=["float32", "float16", "streamed"])
def test_float16_pool_on_each_storage(budget: int) -> None:
    rng = np.random.default_rng(3)
    pool = (rng.integers(-3, 4, (900, 16)) / 4).astype(np.float16)
    pool[rng.integers(0, 900, 300)] = pool[rng.integers(0, 900, 300)]
    queries = (rng.integers(-3, 4, (25, 16)) / 4).astype(np.float32)
    q, prepared = _pool({"queries": queries, "pool": pool, "tiebreak": None, "budget": budget}, ("cpu",) * 3)
    index = get_backend("sharded").prepare(prepared)
    assert {s.storage for s in index.shards} == {("float32", "float16", "streamed")[[1 << 20, 300 * 16 * 2,
                                                                                       40 * 16 * 4].index(budget)]}
    for k in (1, 7, 899, 900):
        assert_same(index.search(q, k), exact_search_numpy(queries, pool, k))


def test_search_entry_point_shards_over_devices_and_records_them() -> None:
    rng = np.random.default_rng(5)
    pool = (rng.integers(-2, 3, (1001, 8)) / 4).astype(np.float32)
    queries = (rng.integers(-2, 3, (9, 8)) / 4).astype(np.float32)
    seen: list[tuple[int, int]] = []
    got = search(queries, pool, 50, devices=["cpu", "cpu", "cpu"], memory_budget_bytes=64 * 8 * 4,
                 progress=lambda done, total: seen.append((done, total)))
    want = search(queries, pool, 50, backend="numpy")
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1].view(np.int32), want[1].view(np.int32))
    assert seen[-1] == (1001, 1001)
    assert resolve("auto", "auto", ["cpu", "cpu"])[0].name == "sharded"
    info = describe_backend("auto", devices=["cpu", "cpu"])
    assert info["name"] == "sharded" and info["exact"] and info["devices"] == ["cpu", "cpu"]
    with pytest.raises(MmbenchError, match="sharded-faiss.*cpu"):
        search(queries, pool, 5, backend="sharded-faiss", devices=["cpu"])
    with pytest.raises(ValueError, match="devices must name"):
        search(queries, pool, 5, devices=["auto"])
