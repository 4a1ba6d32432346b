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

A global suite's pool is M-BEIR's union file (:data:`UNION_POOL_FILE`, named by the suite's
``pool_file``) when the data root has it, read column-wise by :func:`load_union_pool` (exactly the
table of the line reader :func:`load_pool`, which it falls back to for the precise error); else the
pipeline takes the union of the local pool files (:func:`load_local_pool`, no queries read). A task of
a global suite is then loaded against that pool (:func:`load_task` with ``pool``), without its local
pool file.

The family's data root is ``--data-root`` (or ``$MMBENCH_MBEIR_ROOT``); a spec with
``default_data_root = "mbeir-mini"`` reads the embedded suite, built on first use
(:func:`mmbench.data.builders.mini.ensure_mini`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Set
from pathlib import Path

from mmbench.data.types import (
    IMAGE,
    IMAGE_TEXT,
    MODALITIES,
    TEXT,
    ItemTable,
    PoolData,
    PoolPart,
    Qrels,
    TaskData,
    format_string,
    modality_parts,
)
from mmbench.data.families.base import BaseFamily
from mmbench.data.lines import BLOCK_BYTES, BOM, ColumnarDeclined, iter_json_blocks, iter_json_objects, iter_lines
from mmbench.errors import DataError, MmbenchError
from mmbench.data.specs import TaskSpec
from mmbench.util.io import file_sha256

INSTRUCTION_POLICIES = ("first", "random", "none")


file_fingerprint = file_sha256          # a data file's fingerprint: sha256 of its bytes


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


UNION_POOL_FILE = "cand_pool/global/mbeir_union_test_cand_pool.jsonl"
"""M-BEIR's global (UNION, 5.6M) test pool, relative to the data root: every local test pool's
candidates in one file, sorted by (dataset id, n) (``shared/reference/mbeir.md`` §1.1, §2.3)."""

POOL_COLUMNS = ("txt", "img_path", "modality", "did", "src_content")
_REQUIRED = ("txt", "img_path")       # keys whose absence is an error that a null would hide (did and
                                      # modality: null is an error too)
_CODES = ("text", "image", "image,text", "text,image")          # index -> modality as written
_CANONICAL = (TEXT, IMAGE, IMAGE_TEXT, IMAGE_TEXT)               # the same code as read (interned)


def load_union_pool(path: Path, root: Path, *, block_bytes: int = BLOCK_BYTES) -> PoolData:
    """A global pool file (M-BEIR's :data:`UNION_POOL_FILE`) as one pool: the table
    :func:`load_pool` reads from it, its ``key`` the file's sha256, and its parts the maximal runs of
    rows of one dataset id (the ``did`` before ``:``) and one modality: M-BEIR's local pools are each
    of one modality and a dataset's two pools differ in modality, so in a file sorted by did each
    run is a local pool's rows where its dids are contiguous. A part's key is the sha256 of its
    lines' bytes: a part written exactly as a local pool file has that file's key, and shares its
    embeddings in the cache.

    The file is read column-wise in blocks (:func:`~mmbench.data.lines.iter_json_blocks`; only the
    pool's columns are kept, ``src_content`` is checked and dropped) and validated with vectorised
    checks that accept exactly what :func:`load_pool` accepts; where a check fails, or the columnar
    reader declines the file, the file is read by :func:`load_pool`, which gives the same table or
    the error naming the line (its parts are then the same runs, keyed by the file's sha256 and
    their row range: no cache sharing with local pool files).
    """
    path = Path(path)
    try:
        return _union_columnar(path, root, block_bytes)
    except ColumnarDeclined:
        pass
    table = load_pool(path, root)
    key = file_fingerprint(path)
    parts = [PoolPart(a, b, hashlib.sha256(f"{key}\0rows:{a}:{b}".encode()).hexdigest())
             for a, b in _runs(table.ids, table.modalities)]
    return PoolData(table, key, {"pool": key}, parts, source=str(path))


def _runs(ids, modalities) -> list[tuple[int, int]]:
    """Maximal runs ``(start, stop)`` of rows with one dataset prefix and one modality."""
    runs: list[tuple[int, int]] = []
    last = None
    for i, (did, modality) in enumerate(zip(ids, modalities)):
        label = (did.split(":", 1)[0], modality)
        if label != last:
            if runs:
                runs[-1] = (runs[-1][0], i)
            runs.append((i, len(ids)))
            last = label
    return runs


def _union_columnar(path: Path, root: Path, block_bytes: int) -> PoolData:
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    codes_set = pa.array(_CODES)
    canonical = np.array(_CANONICAL, dtype=object)
    has_image = np.array([False, True, True, True])
    has_text = np.array([True, False, True, True])
    none = pa.scalar(None, pa.string())
    ids: list[str] = []
    modalities: list[str] = []
    texts: list[str | None] = []
    images: list[str | None] = []
    hashes = _Hashes()
    parts: list[list[int]] = []               # [start row, stop row]
    last_label = None
    with ThreadPoolExecutor(1) as hasher:      # sha256 releases the GIL: it runs beside the parsing
        for block in iter_json_blocks(path, POOL_COLUMNS, _REQUIRED, block_bytes=block_bytes):
            cols = block.columns
            try:                               # Arrow checks UTF-8 only here (the line reader: every byte)
                for column in cols.values():
                    column.validate(full=True)
            except pa.ArrowInvalid:
                raise ColumnarDeclined("invalid UTF-8") from None
            did, modality, txt, img = cols["did"], cols["modality"], cols["txt"], cols["img_path"]
            n, first = len(block), len(ids)
            if did.null_count or modality.null_count or pc.min(pc.utf8_length(did)).as_py() == 0:
                raise ColumnarDeclined("a null or empty id or modality")
            index = pc.index_in(modality, value_set=codes_set)
            if index.null_count:
                raise ColumnarDeclined("an unknown modality")
            code = index.to_numpy(zero_copy_only=False).astype(np.int64)
            block_ids = did.to_numpy(zero_copy_only=False).tolist()
            joined = "\0".join(block_ids)               # NUL is not whitespace
            if "".join(joined.split()) != joined:
                raise ColumnarDeclined("an id with whitespace")
            img_ok = pc.fill_null(pc.greater(pc.utf8_length(img), 0), False).to_numpy(zero_copy_only=False)
            txt_ok = pc.fill_null(pc.greater(pc.utf8_length(txt), 0), False).to_numpy(zero_copy_only=False)
            want_image, want_text = has_image[code], has_text[code]
            if (want_image & ~img_ok).any() or ((code == 0) & ~txt_ok).any():
                raise ColumnarDeclined("a modality without its text or image")
            img_kept = pc.if_else(pa.array(want_image & img_ok), img, none)
            if pc.any(pc.fill_null(pc.or_(pc.starts_with(img_kept, "/"),
                                          pc.match_substring_regex(img_kept, r"(^|/)\.\.(/|$)")), False)).as_py():
                raise ColumnarDeclined("an image path outside the data root")
            if not _all_json(cols["src_content"].drop_null().to_numpy(zero_copy_only=False).tolist()):
                raise ColumnarDeclined("a src_content that is not JSON")
            ids += block_ids
            modalities += canonical[code].tolist()
            texts += _formatted(pc.if_else(pa.array(want_text & txt_ok), txt, none))
            images += img_kept.to_numpy(zero_copy_only=False).tolist()
            # parts: a new one where the dataset prefix or the modality changes
            prefix = pc.list_element(pc.split_pattern(did, ":", max_splits=1), 0)
            canon = np.where(code == 3, 2, code)
            change = np.zeros(n, dtype=bool)
            if n > 1:
                change[1:] = (canon[1:] != canon[:-1]) | ~pc.equal(prefix[1:], prefix[:-1]).to_numpy(
                    zero_copy_only=False)
            change[0] = (prefix[0].as_py(), int(canon[0])) != last_label
            last_label = (prefix[n - 1].as_py(), int(canon[n - 1]))
            starts = [*(block.starts - block.starts[0]).tolist(), len(block.data)]
            spans = []                         # (part, byte start, byte stop) of this block
            bounds = [*np.flatnonzero(change).tolist(), n]
            if bounds[0] != 0:                 # rows continuing the previous block's part
                spans.append((len(parts) - 1, 0, starts[bounds[0]]))
            for a, b in zip(bounds[:-1], bounds[1:]):
                if parts:
                    parts[-1][1] = first + a
                parts.append([first + a, first + n])
                spans.append((len(parts) - 1, starts[a], starts[b]))
            parts[-1][1] = first + n
            hasher.submit(hashes.update, block.data, spans, block.starts[0] == len(BOM) and first == 0)
    if not ids:
        raise ColumnarDeclined("an empty file")
    key = hashes.file.hexdigest()
    table = ItemTable(ids, modalities, texts, images, root=root, source=str(path))
    pool = PoolData(table, key, {"pool": key},
                    [PoolPart(a, b, hashes.parts[i].hexdigest()) for i, (a, b) in enumerate(parts)], source=str(path))
    if len(pool.id_set()) != len(ids):
        raise ColumnarDeclined("a repeated did")
    return pool


_SCAN = json.JSONDecoder().scan_once


def _all_json(values: list[str]) -> bool:
    """Whether ``json.loads`` reads each of ``values``: a value written as one object (``{`` to ``}``)
    by the decoder's scanner alone (what ``json.loads`` runs, less its white-space handling, which
    such a value does not need), any other by ``json.loads``."""
    try:
        for value in values:
            if value[:1] == "{" and value[-1:] == "}":
                if _SCAN(value, 0)[1] != len(value):
                    return False
            else:
                json.loads(value)
    except (ValueError, RecursionError, StopIteration):
        return False
    return True


class _Hashes:
    """The sha256 of the whole file and of each part's bytes, fed block by block in file order."""

    def __init__(self):
        self.file = hashlib.sha256()
        self.parts: dict[int, object] = {}

    def update(self, data: bytes, spans: list[tuple[int, int, int]], after_bom: bool) -> None:
        if after_bom:
            self.file.update(BOM)
        self.file.update(data)
        view = memoryview(data)
        for part, a, b in spans:
            self.parts.setdefault(part, hashlib.sha256()).update(view[a:b])


def _formatted(column) -> list[str | None]:
    """``format_string`` of each non-null text of an Arrow string column (None where null). (Arrow's
    string kernels doing the same were no faster: perf.md, "The 5.6M global pool".)"""
    return [format_string(t) if t is not None else None for t in column.to_numpy(zero_copy_only=False).tolist()]


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


def load_local_pool(spec: TaskSpec, root: Path) -> PoolData:
    """A task's local pool file alone (none of its queries)."""
    _check_root(spec, root)
    path = require_file(root, spec.files.pool, spec.name)
    key = file_fingerprint(path)
    return PoolData(load_pool(path, root), key, {"pool": key}, source=spec.files.pool)


def _check_root(spec: TaskSpec, root: Path) -> None:
    if not root.is_dir():
        raise DataError(root, f"data root does not exist (task {spec.name!r} expects M-BEIR's layout there)")


def load_task(spec: TaskSpec, root: Path, *, instructions: str = "first", seed: int = 2023,
              pool: PoolData | None = None) -> TaskData:
    """Load and cross-check one M-BEIR task (its local pool, queries, qrels, instructions). With
    ``pool`` (a suite's global pool), the task's qrels are checked against that pool and its local
    pool file is not read (it need not exist)."""
    _check_root(spec, root)
    q_path = require_file(root, spec.files.queries, spec.name)
    p_path = require_file(root, spec.files.pool, spec.name) if pool is None else None
    r_path = require_file(root, spec.files.qrels, spec.name)
    queries = load_queries(q_path, root)
    if pool is None:
        pool = PoolData(load_pool(p_path, root), file_fingerprint(p_path), {}, source=spec.files.pool)
    qrels, qrels_line = load_qrels(r_path)
    fingerprints = {"queries": file_fingerprint(q_path), "pool": pool.key, "qrels": file_fingerprint(r_path)}

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

    notes = _check_qrels(spec, queries, pool.id_set(), pool.source, qrels, r_path, qrels_line)
    unjudged = [q for q in queries.ids if q not in qrels]
    if unjudged:
        notes.append(f"{len(unjudged)} queries have no qrels and are not scored (e.g. {unjudged[0]!r})")
    return TaskData(name=spec.name, queries=queries, pool=pool.table, qrels=qrels,
                    fingerprints=fingerprints, pool_key=pool.key, notes=notes)


def _dataset_prefix(identifier: str) -> str:
    return identifier.split(":", 1)[0]


def _check_qrels(spec: TaskSpec, queries: ItemTable, pool_ids: Set[str], pool_name: str, qrels: Qrels,
                 path: Path, line_of: dict[str, int]) -> list[str]:
    """Every qrels query is in the query file; a positive missing from the pool (``pool_name``) is an
    error when of the query's dataset, a note when of another (see the module docstring)."""
    query_ids = set(queries.ids)
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
            raise DataError(path, f"qrels of query {qid!r} name {odd!r}, which is neither in {pool_name} "
                                  "nor an M-BEIR candidate id ('<dataset_id>:<n>') of another dataset", line=line_of[qid])
        if len(foreign) != len(missing):
            own = next(d for d in missing if _dataset_prefix(d) == _dataset_prefix(qid))
            raise DataError(path, f"qrels of query {qid!r} name candidate {own!r}, which is not in {pool_name}", line=line_of[qid])
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

    def load_pool(self, spec: TaskSpec, root: Path) -> PoolData:
        return load_local_pool(spec, root)

    def global_pool(self, pool_file: str, specs: list[TaskSpec], root: Path) -> PoolData | None:
        """The suite's ``pool_file`` (M-BEIR's :data:`UNION_POOL_FILE`) read by :func:`load_union_pool`;
        None when the data root has no such file."""
        path = Path(root) / pool_file
        if not path.is_file():
            return None
        pool = load_union_pool(path, Path(root))
        pool.source = pool_file
        return pool

    def load_with_pool(self, spec: TaskSpec, root: Path, pool: PoolData, *, instructions: str = "first",
                       seed: int = 2023) -> TaskData:
        return load_task(spec, root, instructions=instructions, seed=seed, pool=pool)


FAMILY = MbeirFamily()
