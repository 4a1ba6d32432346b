"""The results files of a run, written atomically.

Layout under the output folder (default ``results/``)::

    <model>/<revision>/<suite>/<task>.json            every metric, headline, timings, provenance
    <model>/<revision>/<suite>/<task>.trec            top-k run: qid Q0 did rank score tag
    <model>/<revision>/<suite>/<task>.per_query.tsv   per-query value of every metric
    <model>/<revision>/<suite>/summary.json           headline per task and their plain mean
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from mmbench import native
from mmbench.embeddings.cache import slug
from mmbench.util.io import atomic_open, write_json

SCHEMA_VERSION = 1


def result_dir(output: Path, model: str, revision: str, suite_label: str) -> Path:
    return Path(output) / slug(model) / slug(revision) / slug(suite_label)


def trec_tag(*names: str) -> str:
    """The run tag of a TREC line: ``mmbench.<name>[.<name>...]``, each name slugged, so that a model
    path with spaces (``st:/models/my model``) cannot split the tag into more fields."""
    return ".".join(["mmbench", *(slug(n) for n in names)])


TREC_PART_HITS = 1 << 15      # hits formatted per part: small reused buffers (and Arrow reuses its memory)


def write_trec(path: Path, query_ids: list[str], candidate_ids, indices: np.ndarray,
               scores: np.ndarray, tag: str, *, part_hits: int = TREC_PART_HITS,
               threads: int | None = None, fsync: bool = True) -> int:
    """TREC run lines ``qid Q0 did rank score tag``, rank from 1, rows already in rank order; returns
    the file's size in bytes.

    Empty slots (index -1) are skipped; the rank is the column position + 1 either way. The score is
    written as the shortest decimal that reads back to the same float (float32 scores: at most 9
    significant digits; Arrow's cast), so a run read back ranks exactly as it was written. A range
    of queries at a time (``part_hits`` hits each): the scores' texts are cast on one thread per
    core, and each range's lines are put together by mmbench's C helper (:mod:`mmbench.native`) in
    one reused buffer and written in query order; where the helper is not built, Arrow's kernels
    join the lines (the same bytes). The bytes do not depend on the parts or threads. Measured at
    1k queries x 1000 hits (54 MB) on 2 cores, in a warm process: Arrow 0.12-0.14 s, the C helper
    0.08-0.10 s; in a run after ``mteb.evaluate``, the run file now ends 0.10-0.15 s after the
    search (0.2-0.4 s before: fresh memory per part). ``fsync=False`` leaves out the flush to the
    disk (0.12-0.14 s for those 54 MB on a virtual disk); the caller then records the returned size
    and checks it on reuse (:func:`run_file_problem`).
    """
    indices = np.asarray(indices)
    scores = np.asarray(scores)
    q, width = indices.shape if indices.ndim == 2 else (len(query_ids), 0)
    size = 0
    with atomic_open(path, "wb", fsync=fsync) as f:
        if q == 0 or width == 0:
            return size
        step = max(1, part_hits // width)
        parts = [slice(lo, min(lo + step, q)) for lo in range(0, q, step)]
        lib = native.library() if NATIVE_TREC else None
        lines = _native_trec_lines if lib is not None else _arrow_trec_lines
        for chunk in lines(parts, query_ids, candidate_ids, indices, scores, tag, threads):
            f.write(chunk)               # before the next chunk is made: the native one reuses its buffer
            size += chunk.nbytes
    return size


NATIVE_TREC = True      # lines put together by the C helper where it is built (tests compare both ways)


def utf8_table(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes of all strings, int64 offsets: string i is bytes[offsets[i]:offsets[i + 1]])."""
    import pyarrow as pa

    table = pa.array(strings, pa.large_string())
    _, offsets, data = table.buffers()
    return (np.frombuffer(data, np.uint8) if data is not None and data.size else np.zeros(1, np.uint8),
            np.frombuffer(offsets, np.int64)[table.offset:table.offset + len(table) + 1])


def _native_trec_lines(parts: list[slice], query_ids, candidate_ids, indices: np.ndarray, scores: np.ndarray,
                       tag: str, threads: int | None):
    """Each part's TREC lines, put together by the C helper (``mmb_trec_lines``) on one thread per
    core, ahead of the caller's writes; each chunk yielded is a view of a buffer that is reused once
    the caller asks for the next (at most threads + 1 buffers: no fresh memory per part).
    """
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa

    from mmbench.util.parallel import cores

    lib = native.library()
    qid_bytes, qid_offsets = utf8_table([str(x) for x in query_ids])
    # a pool's CandidateIds builds its table once (a suite's tasks share the pool: M-BEIR's global
    # pool has 5.6M ids)
    did_bytes, did_offsets = getattr(candidate_ids, "utf8", None) or utf8_table(list(candidate_ids))
    tag_bytes = tag.encode()

    def make(rows: slice, buffer: np.ndarray) -> tuple[np.ndarray, int]:
        part = np.ascontiguousarray(indices[rows], np.int64)
        kept = scores[rows].ravel() if (part >= 0).all() else scores[rows][part >= 0]
        texts = pa.array(np.ascontiguousarray(kept, np.float32)).cast(pa.string())
        _, text_offsets, text_bytes = texts.buffers()
        args = (part.shape[0], part.shape[1], part.ctypes.data, qid_bytes.ctypes.data,
                qid_offsets[rows.start:].ctypes.data, did_bytes.ctypes.data, did_offsets.ctypes.data,
                text_bytes.address if text_bytes is not None else None,
                np.frombuffer(text_offsets, np.int32)[texts.offset:].ctypes.data, tag_bytes, len(tag_bytes))
        size = lib.mmb_trec_lines(*args, None, 0)
        if buffer.size < size:
            buffer = np.empty(size, np.uint8)
        if size and lib.mmb_trec_lines(*args, buffer.ctypes.data, size) != size:
            raise RuntimeError("TREC writer: the C helper wrote another size than it measured")
        return buffer, size

    workers = min(len(parts), cores() if threads is None else max(1, threads))
    free = [np.empty(0, np.uint8) for _ in range(workers + 1)]
    todo = iter(parts)
    with ThreadPoolExecutor(workers, thread_name_prefix="mmbench-trec") as pool:
        pending = [pool.submit(make, rows, free.pop()) for rows in itertools.islice(todo, workers + 1)]
        while pending:
            buffer, size = pending.pop(0).result()
            if size:
                yield memoryview(buffer)[:size]
            free.append(buffer)                 # written by now: the next part may fill it
            rows = next(todo, None)
            if rows is not None:
                pending.append(pool.submit(make, rows, free.pop()))


def _arrow_trec_lines(parts: list[slice], query_ids, candidate_ids, indices: np.ndarray, scores: np.ndarray,
                      tag: str, threads: int | None):
    """Each part's TREC lines joined by Arrow's C++ kernels, a part per thread (no C helper needed)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mmbench.util.parallel import map_parts

    # "qid Q0" once per query, not once per hit: one piece fewer to join per line
    qid_strings = pc.binary_join_element_wise(pa.array([str(x) for x in query_ids], pa.string()), "Q0", " ")
    did_strings = pa.array(list(candidate_ids), pa.string())
    rank_strings = pa.array(np.arange(1, indices.shape[1] + 1, dtype=np.int64)).cast(pa.string())

    def lines(rows: slice) -> memoryview | None:
        return _trec_lines(rows, indices, scores, qid_strings, did_strings, rank_strings, tag)

    for chunk in map_parts(lines, parts, threads=threads):
        if chunk is not None:
            yield chunk


def run_file_problem(directory: Path, record: dict) -> str | None:
    """Why the run file named by a task record is not the one written with it (missing, or a size
    other than the recorded ``files.run_bytes``), or None when it is. A run file is not fsynced
    (:func:`write_trec`): after an OS crash it may be shorter than written; a user may have deleted it."""
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


def _trec_lines(rows: slice, indices: np.ndarray, scores: np.ndarray, qid_strings, did_strings,
                rank_strings, tag: str) -> memoryview | None:
    """The bytes of the TREC lines of query rows ``rows`` (None when they have no hit);
    ``qid_strings`` holds each query's ``"qid Q0"``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    part = indices[rows]
    keep = (part >= 0).ravel()
    hits = part.ravel()[keep]
    if hits.size == 0:
        return None
    q, width = part.shape
    query_rows = np.repeat(np.arange(rows.start, rows.start + q, dtype=np.int64), width)[keep]
    columns = np.tile(np.arange(width, dtype=np.int64), q)[keep]
    joined = pc.binary_join_element_wise(
        qid_strings.take(pa.array(query_rows)), did_strings.take(pa.array(hits)),
        rank_strings.take(pa.array(columns)), pa.array(scores[rows].ravel()[keep]).cast(pa.string()),
        tag + "\n", " ").cast(pa.large_string())
    # the string array's data buffer, from the first offset to the last, is the part's bytes
    offsets = np.frombuffer(joined.buffers()[1], np.int64)[joined.offset:joined.offset + len(joined) + 1]
    return memoryview(joined.buffers()[2])[offsets[0]:offsets[-1]]


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
