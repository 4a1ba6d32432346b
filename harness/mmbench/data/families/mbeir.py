"""Task family ``"mbeir"``: M-BEIR's on-disk layout, exactly as it ships (see ``shared/reference/mbeir.md`` §1).

* query JSONL (``qid, query_txt, query_img_path, query_modality, query_src_content, pos_cand_list,
  neg_cand_list, task_id``), candidate JSONL (``txt, img_path, modality, did, src_content``), with
  ``null`` for absent fields and ``src_content`` a JSON *string*;
* qrels with 5 space-separated columns ``qid 0 did relevance task_id`` (4 accepted), kept as shipped;
* ``instructions/query_instructions.tsv`` parsed as UniIR does.

Text gets UniIR's normalisation (:func:`~mmbench.data.types.format_string`); images are referenced,
never decoded here; an image path that escapes the data root is refused.

Qrels that point at candidates of *another* dataset (OVEN <-> InfoSeek in the published data) are
kept: they are unreachable in the local pool and reachable in the global one, as in UniIR. They are
counted in the task's notes. A qrels candidate of the query's own dataset that is missing from the
pool is an error.

The family's data root is ``--data-root`` (or ``$MMBENCH_MBEIR_ROOT``); a spec with
``default_data_root = "mbeir-mini"`` reads the embedded suite, built on first use
(:func:`mmbench.data.builders.mini.ensure_mini`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

from mmbench.data.types import (
    MODALITIES,
    ItemTable,
    Qrels,
    TaskData,
    format_string,
    modality_parts,
)
from mmbench.data.families.base import BaseFamily
from mmbench.data.lines import iter_json_objects, iter_lines
from mmbench.errors import DataError, MmbenchError
from mmbench.data.specs import TaskSpec

INSTRUCTION_POLICIES = ("first", "random", "none")


def file_fingerprint(path: Path) -> str:
    """sha256 of the file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def require_file(root: Path, rel: str, task: str) -> Path:
    path = root / rel
    if not path.is_file():
        raise DataError(path, f"missing file needed by task {task!r} (data root {root})")
    return path


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """The JSON objects of a JSONL file, read by :func:`~mmbench.data.lines.iter_json_objects`
    (strict UTF-8, a BOM and CRLF accepted, lines capped at ``MAX_LINE_BYTES``)."""
    return iter_json_objects(path)


def _field(path: Path, lineno: int, obj: dict, key: str, types: tuple, *, nullable: bool = False):
    if key not in obj:
        raise DataError(path, "missing field", line=lineno, field=key)
    value = obj[key]
    if value is None and nullable:
        return None
    if not isinstance(value, types) or isinstance(value, bool):
        expected = " or ".join(t.__name__ for t in types) + (" or null" if nullable else "")
        raise DataError(path, f"expected {expected}, got {type(value).__name__}", line=lineno, field=key)
    return value


def _identifier(path: Path, lineno: int, obj: dict, key: str) -> str:
    """An id field: a non-empty string without whitespace (qrels lines are split on whitespace, so an
    id with a space could never be judged)."""
    value = _field(path, lineno, obj, key, (str,))
    if not value or value != "".join(value.split()):
        raise DataError(path, f"expected a non-empty id without whitespace, got {value!r}", line=lineno, field=key)
    return value


def _modality(path: Path, lineno: int, obj: dict, key: str) -> str:
    value = _field(path, lineno, obj, key, (str,))
    if value not in MODALITIES and value != "text,image":
        raise DataError(path, f"expected one of {', '.join(MODALITIES)}, got {value!r}", line=lineno, field=key)
    return "image,text" if value == "text,image" else value


def safe_image_path(root: Path, rel: str, path: Path, lineno: int, key: str) -> str:
    """Refuse absolute paths and paths that escape the data root."""
    candidate = Path(rel)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise DataError(path, f"image path {rel!r} escapes the data root {root}", line=lineno, field=key)
    return rel


