"""The results files of a run, written atomically.

Layout under the output folder (default ``results/``)::

    <model>/<revision>/<suite>/<task>.json            every metric, headline, timings, provenance
    <model>/<revision>/<suite>/<task>.trec            top-k run: qid Q0 did rank score tag
    <model>/<revision>/<suite>/<task>.per_query.tsv   per-query value of every metric
    <model>/<revision>/<suite>/summary.json           headline per task and their plain mean
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.encode import slug
from harness.io import atomic_open, write_json

SCHEMA_VERSION = 1


def result_dir(output: Path, model: str, revision: str, suite_label: str) -> Path:
    return Path(output) / slug(model) / slug(revision) / slug(suite_label)


def write_trec(path: Path, query_ids: list[str], candidate_ids, indices: np.ndarray,
               scores: np.ndarray, tag: str) -> None:
    """TREC run lines ``qid Q0 did rank score tag``, rank from 1, rows already in rank order."""
    with atomic_open(path) as f:
        for qid, row, srow in zip(query_ids, indices, scores):
            lines = [f"{qid} Q0 {candidate_ids[i]} {r} {s:.6f} {tag}\n"
                     for r, (i, s) in enumerate(zip(row.tolist(), srow.tolist()), 1) if i >= 0]
            f.writelines(lines)


def read_trec(path: Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            qid, _, did, _, score, _ = line.split()
            run.setdefault(qid, {})[did] = float(score)
    return run


def write_per_query(path: Path, query_ids: list[str], per_query: dict[str, np.ndarray]) -> None:
    names = list(per_query)
    with atomic_open(path) as f:
        f.write("query_id\t" + "\t".join(names) + "\n")
        cols = [per_query[n] for n in names]
        for i, qid in enumerate(query_ids):
            f.write(qid + "\t" + "\t".join(f"{c[i]:.6g}" for c in cols) + "\n")


def write_task_result(directory: Path, task: str, record: dict) -> Path:
    path = Path(directory) / f"{task}.json"
    write_json(path, {"schema_version": SCHEMA_VERSION, **record})
    return path


def load_task_result(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if data.get("schema_version") == SCHEMA_VERSION else None


def write_summary(directory: Path, summary: dict) -> Path:
    path = Path(directory) / "summary.json"
    write_json(path, {"schema_version": SCHEMA_VERSION, **summary})
    return path
