"""A run's JSON records, written atomically: the task record (``<task>.json``), the per-query
metrics (``<task>.per_query.tsv``) and the suite summary (``summary.json``); where they live is
:mod:`mmbench.results.layout`, the run files are :mod:`mmbench.results.trec`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmbench.results.layout import SUMMARY_FILE, record_file
from mmbench.util.io import atomic_open, write_json

SCHEMA_VERSION = 1


def run_file_problem(directory: Path, record: dict) -> str | None:
    """Why the run file named by a task record is not the one written with it (missing, or a size
    other than the recorded ``files.run_bytes``), or None when it is. A run file is not fsynced
    (:func:`mmbench.results.trec.write_trec`): after an OS crash it may be shorter than written; a user may have deleted it."""
    files = record.get("files") or {}
    if not files.get("run"):
        return None
    path = Path(directory) / files["run"]
    try:
        size = path.stat().st_size
    except OSError:
        return f"run file {path} is missing"
    expected = files.get("run_bytes")
    if expected is not None and size != expected:
        return f"run file {path} holds {size:,} bytes, {expected:,} were written"
    return None


def write_per_query(path: Path, query_ids: list[str], per_query: dict[str, np.ndarray]) -> None:
    names = list(per_query)
    line = "{}" + "\t{:.6g}" * len(names) + "\n"
    cols = [np.asarray(per_query[n]).tolist() for n in names]     # Python floats: same text, no scalar boxing
    rows = zip(*cols, strict=True) if cols else [()] * len(query_ids)
    with atomic_open(path) as f:
        f.write("query_id\t" + "\t".join(names) + "\n")
        f.write("".join(line.format(qid, *values) for qid, values in zip(query_ids, rows)))


def write_task_result(directory: Path, task: str, record: dict) -> Path:
    path = Path(directory) / record_file(task)
    write_json(path, {"schema_version": SCHEMA_VERSION, **record})
    return path


def load_task_result(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if data.get("schema_version") == SCHEMA_VERSION else None


def write_summary(directory: Path, summary: dict) -> Path:
    path = Path(directory) / SUMMARY_FILE
    write_json(path, {"schema_version": SCHEMA_VERSION, **summary})
    return path