def _check_parts(path: Path, lineno: int, modality: str, text, image, text_key: str, image_key: str) -> None:
    parts = modality_parts(modality)
    if "image" in parts and not image:
        raise DataError(path, f"modality {modality!r} needs an image path", line=lineno, field=image_key)
    if parts == {"text"} and not text:
        raise DataError(path, f"modality {modality!r} needs text", line=lineno, field=text_key)


def _src_content(path: Path, lineno: int, obj: dict, key: str) -> None:
    value = _field(path, lineno, obj, key, (str,), nullable=True) if key in obj else None
    if value is not None:
        try:
            json.loads(value)
        except (ValueError, RecursionError):
            raise DataError(path, "expected a JSON-encoded string", line=lineno, field=key) from None


def load_pool(path: Path, root: Path) -> ItemTable:
    """Read a candidate pool JSONL into an :class:`ItemTable` (text normalised as UniIR does)."""
    ids, mods, texts, imgs = [], [], [], []
    seen: dict[str, int] = {}
    for lineno, obj in _jsonl(path):
        did = _identifier(path, lineno, obj, "did")
        txt = _field(path, lineno, obj, "txt", (str,), nullable=True)
        img = _field(path, lineno, obj, "img_path", (str,), nullable=True)
        modality = _modality(path, lineno, obj, "modality")
        _src_content(path, lineno, obj, "src_content")
        _check_parts(path, lineno, modality, txt, img, "txt", "img_path")
        if did in seen:
            raise DataError(path, f"duplicate did {did!r} (first on line {seen[did]})", line=lineno, field="did")
        seen[did] = lineno
        ids.append(did)
        mods.append(modality)
        texts.append(format_string(txt) if txt and "text" in modality_parts(modality) else None)
        imgs.append(safe_image_path(root, img, path, lineno, "img_path") if img and "image" in modality_parts(modality) else None)
    if not ids:
        raise DataError(path, "candidate pool is empty")
    return ItemTable(ids, mods, texts, imgs, root=root, source=str(path))


def load_queries(path: Path, root: Path) -> ItemTable:
    """Read a query JSONL into an :class:`ItemTable` that keeps the raw and the normalised text."""
    ids, mods, texts, raws, imgs = [], [], [], [], []
    seen: dict[str, int] = {}
    for lineno, obj in _jsonl(path):
        qid = _identifier(path, lineno, obj, "qid")
        txt = _field(path, lineno, obj, "query_txt", (str,), nullable=True)
        img = _field(path, lineno, obj, "query_img_path", (str,), nullable=True)
        modality = _modality(path, lineno, obj, "query_modality")
        _src_content(path, lineno, obj, "query_src_content")
        pos = _field(path, lineno, obj, "pos_cand_list", (list,))
        if not all(isinstance(p, str) for p in pos):
            raise DataError(path, "expected a list of did strings", line=lineno, field="pos_cand_list")
        _field(path, lineno, obj, "task_id", (int,))
        _check_parts(path, lineno, modality, txt, img, "query_txt", "query_img_path")
        if qid in seen:
            raise DataError(path, f"duplicate qid {qid!r} (first on line {seen[qid]})", line=lineno, field="qid")
        seen[qid] = lineno
        parts = modality_parts(modality)
        ids.append(qid)
        mods.append(modality)
        raw = txt if txt and "text" in parts else None
        raws.append(raw)
        texts.append(format_string(raw) if raw else None)
        imgs.append(safe_image_path(root, img, path, lineno, "query_img_path") if img and "image" in parts else None)
    if not ids:
        raise DataError(path, "query file is empty")
    return ItemTable(ids, mods, texts, imgs, root=root, raw_texts=raws, source=str(path))


