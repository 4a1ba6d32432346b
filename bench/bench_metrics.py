"""Time ``mmbench.metrics.scoring.evaluate`` against pytrec_eval on random runs of Q queries x 100 hits.

    python bench/bench_metrics.py [--queries 10000 200000] [--pool 1000000] [--repeat 3]

Each query has 1-3 positives (relevance 1-3), about half of them retrieved; scores are rounded to
3 decimals so rows contain ties. mmbench is timed with the pool's ids as a ``CandidateIds`` whose id
index was built beforehand (once per pool; its time is printed apart) and as a plain list. pytrec_eval's
time is split into building its run dict from the same arrays and evaluating; its measure for each metric
is the family's ``trec_eval`` name in :mod:`mmbench.metrics.families` (``success_5``, ``ndcg_cut_10``, ...),
and ``mrr@10`` comes from its ``recip_rank`` (1/r if the first relevant rank r <= 10). Times are medians
over ``--repeat`` runs; the per-query values must agree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytrec_eval

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "harness"))

from mmbench.data.types import Qrels  # noqa: E402
from mmbench.metrics.families import FAMILIES, parse_metric  # noqa: E402
from mmbench.metrics.scoring import CandidateIds, Run, evaluate  # noqa: E402

DEPTH = 100
METRICS = ("hit@5", "recall@100", "ndcg@10", "mrr@10", "map@100")


def trec_measures(metrics) -> tuple[dict[str, str], set[str]]:
    """pytrec_eval's result key of each metric whose family takes a cut-off, and the measures to ask for
    (``recip_rank`` for mrr, which is read per cut-off in :func:`pytrec_values`)."""
    keys, measures = {}, set()
    for name in metrics:
        family, k = parse_metric(name)
        trec = FAMILIES[family].trec_eval
        if FAMILIES[family].cut:
            keys[name] = f"{trec}_{k}"
            measures.add(f"{trec}.{k}")
        elif trec == "recip_rank":
            measures.add(trec)
        else:
            raise SystemExit(f"{name}: the bench reads only cut-off measures and recip_rank")
    return keys, measures


TREC, MEASURES = trec_measures(METRICS)


def make_case(n_queries: int, n_pool: int, rng: np.random.Generator) -> tuple[Run, Qrels]:
    """A sorted run of distinct hits per row over a pool of ``n_pool`` ids, and its qrels."""
    candidate_ids = CandidateIds([f"doc{i}" for i in range(n_pool)])
    start = rng.integers(0, n_pool, n_queries)
    step = rng.integers(1, n_pool // DEPTH, n_queries)                    # step * 99 < n_pool: distinct
    indices = (start[:, None] + step[:, None] * np.arange(DEPTH)) % n_pool
    scores = np.round(rng.random((n_queries, DEPTH)), 3).astype(np.float32)
    query_ids = [f"q{i}" for i in range(n_queries)]
    run = Run(query_ids, candidate_ids, indices, scores).sort_rows()
    qrels: Qrels = {}
    n_pos = rng.integers(1, 4, n_queries)
    retrieved = rng.random((n_queries, 3)) < 0.5
    from_row = rng.integers(0, DEPTH, (n_queries, 3))
    from_pool = rng.integers(0, n_pool, (n_queries, 3))
    rels = rng.integers(1, 4, (n_queries, 3))
    for i, q in enumerate(query_ids):
        qrels[q] = {}
        for j in range(n_pos[i]):
            idx = indices[i, from_row[i, j]] if retrieved[i, j] else from_pool[i, j]
            qrels[q][candidate_ids[idx]] = int(rels[i, j])
    return run, qrels


def pytrec_dict(run: Run) -> dict[str, dict[str, float]]:
    """The run as pytrec_eval's input dict."""
    ids = run.candidate_ids
    return {
        q: dict(zip(map(ids.__getitem__, row), srow))
        for q, row, srow in zip(run.query_ids, run.indices.tolist(), run.scores.tolist())
    }


def pytrec_values(run_dict: dict[str, dict[str, float]], qrels: Qrels) -> dict[str, dict[str, float]]:
    """pytrec_eval's value of each benchmarked metric, per query."""
    out = {}
    for q, m in pytrec_eval.RelevanceEvaluator(qrels, MEASURES).evaluate(run_dict).items():
        out[q] = {name: m[trec] for name, trec in TREC.items()}
        rr = m.get("recip_rank", 0.0)
        for name in METRICS:
            family, k = parse_metric(name)
            if family == "mrr":
                out[q][name] = rr if rr > 0 and round(1 / rr) <= k else 0.0
    return out


def timed(fn: Callable, repeat: int):
    """(median seconds, last result) of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def bench(n_queries: int, n_pool: int, repeat: int, rng: np.random.Generator) -> dict[str, float]:
    run, qrels = make_case(n_queries, n_pool, rng)
    t_index, _ = timed(lambda: CandidateIds(run.candidate_ids).position, repeat)
    run.candidate_ids.position                                            # built once per pool
    t_ours, ours = timed(lambda: evaluate(run, qrels, METRICS), repeat)
    plain = Run(run.query_ids, list(run.candidate_ids), run.indices, run.scores)
    t_plain, ours_plain = timed(lambda: evaluate(plain, qrels, METRICS), repeat)
    t_build, run_dict = timed(lambda: pytrec_dict(run), repeat)
    t_trec, theirs = timed(lambda: pytrec_values(run_dict, qrels), repeat)
    assert sorted(theirs) == sorted(ours.query_ids)
    diff = max(
        float(np.max(np.abs(ours.per_query[name] - np.array([theirs[q][name] for q in ours.query_ids]))))
        for name in METRICS
    )
    assert diff < 1e-9, diff
    assert all(np.array_equal(ours.per_query[name], ours_plain.per_query[name]) for name in METRICS)
    return {"Q": n_queries, "ours": t_ours, "plain": t_plain, "index": t_index, "build": t_build,
            "trec": t_trec, "diff": diff,
            "means": " ".join(f"{name}={ours.mean[name]:.4f}" for name in METRICS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, nargs="+", default=[10_000, 200_000])
    parser.add_argument("--pool", type=int, default=1_000_000, help="candidate pool size")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{DEPTH} hits per query, pool {args.pool:,}, metrics {', '.join(METRICS)}, median of {args.repeat}")
    print("ratio = (pytrec_eval + its dicts) / mmbench; pool index = CandidateIds.position, built once per pool")
    print(f"{'Q':>8} | {'mmbench':>8} | {'ratio':>6} | {'plain list':>10} | {'ratio':>6} | {'pool index':>10} | "
          f"{'pytrec_eval':>11} | {'+ dicts':>8} | max |diff|")
    for q in args.queries:
        r = bench(q, args.pool, args.repeat, rng)
        total = r["trec"] + r["build"]
        print(f"{r['Q']:>8,} | {r['ours']:>7.3f}s | {total / r['ours']:>5.1f}x | {r['plain']:>9.3f}s | "
              f"{total / r['plain']:>5.1f}x | {r['index']:>9.3f}s | {r['trec']:>10.3f}s | {r['build']:>7.3f}s | "
              f"{r['diff']:.1e}")
        print(f"{'':>8}   means: {r['means']}")


if __name__ == "__main__":
    main()
