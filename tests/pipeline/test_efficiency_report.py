"""The efficiency report in every first-stage task record (pipeline/efficiency.py): encode items/s per
modality (cached items are not throughput), single-query search latency, bytes, peak memory.

The figures are timings: the tests check their structure, their arithmetic and what must hold
whatever the machine (counts, bytes, p50 <= p95), never a time.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import types
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from mmbench.cli import _invoke
from mmbench.data.types import ImageRef, Item
from mmbench.embeddings import EncodeStats
from mmbench.models.progress import MIXED, metered
from mmbench.pipeline import efficiency as eff


def items(*modalities: str) -> list[Item]:
    return [Item(f"i{n}", m, text="t" if "text" in m else None, image=ImageRef(Path("x.png")) if "image" in m else None)
            for n, m in enumerate(modalities)]


def test_metered_counts_one_call_under_its_modality_or_mixed():
    ledger: dict = {}
    with metered(ledger, items("text", "text")):
        pass
    with metered(ledger, items("text,image")):          # the canonical spelling: "image,text"
        pass
    with metered(ledger, items("text", "image")):
        pass
    with pytest.raises(RuntimeError), metered(ledger, items("image")):
        raise RuntimeError("out of memory")              # a failed call encoded nothing
    assert {k: n for k, (n, _) in ledger.items()} == {"text": 2, "image,text": 1, MIXED: 2}
    assert all(seconds >= 0 for _, seconds in ledger.values())


def test_encode_figures_keep_cached_items_out_of_the_throughput():
    stats = EncodeStats(encoded=4, cached=6, seconds=2.0, by_modality={"image": (4, 2.0)})
    got = eff.encode_figures([stats], ["image"] * 8 + ["text"] * 2)
    assert got["items"] == 10 and got["encoded"] == 4 and got["cached"] == 6 and got["items_per_s"] == 2.0
    assert got["by_modality"] == {"image": {"encoded": 4, "seconds": 2.0, "items_per_s": 2.0, "cached": 4},
                                  "text": {"encoded": 0, "seconds": 0.0, "items_per_s": None, "cached": 2}}
    cached = eff.encode_figures([EncodeStats(cached=3)], ["text"] * 3)
    assert cached["items_per_s"] is None and cached["by_modality"]["text"]["cached"] == 3
    # a mixed encode call: the per-modality split of the cached items is unknown, so it is not given
    mixed = eff.encode_figures([EncodeStats(encoded=3, by_modality={MIXED: (3, 1.5)})], ["text", "image", "text"])
    assert mixed["by_modality"][MIXED]["items_per_s"] == 2.0
    assert all("cached" not in v for v in mixed["by_modality"].values())
    # a union pool: the figures of its parts add up
    union = eff.encode_figures([EncodeStats(encoded=2, by_modality={"text": (2, 1.0)}),
                                EncodeStats(encoded=2, cached=1, by_modality={"text": (2, 3.0)})], ["text"] * 5)
    assert union["by_modality"]["text"] == {"encoded": 4, "seconds": 4.0, "items_per_s": 1.0, "cached": 1}


class FakeClock:
    """Each search takes ``step`` seconds of this clock."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        return self.now

    def search(self, i: int) -> None:
        self.now += self.step


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5000), st.floats(1e-4, 3.0), st.floats(0, 1000), st.integers(1, 64))
def test_latency_sampling_is_spread_capped_and_summarised(n, step, batch_seconds, max_samples):
    clock, seen = FakeClock(step), []

    def search_one(i: int) -> None:
        seen.append(i)
        clock.search(i)

    got = eff.sample_latency(search_one, n, batch_seconds, max_samples=max_samples, clock=clock)
    budget = max(eff.LATENCY_MIN_BUDGET_S, eff.LATENCY_BUDGET_SHARE * batch_seconds)
    assert got["samples"] == len(seen) <= min(n, max_samples)
    assert seen == sorted(set(seen)) and all(0 <= i < n for i in seen)
    if n == 0:
        assert got == {"p50_ms": None, "p95_ms": None, "mean_ms": None, "samples": 0}
        return
    assert seen[0] == 0
    assert (len(seen) - 1) * step < budget + 1e-9            # stops once the budget is spent ...
    if len(seen) < min(n, max_samples):
        assert len(seen) * step >= budget - 1e-9             # ... and not before
    assert got["p50_ms"] == got["p95_ms"] == got["mean_ms"] == pytest.approx(1000 * step, rel=1e-6, abs=1e-3)


