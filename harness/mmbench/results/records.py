"""A run's JSON records, written atomically: the task record (``<task>.json``), the per-query
metrics (``<task>.per_query.tsv``) and the suite summary (``summary.json``); where they live is
:mod:`mmbench.results.layout`, the run files are :mod:`mmbench.results.trec`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mmbench.errors import DataError
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
    """The task record at ``path`` when it is one this version reads, else None (the writer's reuse
    check: anything unreadable is simply recomputed). Analysis reads with :func:`read_task_result`."""
    try:
        data = read_json_object(path, what="task result")
    except DataError:
        return None
    return data if data.get("schema_version") == SCHEMA_VERSION else None


# ------------------------------------------------------------------------------ strict reading (analysis)
MAX_NAME_CHARS = 120
"""The longest name from a record that may become part of a file name (``<name>.html`` stays well
under the 255-byte limit of common file systems even in 2-byte UTF-8)."""


class UnsafeNameError(DataError):
    """A name taken from a record that cannot safely become a file name (a separator, ``..``, an
    absolute path, a control character, empty or too long). Always an error, never skipped."""


def json_type(value) -> str:
    """The JSON name of a parsed value's type (object, array, string, number, boolean, null)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {dict: "object", list: "array", str: "string"}.get(type(value), type(value).__name__)


def _no_duplicate_keys(pairs: list) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r} in one object (which one counts is undefined)")
        out[key] = value
    return out