def load_qrels(path: Path) -> tuple[Qrels, dict[str, int]]:
    """Read M-BEIR qrels (``qid 0 did rel task_id``; a 4-column TREC line is accepted too).

    Every line ends with a line end (M-BEIR's files do): a file cut inside its last line is an error.
    Returns the qrels and, for each query, the first line that names it (for error messages). A
    (qid, did) pair repeated with the same relevance is kept once; with another relevance it is an
    error (which one was meant cannot be known). Every line of a file has the column count of its
    first line (a 5-column line that lost a column would otherwise read as a 4-column one, with its
    task_id taken for the relevance), and the second column is an integer (TREC's iteration).
    """
    qrels: Qrels = {}
    line_of: dict[str, int] = {}
    pair_line: dict[tuple[str, str], int] = {}
    width = None
    for lineno, line in iter_lines(path, final_newline=True):
        cols = line.split()
        if not cols:
            continue
        if len(cols) not in (4, 5) or (width is not None and len(cols) != width):
            expected = width or 5
            raise DataError(path, f"expected {expected} space-separated columns 'qid 0 did relevance"
                                  f"{' task_id' if expected == 5 else ''}' (as on the file's first line), got {len(cols)}",
                            line=lineno)
        width = len(cols)
        qid, iteration, did, rel = cols[:4]
        if not _is_int(iteration):
            raise DataError(path, f"second column must be an integer (0), got {iteration!r}", line=lineno, field="iteration")
        if not _is_int(rel):
            raise DataError(path, f"relevance must be an integer, got {rel!r}", line=lineno, field="relevance")
        relevance = int(rel)
        if len(cols) == 5 and not _is_int(cols[4]):
            raise DataError(path, f"task_id must be an integer, got {cols[4]!r}", line=lineno, field="task_id")
        judged = qrels.setdefault(qid, {})
        if did in judged and judged[did] != relevance:
            raise DataError(path, f"pair ({qid}, {did}) has relevance {judged[did]} on line "
                                  f"{pair_line[(qid, did)]} and {relevance} here", line=lineno, field="relevance")
        judged[did] = relevance
        pair_line.setdefault((qid, did), lineno)
        line_of.setdefault(qid, lineno)
    if not qrels:
        raise DataError(path, "qrels file is empty")
    return qrels, line_of


def _is_int(text: str) -> bool:
    """An optionally signed run of ASCII digits (what ``int`` reads as the same number everywhere)."""
    body = text[1:] if text[:1] in "+-" else text
    return body.isascii() and body.isdigit()


def load_instructions(path: Path) -> dict[tuple[str, str, str], list[str]]:
    """UniIR's parsing of ``query_instructions.tsv``: key (dataset_id, query_modality, cand_modality)."""
    table: dict[tuple[str, str, str], list[str]] = {}
    lines = list(iter_lines(path))
    if not lines:
        raise DataError(path, "instruction file is empty")
    for lineno, line in lines[1:]:
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 5:
            raise DataError(path, f"expected ≥5 tab-separated columns (query_modality, cand_modality, dataset_name, dataset_id, prompt_1..), got {len(parts)}", line=lineno)
        prompts = [p.strip() for p in parts[4:] if p.strip()]
        if not prompts:
            raise DataError(path, "row has no prompt", line=lineno, field="prompt_1")
        table[(parts[3].strip(), parts[0].strip(), parts[1].strip())] = prompts
    return table


def choose_instructions(prompts: list[str] | None, n: int, policy: str, seed: int, task: str) -> list[str | None]:
    """Per-query instructions: ``first`` (prompt_1), ``random`` (seeded draw per query), ``none``."""
    if policy not in INSTRUCTION_POLICIES:
        raise ValueError(f"instruction policy must be one of {INSTRUCTION_POLICIES}, got {policy!r}")
    if policy == "none":
        return [None] * n
    assert prompts
    if policy == "first":
        return [prompts[0]] * n
    rng = random.Random(f"{seed}:{task}")
    return [rng.choice(prompts) for _ in range(n)]


