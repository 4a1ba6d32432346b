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

    Empty slots (index -1) are skipped; the rank is the column position + 1 either way. The score is
    written as the shortest decimal that reads back to the same float (float32 scores: at most 9
    significant digits), so a run read back ranks exactly as it was written. The lines are built
    and written by Arrow's C++ kernels (no Python loop over the Q x k hits): 2-3x faster than
    formatting each line in Python, measured at 1k queries x 1000 hits.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    indices = np.asarray(indices)
    q, width = indices.shape if indices.ndim == 2 else (len(query_ids), 0)
    keep = (indices >= 0).ravel()
    hits = indices.ravel()[keep]
    with atomic_open(path, "wb") as f:
        if hits.size == 0:
            return
        rows = np.repeat(np.arange(q, dtype=np.int64), width)[keep]
        ranks = np.tile(np.arange(1, width + 1, dtype=np.int64), q)[keep]
        lines = pc.binary_join_element_wise(
            pa.array([str(x) for x in query_ids], pa.string()).take(pa.array(rows)), "Q0",
            pa.array(list(candidate_ids), pa.string()).take(pa.array(hits)),
            pa.array(ranks).cast(pa.string()), pa.array(np.asarray(scores).ravel()[keep]).cast(pa.string()),
            tag + "\n", " ").cast(pa.large_string())
        # the string array's data buffer, from the first offset to the last, is the file's bytes
        offsets = np.frombuffer(lines.buffers()[1], np.int64)[lines.offset:lines.offset + len(lines) + 1]
        f.write(memoryview(lines.buffers()[2])[offsets[0]:offsets[-1]])


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