def test_latency_percentiles_interpolate():
    got = eff.latency_summary([0.001 * v for v in range(1, 21)])          # 1..20 ms
    assert got == {"p50_ms": 10.5, "p95_ms": 19.05, "mean_ms": 10.5, "samples": 20}


def test_gpu_memory_is_read_only_from_an_initialised_torch(monkeypatch):
    monkeypatch.delitem(os.sys.modules, "torch", raising=False)
    assert eff.peak_gpu_bytes() is None and eff.encode_device("auto") == "cpu"
    assert eff.encode_device("cuda:1") == "cuda:1"

    def fake_torch(initialised: bool):
        cuda = types.SimpleNamespace(is_initialized=lambda: initialised, device_count=lambda: 2,
                                     max_memory_allocated=lambda d: 100 * (d + 1))
        return types.SimpleNamespace(cuda=cuda)

    monkeypatch.setitem(os.sys.modules, "torch", fake_torch(False))
    assert eff.peak_gpu_bytes() is None
    monkeypatch.setitem(os.sys.modules, "torch", fake_torch(True))
    assert eff.peak_gpu_bytes() == 300
    assert eff.peak_rss_bytes() > 0


# ------------------------------------------------------------------------------ in a real run's records
def mmbench(*args) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = _invoke([str(a) for a in args])
    assert rc == 0, f"{args} failed ({rc}):\n{out.getvalue()}\n{err.getvalue()}"


def records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in out.rglob("*.json")
            if p.name not in ("summary.json", "config.json") and p.parent.name == "local"}


def test_every_record_reports_what_the_run_cost(mbeir_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MMBENCH_HOME", os.environ["MMBENCH_TEST_CACHE"])
    monkeypatch.setenv("MMBENCH_NO_PROGRESS", "1")
    args = ["run", "--tasks", "mscoco_task0,oven_task6", "--data-root", mbeir_root, "--device", "cpu"]
    mmbench(*args, "--output", tmp_path / "r1", "--overwrite")          # --overwrite: every item encoded now
    first = records(tmp_path / "r1")
    assert set(first) == {"mscoco_task0", "oven_task6"}
    for task, query_modality, pool_modality in (("mscoco_task0", "text", "image"), ("oven_task6", "image,text", "text")):
        rec = first[task]
        e = rec["efficiency"]
        enc = e["encode"]
        assert enc["device"] == "cpu"
        q = enc["queries"]
        assert q["items"] == q["encoded"] == rec["n_queries_in_file"] and q["cached"] == 0
        assert set(q["by_modality"]) == {query_modality} and q["by_modality"][query_modality]["encoded"] == q["items"]
        c = enc["candidates"]
        assert c["pool"] == task and c["items"] == rec["n_candidates"] == c["encoded"] + c["cached"]
        assert set(c["by_modality"]) == {pool_modality} and c["items_per_s"] > 0
        s = e["search"]
        assert s["backend"] == rec["search"]["name"] and s["queries"] == rec["n_queries_in_file"]
        lat = s["latency"]
        assert 1 <= lat["samples"] <= min(eff.LATENCY_SAMPLES, s["queries"]) and 0 < lat["p50_ms"] <= lat["p95_ms"]
        m = e["memory"]
        assert m["pool_bytes"] == m["index_bytes"] == rec["n_candidates"] * rec["model"]["embed_dim"] * 4
        assert m["peak_rss_bytes"] > m["pool_bytes"] and m["peak_gpu_bytes"] is None
        assert list(rec).index("efficiency") == list(rec).index("timings_s") + 1
    # the same run again into another folder: every embedding comes from the cache, none is throughput
    mmbench(*args, "--output", tmp_path / "r2")
    for task, rec in records(tmp_path / "r2").items():
        for role in ("queries", "candidates"):
            fig = rec["efficiency"]["encode"][role]
            assert fig["encoded"] == 0 and fig["cached"] == fig["items"] and fig["items_per_s"] is None
            assert all(v["items_per_s"] is None and v["encoded"] == 0 for v in fig["by_modality"].values())
        assert rec["metrics"] == first[task]["metrics"]                # timings differ, scores never