def load_task(spec: TaskSpec, root: Path, *, instructions: str = "first", seed: int = 2023) -> TaskData:
    """Load and cross-check one M-BEIR task (its local pool, queries, qrels, instructions)."""
    if not root.is_dir():
        raise DataError(root, f"data root does not exist (task {spec.name!r} expects M-BEIR's layout there)")
    q_path = require_file(root, spec.files.queries, spec.name)
    p_path = require_file(root, spec.files.pool, spec.name)
    r_path = require_file(root, spec.files.qrels, spec.name)
    queries = load_queries(q_path, root)
    pool = load_pool(p_path, root)
    qrels, qrels_line = load_qrels(r_path)
    fingerprints = {"queries": file_fingerprint(q_path), "pool": file_fingerprint(p_path),
                    "qrels": file_fingerprint(r_path)}

    prompts = None
    if instructions != "none":
        if not spec.files.instructions:
            raise DataError(Path(spec.path), "task has no instructions file but --instructions is not 'none'", field="files.instructions")
        i_path = require_file(root, spec.files.instructions, spec.name)
        fingerprints["instructions"] = file_fingerprint(i_path)
        key = (str(spec.dataset_id), spec.query_modality, spec.candidate_modality)
        prompts = load_instructions(i_path).get(key)
        if prompts is None:
            raise DataError(i_path, f"no instruction row for dataset_id={key[0]}, query_modality={key[1]}, cand_modality={key[2]} (task {spec.name!r})")
    queries.instructions = choose_instructions(prompts, len(queries), instructions, seed, spec.name)

    notes = _check_qrels(spec, queries, pool, qrels, r_path, qrels_line)
    unjudged = [q for q in queries.ids if q not in qrels]
    if unjudged:
        notes.append(f"{len(unjudged)} queries have no qrels and are not scored (e.g. {unjudged[0]!r})")
    return TaskData(name=spec.name, queries=queries, pool=pool, qrels=qrels,
                    fingerprints=fingerprints, pool_key=fingerprints["pool"], notes=notes)


def _dataset_prefix(identifier: str) -> str:
    return identifier.split(":", 1)[0]


def _check_qrels(spec: TaskSpec, queries: ItemTable, pool: ItemTable, qrels: Qrels,
                 path: Path, line_of: dict[str, int]) -> list[str]:
    query_ids = set(queries.ids)
    pool_ids = set(pool.ids)
    for qid in qrels:
        if qid not in query_ids:
            raise DataError(path, f"qrels name query {qid!r}, which is not in {spec.files.queries}", line=line_of[qid])
    cross = 0
    cross_queries = 0
    for qid, judged in qrels.items():
        missing = [d for d in judged if d not in pool_ids]
        foreign = [d for d in missing if _dataset_prefix(d) != _dataset_prefix(qid)]
        odd = next((d for d in foreign if not _is_int(_dataset_prefix(d)) or ":" not in d), None)
        if odd is not None:
            raise DataError(path, f"qrels of query {qid!r} name {odd!r}, which is neither in {spec.files.pool} "
                                  "nor an M-BEIR candidate id ('<dataset_id>:<n>') of another dataset", line=line_of[qid])
        if len(foreign) != len(missing):
            own = next(d for d in missing if _dataset_prefix(d) == _dataset_prefix(qid))
            raise DataError(path, f"qrels of query {qid!r} name candidate {own!r}, which is not in {spec.files.pool}", line=line_of[qid])
        if foreign:
            cross += len(foreign)
            cross_queries += 1
    notes = []
    if cross:
        notes.append(
            f"{cross} qrels positives of {cross_queries} queries point into another dataset's pool "
            "(as in the published OVEN/InfoSeek qrels); unreachable in the local pool, kept as shipped"
        )
    return notes


class MbeirFamily(BaseFamily):
    """M-BEIR's layout: the real data under ``--data-root``, or the embedded mini suite."""

    name = "mbeir"

    def data_root(self, spec: TaskSpec, config) -> Path:
        if spec.default_data_root == "mbeir-mini":
            from mmbench.data.builders.mini import ensure_mini

            return ensure_mini(config.mini_root)
        root = config.mbeir_root()
        if root is None:
            raise MmbenchError(
                f"task {spec.name!r} needs M-BEIR on disk: pass --data-root /path/to/M-BEIR (or set "
                f"MMBENCH_MBEIR_ROOT); it must contain {spec.files.queries}, {spec.files.pool} and {spec.files.qrels}"
            )
        return root

    def load(self, spec: TaskSpec, root: Path, *, instructions: str = "first", seed: int = 2023) -> TaskData:
        return load_task(spec, root, instructions=instructions, seed=seed)


FAMILY = MbeirFamily()
