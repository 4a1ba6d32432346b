"""Small synthetic results trees for the hardening and fuzz tests (no model is run: milliseconds each).

Two runs of a three-task suite that the catalog does not know, written in the layout and record
format of a real run (task record, per-query TSV, summary.json), and a regress baseline of the first.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

SUITE = "synth-suite"
TASKS = ("alpha_task0", "beta_task1", "gamma_task2")
MODELS = ("model-a", "model-b")
N_QUERIES = 24


def write_run(results: Path, model: str, seed: int, tasks=TASKS) -> Path:
    folder = Path(results) / model / "rev1" / SUITE
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for t, task in enumerate(tasks):
        hit = rng.integers(0, 2, N_QUERIES)
        ndcg = np.round(hit * rng.uniform(0.3, 1.0, N_QUERIES), 4)
        lines = ["query_id\thit@5\tndcg@10"] + [f"q{t}:{i}\t{h}\t{n:.6g}" for i, (h, n) in enumerate(zip(hit, ndcg))]
        (folder / f"{task}.per_query.tsv").write_text("\n".join(lines) + "\n")
        record = {
            "schema_version": 1,
            "task": {"name": task, "source": SUITE, "dataset": task.split("_")[0]},
            "suite": SUITE, "pool": "local", "main_metric": "hit@5", "main_score": round(float(hit.mean()), 6),
            "metrics": {"hit@5": round(float(hit.mean()), 6), "ndcg@10": round(float(ndcg.mean()), 6)},
            "n_queries": N_QUERIES, "n_candidates": 50, "top_k": 100,
            "model": {"name": model, "revision": "rev1"},
            "notes": [],
            "files": {"per_query": f"{task}.per_query.tsv"},
            "provenance": {"harness_version": "0.1.0", "commit": "0" * 40, "dirty": False, "config_hash": "c0ffee",
                           "date": "2026-01-01T00:00:00+00:00",
                           "data_fingerprints": {"queries": f"q{t}", "pool": f"p{t}", "qrels": f"r{t}"}},
        }
        (folder / f"{task}.json").write_text(json.dumps(record, indent=2) + "\n")
    summary = {"schema_version": 1, "suite": SUITE, "pool": "local", "model": model, "revision": "rev1",
               "complete": len(tasks) == len(TASKS), "missing_tasks": [t for t in TASKS if t not in tasks]}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return folder


def make_tree(root: Path) -> dict:
    """{'results', 'a', 'b', 'baseline'}: two runs under ``root/results`` and a baseline of run a."""
    from mmbench.analysis import regress as rg
    from mmbench.analysis.compare import load_run

    results = Path(root) / "results"
    a = write_run(results, MODELS[0], 1)
    b = write_run(results, MODELS[1], 2)
    baseline = Path(root) / "baseline.json"
    rg.update(load_run(a), baseline)
    return {"results": results, "a": a, "b": b, "baseline": baseline}


def mmbench(*args) -> tuple[int, str, str]:
    """The real command in-process (:func:`mmbench.cli._invoke`, what the entry point calls):
    (exit status, stdout, stderr)."""
    from mmbench.cli import _invoke

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = _invoke([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()