def read_json_object(path: Path, *, what: str) -> dict:
    """The JSON object in ``path``, or one :class:`DataError` that names the file and says what is wrong:
    unreadable, not UTF-8, empty, truncated, invalid JSON (line and column), a key twice in one object,
    nested too deeply, or not an object. A UTF-8 byte order mark is accepted."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, f"{what} not found") from None
    except OSError as exc:
        raise DataError(path, f"cannot read the {what} ({exc.strerror or exc})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 (byte {exc.start} is {raw[exc.start:exc.start + 1]!r}); "
                              f"expected a JSON {what}") from None
    if not text.strip():
        raise DataError(path, f"empty file; expected a JSON {what} (an interrupted copy?)")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        rest = text[exc.pos:].rstrip()               # the text from the error on: only a cut-off last token?
        if (not rest or (exc.msg.startswith("Unterminated string") and "\n" not in rest)
                or not any(c in rest for c in ',:{}[]"\n')):
            raise DataError(path, f"truncated: the JSON ends at line {exc.lineno} before the {what} is complete "
                                  f"(an interrupted copy?)") from None
        raise DataError(path, f"invalid JSON ({exc.msg}, column {exc.colno}); expected a JSON {what}",
                        line=exc.lineno) from None
    except RecursionError:
        raise DataError(path, f"JSON nested too deeply to be a {what}") from None
    except ValueError as exc:                     # a duplicate key, or an integer too long to convert
        raise DataError(path, f"{exc}; expected a JSON {what}") from None
    if not isinstance(data, dict):
        raise DataError(path, f"expected a JSON object (a {what}), found {json_type(data)}")
    return data


def check_name(path: Path, field: str, value) -> str:
    """``value`` when it can safely become (part of) a file name, else :class:`UnsafeNameError` naming
    the record and field: a non-empty string of at most :data:`MAX_NAME_CHARS` characters with no
    ``/`` or ``\\``, no ``..``, no control character, and not absolute."""
    if not isinstance(value, str):
        raise UnsafeNameError(path, f"expected a name (a string), found {json_type(value)}", field=field)
    problem = None
    if not value.strip():
        problem = "is empty"
    elif len(value) > MAX_NAME_CHARS:
        problem = f"is {len(value)} characters long (at most {MAX_NAME_CHARS})"
    elif "/" in value or "\\" in value:
        problem = "contains a path separator"
    elif ".." in value:
        problem = "contains '..'"
    elif any(ord(c) < 32 or ord(c) == 127 for c in value):
        problem = "contains a control character"
    elif Path(value).is_absolute() or (len(value) > 1 and value[1] == ":"):
        problem = "is an absolute path"
    if problem:
        raise UnsafeNameError(path, f"{value!r} {problem}; a name that becomes a file name must be a plain name",
                              field=field)
    return value


def _at(obj: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return _ABSENT
        obj = obj[part]
    return obj


_ABSENT = object()


def check_field(path: Path, record: dict, dotted: str, kind: str, *, required: bool = True):
    """The value at ``dotted`` (``"provenance.config_hash"``) in ``record`` checked against ``kind``, or a
    :class:`DataError` naming the file, the field and what was expected. Kinds: ``object``, ``string``,
    ``boolean``, ``count`` (an integer >= 0), ``score`` (a finite number in [0, 1]), ``name``
    (:func:`check_name`). An absent optional field gives None; ``null`` counts as absent when optional."""
    value = _at(record, dotted)
    if value is _ABSENT or (value is None and not required):
        if required:
            raise DataError(path, f"missing; expected {_EXPECTED[kind]}", field=dotted)
        return None
    if kind == "name":
        return check_name(path, dotted, value)
    ok = {"object": lambda v: isinstance(v, dict),
          "string": lambda v: isinstance(v, str),
          "boolean": lambda v: isinstance(v, bool),
          "count": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
          "score": lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                              and 0 <= v <= 1)}[kind](value)
    if not ok:
        shown = repr(value) if isinstance(value, (int, float, str)) and len(repr(value)) <= 40 else json_type(value)
        raise DataError(path, f"expected {_EXPECTED[kind]}, found {shown}", field=dotted)
    return value


_EXPECTED = {"object": "an object", "string": "a string", "boolean": "true or false",
             "count": "an integer >= 0", "score": "a number in [0, 1]", "name": "a plain name"}


_TASK_FIELDS = (                        # (field, kind, required): what analysis reads from a task record
    ("task", "object", True), ("task.name", "name", True), ("main_metric", "string", True),
    ("main_score", "score", True), ("metrics", "object", False), ("metrics.ndcg@10", "score", False),
    ("suite", "name", False), ("pool", "string", False), ("n_queries", "count", False),
    ("n_candidates", "count", False), ("provenance", "object", False), ("provenance.config_hash", "string", False),
    ("provenance.date", "string", False), ("provenance.commit", "string", False),
    ("provenance.harness_version", "string", False), ("provenance.dirty", "boolean", False),
    ("provenance.data_fingerprints", "object", False), ("model", "object", False), ("model.name", "string", False),
    ("model.revision", "string", False), ("first_stage", "object", False), ("first_stage.name", "string", False),
    ("first_stage.model", "string", False), ("first_stage.revision", "string", False), ("rerank", "object", False),
    ("rerank.reranker", "object", False), ("rerank.reranker.name", "string", False), ("files", "object", False),
)


def is_task_result_like(data: dict) -> bool:
    """Whether a JSON object found in a run folder claims to be a task record (has any of
    ``schema_version``, ``task``, ``main_score``); other JSON files there are not results."""
    return any(k in data for k in ("schema_version", "task", "main_score"))


def check_task_record(path: Path, record: dict) -> dict:
    """``record`` when every field analysis reads has the expected type, else one :class:`DataError`
    naming the file and field (:class:`UnsafeNameError` for a name that cannot be a file name)."""
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DataError(path, f"schema_version {version!r}; this mmbench reads task results of schema_version "
                              f"{SCHEMA_VERSION}", field="schema_version")
    for dotted, kind, required in _TASK_FIELDS:
        check_field(path, record, dotted, kind, required=required)
    return record


def read_task_result(path: Path) -> dict:
    """The task record at ``path`` for analysis, checked (:func:`read_json_object`, :func:`check_task_record`):
    a broken record is one named :class:`DataError`, never read as absent."""
    return check_task_record(path, read_json_object(path, what="task result"))


def read_summary(path: Path) -> dict:
    """A run folder's ``summary.json`` ({} when there is none), its names checked: a broken summary is
    one named :class:`DataError`."""
    if not Path(path).exists():
        return {}
    data = read_json_object(path, what="run summary")
    for dotted, kind in (("model", "string"), ("revision", "string"), ("suite", "name"), ("experiment", "string"),
                         ("missing_tasks", None)):
        if kind:
            check_field(path, data, dotted, kind, required=False)
    missing = data.get("missing_tasks")
    if missing is not None and not (isinstance(missing, list) and all(isinstance(t, str) for t in missing)):
        raise DataError(path, f"expected a list of task names, found {json_type(missing)}", field="missing_tasks")
    return data


def write_summary(directory: Path, summary: dict) -> Path:
    path = Path(directory) / SUMMARY_FILE
    write_json(path, {"schema_version": SCHEMA_VERSION, **summary})
    return path
