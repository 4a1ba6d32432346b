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
    """TREC run lines ``qid Q0 did rank score tag``, rank from 1, rows already in rank order.

    Empty slots (index -1) are skipped; the rank is the column position + 1 either way. Each row is
    formatted with one ``%`` over a repeated line template (about 2x faster than a formatted string
    per line; the bytes are the same: ``%.6f`` of the Python float, as ``{:.6f}``).
    """
    width = indices.shape[1] if indices.ndim == 2 else 0
    ranks = [str(r) for r in range(1, width + 1)]
    tail = " " + tag.replace("%", "%%") + "\n"
    get = candidate_ids.__getitem__
    with atomic_open(path) as f:
        for qid, row, srow in zip(query_ids, indices.tolist(), scores.tolist()):
            rk = ranks
            if row and min(row) < 0:
                keep = [c for c, i in enumerate(row) if i >= 0]
                row, srow, rk = [row[c] for c in keep], [srow[c] for c in keep], [ranks[c] for c in keep]
            if not row:
                continue
            values: list = [None] * (3 * len(row))
            values[0::3] = map(get, row)
            values[1::3] = rk[: len(row)]
            values[2::3] = srow
            f.write((str(qid).replace("%", "%%") + " Q0 %s %s %.6f" + tail) * len(row) % tuple(values))


def read_trec(path: Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            qid, _, did, _, score, _ = line.split()
            run.setdefault(qid, {})[did] = float(score)
    return run


def write_per_query(path: Path, query_ids: list[str], per_query: dict[str, np.ndarray]) -> None:
    names = list(per_query)
    line = "{}" + "\t{:.6g}" * len(names) + "\n"
    cols = [np.asarray(per_query[n]).tolist() for n in names]     # Python floats: same text, no scalar boxing
    rows = zip(*cols, strict=True) if cols else [()] * len(query_ids)
    with atomic_open(path) as f:
        f.write("query_id\t" + "\t".join(names) + "\n")
        f.write("".join(line.format(qid, *values) for qid, values in zip(query_ids, rows)))


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
