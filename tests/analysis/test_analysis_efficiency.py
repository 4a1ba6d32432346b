"""The leaderboard's cost columns (analysis/efficiency.py, `mmbench leaderboard build --efficiency`)."""

from __future__ import annotations

import csv
import json
import math

import pytest

from mmbench.analysis.efficiency import EFFICIENCY_COLUMNS, MIB, efficiency_columns
from result_files import TASKS, make_tree, mmbench


def report(*, pool: str, q: tuple[int, float], c: tuple[int, float], search: tuple[int, float],
           p50: float, p95: float, index: int, rss: int, gpu: int | None = None) -> dict:
    return {"encode": {"device": "cpu", "queries": {"encoded": q[0], "seconds": q[1]},
                       "candidates": {"pool": pool, "encoded": c[0], "seconds": c[1]}},
            "search": {"queries": search[0], "seconds": search[1], "latency": {"p50_ms": p50, "p95_ms": p95, "samples": 9}},
            "memory": {"pool_bytes": index, "index_bytes": index, "peak_rss_bytes": rss, "peak_gpu_bytes": gpu}}


def test_columns_count_a_shared_pool_once_and_skip_what_is_missing():
    reports = {
        "t1": report(pool="P", q=(10, 1.0), c=(100, 4.0), search=(10, 0.5), p50=1.0, p95=3.0, index=4 * MIB, rss=100 * MIB),
        "t2": report(pool="P", q=(30, 1.0), c=(100, 4.0), search=(30, 0.5), p50=2.0, p95=9.0, index=4 * MIB, rss=300 * MIB),
        "t3": report(pool="Q", q=(0, 0.0), c=(0, 0.0), search=(20, 1.0), p50=5.0, p95=5.0, index=8 * MIB, rss=200 * MIB,
                     gpu=2 * MIB),
    }
    got = efficiency_columns(reports, ["t1", "t2", "t3", "t4"])          # t4: a record without a report
    assert got["encode_items_s"] == pytest.approx((10 + 100 + 30) / (1.0 + 4.0 + 1.0))   # pool P once; t3 all cached
    assert got["search_qps"] == pytest.approx(60 / 2.0)
    assert got["latency_p50_ms"] == 2.0 and got["latency_p95_ms"] == 5.0               # medians over tasks
    assert got["index_mib"] == 8.0 and got["peak_rss_mib"] == 300.0 and got["peak_gpu_mib"] == 2.0
    cached = efficiency_columns({"t3": reports["t3"]}, ["t3"])
    assert math.isnan(cached["encode_items_s"]) and cached["search_qps"] == 20.0
    assert all(math.isnan(v) for v in efficiency_columns({}, ["t1"]).values())
    broken = {"t1": {"encode": "?", "search": {"queries": "many", "seconds": float("nan")}, "memory": [1]}}
    assert all(math.isnan(v) for v in efficiency_columns(broken, ["t1"]).values())


def test_leaderboard_shows_the_cost_columns_only_when_asked(tmp_path):
    tree = make_tree(tmp_path)
    for i, task in enumerate(TASKS):                   # run a has reports, run b (older records) has none
        path = tree["a"] / f"{task}.json"
        rec = json.loads(path.read_text())
        rec["efficiency"] = report(pool=task, q=(24, 2.0), c=(50, 2.0), search=(24, 0.5), p50=1.0 + i, p95=4.0,
                                   index=MIB, rss=64 * MIB)
        path.write_text(json.dumps(rec))
    rc, _, err = mmbench("leaderboard", "build", "--results", tree["results"], "--out", tmp_path / "plain", "--no-reported")
    assert rc == 0, err
    rc, _, err = mmbench("leaderboard", "build", "--results", tree["results"], "--out", tmp_path / "cost",
                         "--no-reported", "--efficiency")
    assert rc == 0, err
    plain = next((tmp_path / "plain").glob("*.csv"))
    assert not set(EFFICIENCY_COLUMNS) & set(next(csv.reader(plain.open())))
    rows = {r["model"]: r for r in csv.DictReader(next((tmp_path / "cost").glob("*.csv")).open())}
    a, b = rows["model-a"], rows["model-b"]
    assert float(a["encode_items_s"]) == pytest.approx(3 * 74 / 12) and float(a["search_qps"]) == pytest.approx(48.0)
    assert float(a["latency_p50_ms"]) == 2.0 and float(a["index_mib"]) == 1.0 and float(a["peak_rss_mib"]) == 64.0
    assert "peak_gpu_mib" not in a                       # no run read a GPU peak: no column
    assert b["encode_items_s"] == b["search_qps"] == ""  # records without a report: empty cells
    md = next((tmp_path / "cost").glob("*.md")).read_text()
    html = next((tmp_path / "cost").glob("*.html")).read_text()
    for label in ("encode items/s", "search q/s", "latency p50 ms", "index MiB", "peak RSS MiB"):
        assert label in md and label in html
    assert 'data-key="latency_p50_ms"' in html
