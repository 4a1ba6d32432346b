"""Task family ``"mteb"``: MTEB text retrieval tasks (and mmbench's offline text tasks in mteb's format).

A spec's ``loader_args`` names the task:

* ``task = "SciFact"``: a task of the installed ``mteb`` package. Its dataset path and revision, eval
  split, ``ignore_identical_ids`` and prompt are read from ``mteb.get_task`` at load time, so they
  cannot drift from mteb. Data comes from ``root`` (``--data-root``): ``root/<Task>``,
  ``root/<hf-name>`` (``scifact``), ``root/<org>__<hf-name>`` or ``root`` itself, each either an HF
  dataset folder (``README.md`` ``configs:`` for ``corpus``, ``queries``, ``default``/``qrels``; a
  ``git clone`` of the hub repo, or what ``mmbench data download`` writes) or a BEIR folder
  (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``). ``root=None`` means the HF hub through
  mteb's own loader; when the hub cannot be reached, one error names the task, what is missing and the
  download command.
* ``builtin = "WordNetGlossRetrieval-5k"``: an offline task of :mod:`mmbench.data.builders.text_tasks`; the
  family builds it and passes its folder as ``root`` (:meth:`MtebFamily.data_root`). ``ignore_identical_ids`` may be set in
  ``loader_args``.

Texts are standardised exactly as mteb's dataloaders do: a document is ``(title + " " + text).strip()``
when it has a non-empty title, else ``text.strip()``; a query is its text. Queries without a positive
qrels entry are dropped (mteb drops them too) and qrels of queries that are not in the query file are
dropped (pytrec_eval would ignore them), and qrels of documents that are not in the corpus are kept
(mteb keeps them: relevant, never retrieved), each counted in ``notes``. Files are read by mmbench's
own record readers (:func:`read_corpus`, :func:`read_queries`, :func:`read_qrels`): every malformed
file, record or field is a :class:`~mmbench.errors.DataError` naming it (docs/hardening.md).

After search, a task with mteb's ``ignore_identical_ids`` drops each retrieved document whose id is the
query's (:func:`drop_identical_ids`); after scoring, the task's scores are also written in mteb's own
results format (:func:`mmbench.results.mteb_format.write_mteb_result`). A model with its own table of
query instructions (``ModelMeta.task_instructions``) gets it for the tasks mteb gives no prompt
(:meth:`MtebFamily.with_model_instructions`).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mmbench.data.families.base import BaseFamily
from mmbench.data.lines import MAX_LINE_BYTES, iter_json_objects, iter_lines, parse_json
from mmbench.data.types import ItemTable, Qrels, TaskData
from mmbench.errors import DataError, MmbenchError
from mmbench.metrics.families import to_mteb_key

MTEB_K_VALUES = (1, 3, 5, 10, 20, 100, 1000)
MTEB_TOP_K = 1000


class MissingDataError(MmbenchError):
    """No local copy of an mteb task and no hub."""


def task_info(spec) -> dict:
    """``{"name", "path", "revision", "split", "ignore_identical_ids", "prompt", "main_score"}`` of a spec."""
    args = spec.loader_args
    if "builtin" in args:
        return {"name": spec.name, "path": f"mmbench/{args['builtin']}", "revision": "local",
                "split": args.get("split", "test"), "ignore_identical_ids": bool(args.get("ignore_identical_ids", False)),
                "prompt": args.get("prompt"), "main_score": to_mteb_key(spec.main_metric), "builtin": args["builtin"],
                "languages": list(args.get("languages", ["eng-Latn"]))}
    if "task" not in args:
        raise DataError(spec.path, "loader 'mteb' needs loader_args.task (an mteb task name) or loader_args.builtin",
                        field="loader_args")
    task = mteb_task(args["task"])
    md = task.metadata
    return {"name": md.name, "path": md.dataset["path"], "revision": md.dataset["revision"],
            "split": args.get("split", md.eval_splits[0]), "ignore_identical_ids": bool(getattr(task, "ignore_identical_ids", False)),
            "prompt": md.prompt, "main_score": md.main_score,
            "languages": list(md.eval_langs) if isinstance(md.eval_langs, list) else sorted({l for v in md.eval_langs.values() for l in v})}


def mteb_task(name: str):
    import mteb

    return mteb.get_task(name)


def query_prompt(prompt) -> str | None:
    if isinstance(prompt, dict):
        return prompt.get("query")
    return prompt or None


# ------------------------------------------------------------------------------------------------
# Finding and reading local copies


def candidate_folders(root: Path, info: dict) -> list[Path]:
    hf = info["path"]
    names = [info["name"], hf.split("/")[-1], hf.replace("/", "__")]
    return [Path(root) / n for n in dict.fromkeys(names)] + [Path(root)]


def detect_layout(folder: Path) -> str | None:
    if (folder / "corpus.jsonl").is_file() and (folder / "queries.jsonl").is_file():
        return "beir"
    readme = folder / "README.md"
    if readme.is_file() and "configs:" in readme.read_text(encoding="utf-8", errors="replace"):
        return "hf"
    return None


_MISSING = object()


def _records(path: Path) -> Iterator[tuple[dict, dict]]:
    """``(location, record)`` for each record of a data file: ``location`` is ``{"line": n}`` (JSONL,
    TSV, CSV) or ``{"row": n}`` (parquet, JSON), the keyword arguments of a :class:`DataError` about it.

    JSONL/TSV/CSV are read line by line (:mod:`mmbench.data.lines`: strict UTF-8, BOM and CRLF
    accepted, lines capped at ``MAX_LINE_BYTES``); TSV/CSV take their first line as the header, with
    no quoting (as mteb's BEIR files are read), and every row must have the header's column count;
    parquet is read batch by batch. Every failure is a :class:`DataError` naming the file.
    """
    name = path.name
    if name.endswith(".parquet"):
        yield from _parquet_records(path)
    elif name.endswith((".jsonl", ".jsonl.gz")):
        for lineno, obj in iter_json_objects(path):
            yield {"line": lineno}, obj
    elif name.endswith(".json"):
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise DataError(path, f"cannot read the file ({exc.strerror or exc})") from None
        try:
            text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(path, f"invalid UTF-8 at byte {exc.start} (expected UTF-8 text)") from None
        data = parse_json(path, None, text)
        if not isinstance(data, list):
            raise DataError(path, f"expected a JSON list of records, got {type(data).__name__}")
        for i, rec in enumerate(data, 1):
            if not isinstance(rec, dict):
                raise DataError(path, f"expected a JSON object, got {type(rec).__name__}", row=i)
            yield {"row": i}, rec
    elif name.endswith((".tsv", ".csv")):
        sep, what = ("\t", "tab") if name.endswith(".tsv") else (",", "comma")
        header = None
        for lineno, line in iter_lines(path, skip_blank=True):
            cols = line.split(sep)
            if header is None:
                header = cols
                if len(set(header)) != len(header) or not all(h.strip() for h in header):
                    raise DataError(path, f"header must name each column once, got {header!r}", line=lineno)
                continue
            if len(cols) != len(header):
                raise DataError(path, f"expected {len(header)} {what}-separated columns ({', '.join(header)}), "
                                      f"got {len(cols)}", line=lineno)
            yield {"line": lineno}, dict(zip(header, cols))
        if header is None:
            raise DataError(path, "file is empty (expected a header line)")
    else:
        raise DataError(path, "unsupported data file type (expected parquet, jsonl or tsv)")


def _parquet_records(path: Path) -> Iterator[tuple[dict, dict]]:
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
        batches = reader.iter_batches(batch_size=8192)
    except Exception as exc:                 # pyarrow raises ArrowInvalid, OSError, ... for a bad file
        raise DataError(path, f"cannot read parquet ({type(exc).__name__}: {str(exc)[:120]})") from None
    row = 0
    while True:
        try:
            batch = next(batches, None)
            records = None if batch is None else batch.to_pylist()
        except Exception as exc:
            raise DataError(path, f"cannot read parquet ({type(exc).__name__}: {str(exc)[:120]})", row=row + 1) from None
        if records is None:
            return
        for rec in records:
            row += 1
            yield {"row": row}, rec


def _id_value(path, loc: dict, rec: dict, keys: tuple[str, ...]) -> str:
    """The first of ``keys`` in ``rec``: a non-empty string, or an integer (read as its decimal text)."""
    key = next((k for k in keys if k in rec), None)
    if key is None:
        raise DataError(path, "missing field" + (f" (or {', '.join(keys[1:])})" if len(keys) > 1 else ""),
                        field=keys[0], **loc)
    value = rec[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(path, f"expected a string id, got {type(value).__name__}", field=key, **loc)
    value = str(value)
    if not value:
        raise DataError(path, "expected a non-empty id", field=key, **loc)
    return value


def _text_value(path, loc: dict, rec: dict, key: str, *, required: bool) -> str:
    """A text field: a string, or null (read as ""); absent only when not ``required``."""
    value = rec.get(key, _MISSING)
    if value is _MISSING:
        if required:
            raise DataError(path, "missing field", field=key, **loc)
        return ""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(path, f"expected a string or null, got {type(value).__name__}", field=key, **loc)
    if len(value) > MAX_LINE_BYTES:
        raise DataError(path, f"text longer than {MAX_LINE_BYTES} characters (mmbench.data.lines.MAX_LINE_BYTES)",
                        field=key, **loc)
    return value


def _score_value(path, loc: dict, rec: dict, tabular: bool) -> int:
    """A qrels score: an integer (an integral float from parquet, the digits of a TSV cell); a TSV
    without a score column gives 1 (mteb's reading of such files)."""
    value = rec.get("score", _MISSING)
    if value is _MISSING:
        if tabular:
            return 1
        raise DataError(path, "missing field", field="score", **loc)
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        return value
    elif isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    elif isinstance(value, str) and _INT.fullmatch(value.strip()):
        return int(value)
    raise DataError(path, f"expected an integer score, got {value!r}"[:200], field="score", **loc)


_INT = re.compile(r"[+-]?[0-9]+")


def _unique_records(paths: list[Path], kind: str):
    """(path, location, record, id) of every record of ``paths``, in order; ``_id`` or ``id`` required and
    unique across the files (a repeated id is a DataError naming both places), at least one record."""
    first: dict[str, tuple[Path, dict]] = {}
    for path in paths:
        for loc, rec in _records(path):
            rid = _id_value(path, loc, rec, ("_id", "id"))
            if rid in first:
                p, l = first[rid]
                raise DataError(path, f"duplicate {kind} id {rid!r} (first at {p.name} {_where(l)})", field="_id", **loc)
            first[rid] = (path, loc)
            yield path, loc, rec, rid
    if not first:
        raise DataError(paths[0] if len(paths) == 1 else paths,
                        "the corpus is empty" if kind == "corpus" else "the query file is empty")


def _parquet_columns(paths: list[Path], texts: dict[str, bool]) -> tuple[list[str], dict[str, list[str]]] | None:
    """(ids, {field: values}) of parquet files read a column at a time, where every file's columns
    are plainly valid: ``_id`` (or ``id``) strings, none empty, or integers, with no nulls; each
    field of ``texts`` (name -> required) strings or nulls (read as ""; a column of nulls alone may
    have any type), none longer than ``MAX_LINE_BYTES`` characters, present where required; ids
    unique across the files, at least one record. Then the values are exactly the record readers'
    (:func:`read_corpus` reads them record by record otherwise). None where any of that does not
    hold, or a file is not parquet or does not read: the record readers then find and name the
    offending file, row and field.

    Only the id and text columns are read, in batches of ``_PARQUET_BATCH`` rows (memory: the
    values, not the whole table twice). Cost only: a corpus of millions of passages is read in
    seconds, where a check per record in Python takes a minute."""
    if not all(p.name.endswith(".parquet") for p in paths):
        return None
    import pyarrow.parquet as pq

    ids: list[str] = []
    values: dict[str, list[str]] = {name: [] for name in texts}
    for path in paths:
        try:
            reader = pq.ParquetFile(path)
            names = reader.schema_arrow.names
            key = next((k for k in ("_id", "id") if k in names), None)
            if reader.metadata.num_rows == 0:
                continue
            if key is None or any(required and name not in names for name, required in texts.items()):
                return None
            present = [name for name in texts if name in names]
            for batch in reader.iter_batches(batch_size=_PARQUET_BATCH, columns=[key, *present]):
                got = _checked_ids(batch.column(key))
                if got is None:
                    return None
                ids.extend(got)
                for name in texts:
                    got = _checked_texts(batch.column(name)) if name in present else [""] * batch.num_rows
                    if got is None:
                        return None
                    values[name].extend(got)
        except Exception:                  # a file that does not read: the record reader names it
            return None
    if not ids or len(set(ids)) != len(ids):
        return None
    return ids, values


_PARQUET_BATCH = 1 << 16


def _checked_ids(col) -> list[str] | None:
    """A batch's id column as the record reader reads it, or None where a value is not plainly valid."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if col.null_count:
        return None
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return None if len(col) and pc.min(pc.utf8_length(col)).as_py() == 0 else col.to_pylist()
    if pa.types.is_integer(col.type):
        return [str(v) for v in col.to_pylist()]
    return None


def _checked_texts(col) -> list[str] | None:
    """A batch's text column as the record reader reads it (null as ""), or None where a value is not
    plainly valid."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_null(col.type) or col.null_count == len(col):     # nulls of any type
        return [""] * len(col)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return None
    longest = pc.max(pc.utf8_length(col)).as_py()
    if longest is not None and longest > MAX_LINE_BYTES:
        return None
    return ["" if v is None else v for v in col.to_pylist()]


def read_corpus(paths: list[Path]) -> tuple[list[str], list[str], list[str]]:
    """(ids, titles, texts) of a corpus; ``_id`` or ``id``, ``text`` required, ``title`` optional."""
    fast = _parquet_columns(paths, {"title": False, "text": True})
    if fast is not None:
        return fast[0], fast[1]["title"], fast[1]["text"]
    return _read_corpus_records(paths)


def _read_corpus_records(paths: list[Path]) -> tuple[list[str], list[str], list[str]]:
    """:func:`read_corpus` record by record, each failure a DataError naming its place."""
    ids, titles, texts = [], [], []
    for path, loc, rec, did in _unique_records(paths, "corpus"):
        ids.append(did)
        titles.append(_text_value(path, loc, rec, "title", required=False))
        texts.append(_text_value(path, loc, rec, "text", required=True))
    return ids, titles, texts


def read_queries(paths: list[Path]) -> tuple[list[str], list[str]]:
    """(ids, texts) of the queries; ``_id`` or ``id`` and ``text`` required, ids unique."""
    fast = _parquet_columns(paths, {"text": True})
    if fast is not None:
        return fast[0], fast[1]["text"]
    return _read_queries_records(paths)


def _read_queries_records(paths: list[Path]) -> tuple[list[str], list[str]]:
    """:func:`read_queries` record by record, each failure a DataError naming its place."""
    ids, texts = [], []
    for path, loc, rec, qid in _unique_records(paths, "query"):
        ids.append(qid)
        texts.append(_text_value(path, loc, rec, "text", required=True))
    return ids, texts


def read_qrels(paths: list[Path]) -> list[tuple[str, str, int, Path, dict]]:
    """``(query id, corpus id, score, file, location)`` of each qrels record; ``query-id`` and
    ``corpus-id`` required. A pair repeated with another score is an error."""
    rows = []
    seen: dict[tuple[str, str], tuple[int, Path, dict]] = {}
    for path in paths:
        tabular = path.name.endswith((".tsv", ".csv"))
        for loc, rec in _records(path):
            qid = _id_value(path, loc, rec, ("query-id",))
            did = _id_value(path, loc, rec, ("corpus-id",))
            score = _score_value(path, loc, rec, tabular)
            before = seen.get((qid, did))
            if before is not None and before[0] != score:
                raise DataError(path, f"pair ({qid}, {did}) has score {before[0]} at {before[1].name} "
                                      f"{_where(before[2])} and {score} here", field="score", **loc)
            seen.setdefault((qid, did), (score, path, loc))
            rows.append((qid, did, score, path, loc))
    if not rows:
        raise DataError(paths[0] if len(paths) == 1 else paths, "the qrels file is empty")
    return rows


def _where(loc: dict) -> str:
    return f"line {loc['line']}" if "line" in loc else f"row {loc['row']}"


def hf_configs(folder: Path) -> dict[str, dict[str, list[str]]]:
    """``{config_name: {split: [glob, ...]}}`` from the README's YAML front matter."""
    import yaml

    readme = folder / "README.md"
    try:
        text = readme.read_bytes().removeprefix(b"\xef\xbb\xbf").decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as exc:
        raise DataError(readme, f"invalid UTF-8 at byte {exc.start} (expected UTF-8 text)") from None
    except OSError as exc:
        raise DataError(readme, f"cannot read the file ({exc.strerror or exc})") from None
    m = re.match(r"^---\s*\n(.*?)\n---", text, re.S)
    if not m:
        raise DataError(readme, "no YAML front matter with configs")
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as exc:
        raise DataError(readme, f"invalid YAML front matter ({str(exc).splitlines()[0]})") from None
    bad = "expected configs: a list of {config_name, data_files: [{split, path}]}"
    if not isinstance(meta, dict) or not isinstance(meta.get("configs", []), list):
        raise DataError(readme, bad, field="configs")
    out: dict[str, dict[str, list[str]]] = {}
    for cfg in meta.get("configs", []):
        if not isinstance(cfg, dict) or not isinstance(cfg.get("config_name"), str):
            raise DataError(readme, bad, field="configs")
        files = cfg.get("data_files", [])
        if isinstance(files, (str, list)) and (isinstance(files, str) or (files and isinstance(files[0], str))):
            files = [{"split": "train", "path": files}]
        if not isinstance(files, list):
            raise DataError(readme, bad, field="data_files")
        splits = {}
        for entry in files:
            p = entry.get("path") if isinstance(entry, dict) else None
            globs = [p] if isinstance(p, str) else p
            if (not isinstance(entry, dict) or not isinstance(entry.get("split"), str) or not isinstance(globs, list)
                    or not globs or not all(isinstance(g, str) and g for g in globs)):
                raise DataError(readme, bad, field="data_files")
            for g in globs:
                if Path(g).is_absolute() or ".." in Path(g).parts:
                    raise DataError(readme, f"data file pattern {g!r} leaves the dataset folder", field="data_files")
            splits[entry["split"]] = list(globs)
        out[cfg["config_name"]] = splits
    return out


def _hf_files(folder: Path, configs: dict, names: tuple[str, ...], split: str) -> list[Path]:
    for name in names:
        if name in configs:
            splits = configs[name]
            key = split if split in splits else (next(iter(splits)) if len(splits) == 1 else None)
            if key is None:
                raise DataError(folder, f"config {name!r} has no split {split!r} (has {', '.join(splits)})")
            files = sorted({f for g in splits[key] for f in folder.glob(g) if f.is_file()})
            if not files:
                raise DataError(folder, f"config {name!r} split {key!r}: no file matches {splits[key]}")
            return files
    raise DataError(folder / "README.md", f"none of the configs {', '.join(names)} is declared")


def read_local(folder: Path, split: str):
    """(corpus (ids, titles, texts), queries (ids, texts), qrels rows (:func:`read_qrels`), files read)."""
    layout = detect_layout(folder)
    if layout == "beir":
        files = {"corpus": [folder / "corpus.jsonl"], "queries": [folder / "queries.jsonl"],
                 "qrels": [folder / "qrels" / f"{split}.tsv"]}
        if not files["qrels"][0].is_file():
            raise DataError(files["qrels"][0], f"BEIR qrels for split {split!r} not found")
    elif layout == "hf":
        configs = hf_configs(folder)
        files = {"corpus": _hf_files(folder, configs, ("corpus",), split),
                 "queries": _hf_files(folder, configs, ("queries", "query"), split),
                 "qrels": _hf_files(folder, configs, ("default", "qrels"), split)}
    else:
        raise DataError(folder, "neither an HF dataset folder (README.md with configs) nor a BEIR folder (corpus.jsonl)")
    return read_corpus(files["corpus"]), read_queries(files["queries"]), read_qrels(files["qrels"]), files


def _fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# The hub, through mteb's own loader


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def missing_data_error(info: dict, root: Path | None, reason: str) -> MissingDataError:
    where = (f"no local copy under {root} (looked for "
             + ", ".join(str(p) for p in candidate_folders(root, info)) + ")") if root else "no --data-root given"
    return MissingDataError(
        f"task {info['name']!r}: {where}, and {reason}. It needs {info['path']}@{info['revision'][:12]} "
        f"(configs corpus, queries, qrels; split {info['split']}). On a machine with hub access run "
        f"`mmbench data download --tasks {info['name']} --out DIR`, copy DIR here and pass --data-root DIR.")


def read_hub(info: dict):
    """(corpus, queries, qrels rows) as :func:`read_local` gives them, from the hub through mteb's loader."""
    task = mteb_task(info["name"])
    try:
        task.load_data()
    except Exception as exc:   # ConnectionError, OfflineModeIsEnabled, HTTP errors ...
        raise missing_data_error(info, None, f"the HF hub could not be reached ({type(exc).__name__})") from None
    subset = task.dataset["default"] if "default" in task.dataset else next(iter(task.dataset.values()))
    data = subset[info["split"]]
    where = f"hf://{info['path']}@{info['revision']}"
    corpus = data["corpus"]
    titles = list(corpus["title"]) if "title" in corpus.column_names else [""] * len(corpus)
    records = ({"id": i, "title": t, "text": x} for i, t, x in zip(corpus["id"], titles, corpus["text"]))
    corpus_cols = _validated_corpus(f"{where} (corpus)", records)
    q = data["queries"]
    query_cols = _validated_queries(f"{where} (queries)", ({"id": i, "text": t} for i, t in zip(q["id"], q["text"])))
    rows = [(qid, did, s) for qid, docs in data["relevant_docs"].items() for did, s in docs.items()]
    qrels_rows = [(str(qid), str(did), _score_value(f"{where} (qrels)", {"row": n}, {"score": s}, False),
                   f"{where} (qrels)", {"row": n}) for n, (qid, did, s) in enumerate(rows, 1)]
    return corpus_cols, query_cols, qrels_rows


def _validated_corpus(path, records):
    ids, titles, texts = [], [], []
    for n, rec in enumerate(records, 1):
        loc = {"row": n}
        ids.append(_id_value(path, loc, rec, ("id",)))
        titles.append(_text_value(path, loc, rec, "title", required=False))
        texts.append(_text_value(path, loc, rec, "text", required=True))
    return ids, titles, texts


def _validated_queries(path, records):
    ids, texts = [], []
    for n, rec in enumerate(records, 1):
        loc = {"row": n}
        ids.append(_id_value(path, loc, rec, ("id",)))
        texts.append(_text_value(path, loc, rec, "text", required=True))
    return ids, texts


# ------------------------------------------------------------------------------------------------
# The loader


def data_root_for(spec, config) -> Path | None:
    """The ``root`` :meth:`MtebFamily.load` reads: a builtin task's (built) folder; else ``--data-root``, else
    ``$MMBENCH_MTEB_ROOT``, else None (= the HF hub)."""
    if "builtin" in spec.loader_args:
        from mmbench.data.builders.text_tasks import ensure_text_task

        return ensure_text_task(spec.loader_args["builtin"])
    if getattr(config, "data_root", None) is not None:
        return Path(config.data_root)
    env = os.environ.get("MMBENCH_MTEB_ROOT")
    return Path(env) if env else None




def document_texts(titles: list[str], texts: list[str]) -> list[str]:
    """mteb's ``_corpus_to_dict``: ``(title + " " + text).strip()`` if the title is non-empty, else ``text.strip()``
    (a missing or null title or text reads as "")."""
    return [(title + " " + text).strip() if title else text.strip() for title, text in zip(titles, texts)]


def _qrels(rows, query_ids: set[str], doc_ids: set[str], notes: list[str]) -> Qrels:
    qrels: Qrels = {}
    unknown = dangling = 0
    for qid, did, score, _path, _loc in rows:
        if qid not in query_ids:
            unknown += 1
            continue
        if did not in doc_ids:
            dangling += 1
        qrels.setdefault(qid, {})[did] = int(score)
    if unknown:
        notes.append(f"{unknown} qrels rows name queries that are not in the query file; ignored (as pytrec_eval does)")
    if dangling:
        notes.append(f"{dangling} qrels rows name documents that are not in the corpus; kept (as mteb does): "
                     "they count as relevant and can never be retrieved")
    return qrels


def load_task(spec, root: Path | None, *, instructions: str = "first", seed: int = 2023) -> TaskData:
    info = task_info(spec)
    fingerprints: dict[str, str] = {}
    if info.get("builtin"):
        if root is None:
            raise DataError(spec.path, "builtin mteb-format task needs its folder")
        corpus, queries, qrels_rows, files = read_local(Path(root), info["split"])
        source = str(root)
    elif root is not None:
        folder = next((p for p in candidate_folders(Path(root), info) if p.is_dir() and detect_layout(p)), None)
        if folder is None:
            if _hub_offline():
                raise missing_data_error(info, Path(root), "the HF hub is disabled (HF_HUB_OFFLINE=1)")
            corpus, queries, qrels_rows = read_hub(info)
            files, source = None, f"hf://{info['path']}@{info['revision']}"
        else:
            corpus, queries, qrels_rows, files = read_local(folder, info["split"])
            source = str(folder)
    else:
        if _hub_offline():
            raise missing_data_error(info, None, "the HF hub is disabled (HF_HUB_OFFLINE=1)")
        corpus, queries, qrels_rows = read_hub(info)
        files, source = None, f"hf://{info['path']}@{info['revision']}"
    if files is not None:
        for role, key in (("candidates", "corpus"), ("queries", "queries"), ("qrels", "qrels")):
            fingerprints[role] = _fingerprint(files[key])
    else:
        for role in ("candidates", "queries", "qrels"):
            fingerprints[role] = hashlib.sha256(f"{info['path']}@{info['revision']}:{info['split']}:{role}".encode()).hexdigest()

    notes: list[str] = []
    query_ids_all, q_texts_all = queries
    doc_ids, titles, texts = corpus
    qrels = _qrels(qrels_rows, set(query_ids_all), set(doc_ids), notes)
    keep = [i for i, q in enumerate(query_ids_all) if qrels.get(q)]
    if len(keep) < len(query_ids_all):
        notes.append(f"{len(query_ids_all) - len(keep)} queries without qrels dropped (as mteb does)")
    if not keep:
        raise DataError(source, "no query of the query file has a qrels entry: nothing to score")
    qrels = {q: r for q, r in qrels.items() if r}
    q_ids = [query_ids_all[i] for i in keep]
    q_texts = [q_texts_all[i] for i in keep]
    prompt = query_prompt(info["prompt"])
    n = len(q_ids)
    query_table = ItemTable(q_ids, ["text"] * n, q_texts, [None] * n, root=Path("."), raw_texts=list(q_texts),
                            instructions=[prompt] * n if prompt and instructions != "none" else None,
                            source=f"{source} (queries)")
    if len(set(doc_ids)) != len(doc_ids):
        raise DataError(source, "corpus ids are not unique")
    docs = document_texts(titles, texts)
    pool = ItemTable(doc_ids, ["text"] * len(doc_ids), docs, [None] * len(doc_ids), root=Path("."),
                     source=f"{source} (corpus)")
    pool_key = hashlib.sha256(("mteb-corpus:" + fingerprints["candidates"]).encode()).hexdigest()
    return TaskData(name=spec.name, queries=query_table, pool=pool, qrels=qrels, fingerprints=fingerprints,
                  pool_key=pool_key, notes=notes, ignore_identical_ids=info["ignore_identical_ids"],
                  mteb={k: info[k] for k in ("name", "path", "revision", "split", "main_score", "languages")})


def drop_identical_ids(query_ids: list[str], candidate_ids, indices: np.ndarray,
                       scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mteb's ``ignore_identical_ids``: remove each retrieved document whose id equals the query id
    (after search, before scoring; such rows keep k-1 results). Rows stay in rank order, empty slots
    (-1 / -inf) move to the end."""
    indices, scores = indices.copy(), scores.astype(np.float64, copy=True)
    position = getattr(candidate_ids, "position", None) or {c: i for i, c in enumerate(candidate_ids)}
    for r, qid in enumerate(query_ids):
        j = position.get(qid)
        if j is None:
            continue
        hit = np.flatnonzero(indices[r] == j)
        if hit.size:
            c = int(hit[0])
            indices[r, c:-1] = indices[r, c + 1:].copy()
            scores[r, c:-1] = scores[r, c + 1:].copy()
            indices[r, -1], scores[r, -1] = -1, -np.inf
    return indices, scores


def local_mteb_task(name: str, folder: Path, *, split: str = "test", main_score: str = "ndcg_at_10",
                    ignore_identical_ids: bool = False, languages: list[str] | None = None):
    """An mteb ``AbsTaskRetrieval`` instance reading ``folder`` (HF layout) with mteb's own loader, so
    ``mteb.evaluate`` can run mmbench's offline tasks (used by the fidelity test and the benchmark)."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    metadata = TaskMetadata(
        name=name, description=f"mmbench offline task {name}", reference=None,
        dataset={"path": str(folder), "revision": "local"}, type="Retrieval", category="t2t",
        modalities=["text"], eval_splits=[split], eval_langs=languages or ["eng-Latn"], main_score=main_score,
        date=None, domains=None, task_subtypes=None, license=None, annotations_creators=None,
        dialect=None, sample_creation=None, bibtex_citation=None)
    cls = type(name.replace("-", "_").replace(".", "_"), (AbsTaskRetrieval,),
               {"metadata": metadata, "ignore_identical_ids": ignore_identical_ids})
    return cls()


class MtebFamily(BaseFamily):
    """mteb's retrieval tasks (see the module docstring)."""

    name = "mteb"

    def data_root(self, spec, config) -> Path | None:
        return data_root_for(spec, config)

    def load(self, spec, root: Path | None, *, instructions: str = "first", seed: int = 2023) -> TaskData:
        return load_task(spec, root, instructions=instructions, seed=seed)

    def with_model_instructions(self, data: TaskData, meta, config) -> TaskData:
        """A task whose queries have no instruction (mteb gives the task no prompt) takes the model's
        own instruction for it (``meta.task_instructions``), as the model's authors evaluated it;
        unchanged otherwise, and always with ``--instructions none``."""
        from dataclasses import replace

        from mmbench.registry import import_target

        if (data.mteb is None or meta.task_instructions is None or not meta.uses_instructions
                or data.queries.instructions is not None or config.instructions == "none"):
            return data
        instruction = import_target(meta.task_instructions)(data.mteb["name"])
        if not instruction:
            return data
        queries = replace(data.queries, instructions=[instruction] * len(data.queries))
        note = f"query instruction from {meta.name}'s table (mteb has no prompt for this task): {instruction!r}"
        return replace(data, queries=queries, notes=[*data.notes, note])

    def after_search(self, data: TaskData, candidate_ids, indices: np.ndarray,
                     scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not data.ignore_identical_ids:
            return indices, scores
        return drop_identical_ids(list(data.queries.ids), candidate_ids, indices, scores)

    def write_extra_outputs(self, output: Path, meta, spec, data: TaskData, scores: dict[str, float],
                            record: dict) -> None:
        from mmbench.results.mteb_format import write_mteb_result

        write_mteb_result(output, meta, spec, data, scores, record)


FAMILY = MtebFamily()
