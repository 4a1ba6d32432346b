"""TREC run files: ``qid Q0 did rank score tag``, one line per hit, rank from 1, each query's hits
in rank order. One writer (:func:`write_trec`) and one reader (:func:`read_run`) for every stage.

**Compression.** A path ending in ``.gz`` (mmbench's default, ``<task>.trec.gz``) holds those lines
as one gzip stream: deflate level 6, no file name, modification time 0, so the same lines give the
same bytes on every run (a file digest identifies a run). ``zcat run.trec.gz | trec_eval qrels
/dev/stdin`` or any gzip-aware reader (Python's ``gzip``, pandas, ir_measures) reads it; a plain
``.trec`` is written with ``--run-format trec``. :func:`read_run` reads either, by the file's first
bytes, not its name.

**The rule a run file obeys.** trec_eval does not read the rank column: it sorts each query's hits by
score descending, then by document id descending (plain string order). A file mmbench writes gives,
re-sorted by that rule, exactly the order of its rank column: :func:`rule_safe_scores` turns scores
into ones that do (the first stage's search already orders by the rule; a second stage that composes
scores needs it).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import itertools
import threading
import weakref
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mmbench import native
from mmbench.errors import MmbenchError
from mmbench.util.io import atomic_open

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
    join the lines (the same bytes). The bytes do not depend on the parts or threads; small parts
    in reused buffers keep the writes in warm memory (timings: docs/perf.md, "Results and run
    files"). ``fsync=False`` leaves out the flush to the disk; the caller then records the returned
    size and checks it on reuse (:func:`run_file_problem`). A ``path`` ending in ``.gz`` is written
    as one gzip stream of those lines (module docstring); the size returned is then the file's
    (compressed) size.
    """
    indices = np.asarray(indices)
    scores = np.asarray(scores)
    q, width = indices.shape if indices.ndim == 2 else (len(query_ids), 0)
    with atomic_open(path, "wb", fsync=fsync) as f:
        out = _GzipLines(f) if str(path).endswith(".gz") else _PlainLines(f)
        if q > 0 and width > 0:
            step = max(1, part_hits // width)
            parts = [slice(lo, min(lo + step, q)) for lo in range(0, q, step)]
            lib = native.library() if NATIVE_TREC else None
            lines = _native_trec_lines if lib is not None else _arrow_trec_lines
            for chunk in lines(parts, query_ids, candidate_ids, indices, scores, tag, threads):
                out.write(chunk)         # before the next chunk is made: the native one reuses its buffer
        return out.close()


GZIP_LEVEL = 6


class _PlainLines:
    """The lines as they are; ``close`` returns the bytes written."""

    def __init__(self, f):
        self.f, self.size = f, 0

    def write(self, chunk) -> None:
        self.f.write(chunk)
        self.size += memoryview(chunk).nbytes

    def close(self) -> int:
        return self.size


class _GzipLines(_PlainLines):
    """The lines as one gzip stream (zlib's gzip wrapper: a header without name or time, the same
    bytes for the same lines); ``close`` writes the trailer and returns the bytes written."""

    def __init__(self, f):
        super().__init__(f)
        self.z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def write(self, chunk) -> None:
        data = self.z.compress(chunk)
        if data:
            super().write(data)

    def close(self) -> int:
        super().write(self.z.flush())
        return self.size


NATIVE_TREC = True      # lines put together by the C helper where it is built (tests compare both ways)


def utf8_table(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes of all strings, int64 offsets: string i is bytes[offsets[i]:offsets[i + 1]])."""
    import pyarrow as pa

    table = pa.array(strings, pa.large_string())
    _, offsets, data = table.buffers()
    return (np.frombuffer(data, np.uint8) if data is not None and data.size else np.zeros(1, np.uint8),
            np.frombuffer(offsets, np.int64)[table.offset:table.offset + len(table) + 1])


_UTF8_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_UTF8_LOCK = threading.Lock()


def ids_utf8(candidate_ids) -> tuple[np.ndarray, np.ndarray]:
    """:func:`utf8_table` of a pool's candidate ids, built once per ids object that can be weakly
    referenced (a :class:`~mmbench.metrics.scoring.CandidateIds`: the tasks of a suite share their
    pool, and M-BEIR's global pool has 5.6M ids) and kept while that object lives; a plain list is
    converted each time. The ids object must not change once its table is built."""
    try:
        with _UTF8_LOCK:
            return _UTF8_TABLES[candidate_ids]
    except (KeyError, TypeError):          # not built yet, or not weakly referenceable / hashable
        pass
    table = utf8_table([str(c) for c in candidate_ids])
    try:
        with _UTF8_LOCK:
            _UTF8_TABLES[candidate_ids] = table
    except TypeError:
        pass
    return table


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
    did_bytes, did_offsets = ids_utf8(candidate_ids)
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
        rank_strings.take(pa.array(columns)),
        pa.array(np.ascontiguousarray(scores[rows].ravel()[keep], np.float32)).cast(pa.string()),
        tag + "\n", " ").cast(pa.large_string())
    # the string array's data buffer, from the first offset to the last, is the part's bytes
    offsets = np.frombuffer(joined.buffers()[1], np.int64)[joined.offset:joined.offset + len(joined) + 1]
    return memoryview(joined.buffers()[2])[offsets[0]:offsets[-1]]


def read_run(path: Path) -> tuple[list[str], list[list[str]], list[list[float]]]:
    """A run file as written: query ids in the order they first occur and, per query, its candidate
    ids and scores in the file's line order (the rank order of a file :func:`write_trec` wrote).
    A line that is not ``qid Q0 did rank score tag`` raises :class:`~mmbench.errors.MmbenchError`
    naming the file and line."""
    qids: list[str] = []
    rows: dict[str, tuple[list[str], list[float]]] = {}
    with open_run(path) as f:
        for lineno, line in _lines(f, path):
            parts = line.split()
            if len(parts) != 6:
                raise MmbenchError(f"{path}:{lineno}: expected 'qid Q0 did rank score tag', got {line.strip()!r}")
            qid, _, did, _, score, _ = parts
            try:
                value = float(score)
            except ValueError:
                raise MmbenchError(f"{path}:{lineno}: score {score!r} is not a number") from None
            if qid not in rows:
                qids.append(qid)
                rows[qid] = ([], [])
            rows[qid][0].append(did)
            rows[qid][1].append(value)
    return qids, [rows[q][0] for q in qids], [rows[q][1] for q in qids]


@contextlib.contextmanager
def open_run(path: Path) -> Iterator[io.TextIOBase]:
    """A run file's text as UTF-8, decompressed when it is gzip (told by its first two bytes,
    whatever its name)."""
    with open(path, "rb") as raw:
        gz = raw.peek(2)[:2] == b"\x1f\x8b"
        with gzip.GzipFile(fileobj=raw, mode="rb") if gz else contextlib.nullcontext(raw) as stream:
            yield io.TextIOWrapper(stream, encoding="utf-8")


def read_run_text(path: Path) -> str:
    """The whole text of a run file, plain or gzip (:func:`open_run`)."""
    with open_run(path) as f:
        return "".join(line for _, line in _lines(f, path))


def _lines(f, path: Path):
    """``(line number, line)`` of an open run file; a damaged gzip stream or bytes that are not UTF-8
    raise :class:`~mmbench.errors.MmbenchError` naming the file and the line reached."""
    lineno = 0
    try:
        for lineno, line in enumerate(f, 1):
            yield lineno, line
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise MmbenchError(f"{path}:{lineno + 1}: cannot read the run file ({type(exc).__name__}: {exc}); "
                           "it may be truncated or damaged: run again with --overwrite") from None


def read_trec(path: Path) -> dict[str, dict[str, float]]:
    """``{query_id: {candidate_id: score}}`` of a run file (:func:`read_run`)."""
    qids, cids, scores = read_run(path)
    return {q: dict(zip(c, s)) for q, c, s in zip(qids, cids, scores)}


def rule_safe_scores(scores: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """float32 scores that trec_eval's rule orders exactly as the rows are ordered.

    ``scores`` (Q, n) holds each row's intended scores in its intended rank order, non-increasing
    along the row, with -inf in empty slots (at the row's end); ``tiebreak`` (same shape) the
    candidates' id ranks (higher id wins a tie). A run file holds float32 scores (:func:`write_trec`),
    and two scores that differ in float64 can be one float32, which trec_eval would order by id.
    Returns ``s`` with, for every filled column ``c >= 1`` of a row:
    ``s[c] < s[c-1]``, or ``s[c] == s[c-1]`` and ``tiebreak[c] < tiebreak[c-1]``. So the file,
    re-sorted by score descending then id descending, gives its rank column's order at every rank.

    Construction, column by column: ``s[0] = f32(scores[0])``; then ``s[c] = min(f32(scores[c]),
    s[c-1])``, moved one float32 step down when it equals ``s[c-1]`` and the ids are in the wrong
    order. Rounding to float32 is monotone, so a score is only changed where float32 could not tell it
    from its predecessor or where an earlier one was moved; each move is one step below the
    predecessor, the least change that keeps the rule.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape != np.shape(tiebreak):
        raise ValueError(f"scores {scores.shape} and tiebreak {np.shape(tiebreak)} must be equal 2-d shapes")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    out = scores.astype(np.float32)
    tiebreak = np.asarray(tiebreak)
    for c in range(1, out.shape[1]):
        prev, cur = out[:, c - 1], out[:, c]
        filled = cur != -np.inf
        cur = np.minimum(cur, prev)
        clash = filled & (cur == prev) & (tiebreak[:, c] > tiebreak[:, c - 1])
        cur = np.where(clash, np.nextafter(prev, np.float32(-np.inf)), cur)
        out[:, c] = np.where(filled, cur, -np.inf)
    return out
