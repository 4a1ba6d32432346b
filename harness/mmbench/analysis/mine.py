"""Hard negatives from a run: each query's negatives taken from the model's own ranking.

``mmbench mine RESULTS --task TASK --out DIR`` reads a finished task (its record and its run file,
through :func:`mmbench.results.trec.read_run`), loads the task's data through its family with the
run's own configuration (the record's ``provenance.config``; the data fingerprints must match the
record's) and writes, beside a recipe file:

* an **M-BEIR** task (family ``mbeir``): ``<task>.hard_negatives.jsonl``, the task's query file
  in M-BEIR's training format, each query object as shipped (``qid``, ``query_txt``,
  ``query_img_path``, ``query_modality``, ``query_src_content``, ``pos_cand_list``, ``task_id``) with
  ``neg_cand_list`` replaced by the mined negatives, in the query file's order;
* an **MTEB** task (family ``mteb``): ``<task>.hard_negatives.jsonl``, one BEIR-style line per query,
  ``{"query-id", "positives", "negatives"}`` (positives: the qrels' ids with relevance > 0), in the
  query file's order;
* ``<task>.recipe.json``: the :class:`MiningRecipe`, what came out (counts, the output's sha256) and
  where from (model, revision, config hash, the run file's sha256, pool, data fingerprints).

Any other family is refused with one line naming it.

**The rule** (:func:`mine_negatives`), MM-Embed's modality-aware mining (its stage 2 samples
negatives from the first-stage model's top 50 among the candidates of the right modality ranked
after 45) with its parameters open: for query ``q`` with ranked candidates ``d_1, d_2, ...`` (the run
file's rank order), the eligible set is

.. math:: E_q = \\{ d_r : \\max(a, s + 1) \\le r \\le b,\\; d_r \\notin P_q,\\; \\mathrm{content}(d_r) \\notin
          \\mathrm{content}(P_q),\\; \\mathrm{mod}(d_r) = m,\\; d_r \\ne q \\text{ (mteb's ignore\\_identical\\_ids)} \\}

with window ``a:b`` (1-based ranks, both included), ``s`` = skip-top (the first ranks, where
unjudged relevant candidates, false negatives, hide), ``P_q`` the positives (qrels relevance > 0),
content = (modality, text, image file) so that a copy of a positive under another id is never a
negative, and ``m`` the task's candidate modality (a candidate of another modality is never taken:
the negatives teach what to rank below a positive *within* the target modality). The negatives are
``min(k, |E_q|)`` elements of ``E_q`` drawn without replacement by a numpy ``Generator`` seeded with
``(seed, first 8 bytes of sha256(qid))``, listed in rank order. So a query's negatives depend only on
its own row, qrels and the recipe: never on the other queries or their order (tested). A query without
a positive (no qrels) gets none: nothing it retrieved can be told from an unjudged relevant candidate.

MM-Embed also uses wrong-modality candidates from the top of the ranking as negatives (its first
kind); those are often relevant in content (the caption of the very image asked for) and are not
produced here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mmbench.errors import DataError, MmbenchError
from mmbench.util.io import file_sha256

FORMATS = {"mbeir": "mbeir-query-jsonl", "mteb": "beir-hard-negatives-jsonl"}
"""The task families mine writes, and the format of each one's output."""
RECIPE_SCHEMA = "mmbench.mine/1"


@dataclass(frozen=True)
class MiningRecipe:
    """What to take from each query's ranking (the module docstring's rule)."""

    skip_top: int = 45                    # ranks 1..skip_top are never taken
    window: tuple[int, int] = (1, 50)     # ranks sampled from, 1-based, both ends included
    per_query: int = 1                    # negatives per query (fewer when fewer are eligible)
    seed: int = 0

    def __post_init__(self) -> None:
        a, b = self.window
        problems = []
        if self.skip_top < 0:
            problems.append(f"skip-top {self.skip_top} must be >= 0")
        if a < 1 or b < a:
            problems.append(f"window {a}:{b} must be two ranks A:B with 1 <= A <= B")
        if self.per_query < 1:
            problems.append(f"per-query {self.per_query} must be >= 1")
        if self.seed < 0:
            problems.append(f"seed {self.seed} must be >= 0")
        if not problems and self.first_rank > b:
            problems.append(f"skip-top {self.skip_top} leaves no rank of window {a}:{b}")
        if problems:
            raise MmbenchError("mining recipe: " + "; ".join(problems))

    @property
    def first_rank(self) -> int:
        """The first rank sampled: ``max(A, skip_top + 1)``."""
        return max(self.window[0], self.skip_top + 1)

    @property
    def last_rank(self) -> int:
        return self.window[1]

    def to_dict(self) -> dict:
        return {**asdict(self), "window": list(self.window), "sampled_ranks": [self.first_rank, self.last_rank]}


def parse_window(text: str) -> tuple[int, int]:
    """``"A:B"`` -> ``(A, B)``; anything else is a :class:`ValueError` saying what was expected."""
    a, sep, b = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(a), int(b)
    except ValueError:
        raise ValueError(f"window {text!r}: expected two ranks A:B, e.g. 46:50") from None


def query_rng(seed: int, qid: str) -> np.random.Generator:
    """The generator of one query: seeded by ``seed`` and the first 8 bytes of sha256(qid)."""
    digest = int.from_bytes(hashlib.sha256(qid.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def mine_negatives(qids: Sequence[str], ranked: Sequence[Sequence[str]], positives: Mapping[str, set],
                   modality_of: Callable[[str], str | None], target: str, recipe: MiningRecipe, *,
                   content_of: Callable[[str], object] | None = None,
                   skip_identical_ids: bool = False) -> dict[str, list[str]]:
    """``{qid: negatives in rank order}`` by the module docstring's rule: ``ranked[i]`` holds query
    ``qids[i]``'s candidate ids in rank order (rank 1 first); ``modality_of(cid)`` a candidate's
    canonical modality (None: unknown, never taken), ``target`` the task's candidate modality;
    ``content_of(cid)`` a candidate's content key (None: content not compared). A query without
    positives gets no negatives."""
    lo, hi = recipe.first_rank, recipe.last_rank
    out: dict[str, list[str]] = {}
    for qid, row in zip(qids, ranked):
        pos = positives.get(qid, set())
        if not pos:                           # unjudged: any candidate may be relevant
            out[qid] = []
            continue
        pos_content = {content_of(p) for p in pos} - {None} if content_of is not None else set()
        eligible = [cid for cid in row[lo - 1: hi]
                    if cid not in pos and modality_of(cid) == target
                    and not (skip_identical_ids and cid == qid)
                    and not (pos_content and content_of(cid) in pos_content)]
        if len(eligible) > recipe.per_query:
            picked = query_rng(recipe.seed, qid).choice(len(eligible), size=recipe.per_query, replace=False)
            eligible = [eligible[i] for i in sorted(picked.tolist())]
        out[qid] = eligible
    return out


# ------------------------------------------------------------------------------ from a results folder
@dataclass
class MiningResult:
    """What :func:`mine` wrote."""

    task: str
    family: str
    output: Path
    recipe_path: Path
    queries: int
    queries_with_negatives: int
    negatives: int
    short_queries: int          # queries with fewer than per_query negatives (the window had too few)


def find_record(results: Path, task: str) -> tuple[Path, dict]:
    """The task record ``<results>/<task>.json`` (``results`` a run folder, or the record itself), read
    strictly (:func:`mmbench.results.records.read_task_result`)."""
    from mmbench.results.layout import record_file
    from mmbench.results.records import check_name, read_task_result

    results = Path(results)
    path = results if results.is_file() else results / record_file(check_name(Path("--task"), "value", task))
    if not path.is_file():
        where = f"{results} holds no {record_file(task)}" if results.is_dir() else f"{results} not found"
        raise MmbenchError(f"{where}: RESULTS must be a run folder <output>/<model>/<revision>/<suite> "
                           "(or a task record in one) that holds the task")
    record = read_task_result(path)
    if record["task"]["name"] != task:
        raise DataError(path, f"the record is of task {record['task']['name']!r}, not {task!r}", field="task.name")
    if "rerank" in record:
        raise MmbenchError(f"{path}: a rerank stage's record; mine reads a first stage's run (its run folder)")
    return path, record


def run_config(path: Path, record: dict, data_root: Path | None = None):
    """The :class:`~mmbench.config.RunConfig` the record was written with (``provenance.config``;
    keys this version does not know are left out), with ``data_root`` when given."""
    from mmbench.config import RunConfig

    config = (record.get("provenance") or {}).get("config")
    if not isinstance(config, dict):
        raise DataError(path, "missing; expected the run's configuration (an object)", field="provenance.config")
    known = {f.name for f in fields(RunConfig)}
    kwargs = {k: v for k, v in config.items() if k in known}
    for key in ("data_root", "mini_root", "output", "cache_dir"):
        if kwargs.get(key) is not None:
            kwargs[key] = Path(kwargs[key])
    if "tasks" in kwargs:
        kwargs["tasks"] = tuple(kwargs["tasks"] or ())
    if "model_options" in kwargs:
        kwargs["model_options"] = tuple((kwargs["model_options"] or {}).items())
    if data_root is not None:
        kwargs["data_root"] = Path(data_root)
    try:
        return RunConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise DataError(path, f"the run's configuration cannot be read back ({exc})", field="provenance.config") from None


def _check_fingerprints(path: Path, record: dict, name: str, fingerprints: dict, roles: Sequence[str]) -> None:
    recorded = (record.get("provenance") or {}).get("data_fingerprints") or {}
    for role in roles:
        if role in recorded and role in fingerprints and recorded[role] != fingerprints[role]:
            raise MmbenchError(f"{path}: task {name!r}: its {role} file changed since the run (sha256 "
                               f"{str(recorded[role])[:12]} in the record, {fingerprints[role][:12]} now); "
                               "negatives must be judged against the data the run ranked: run it again")


class _PoolIndex:
    """Candidate id -> modality and content (modality, text, image file), over the pool the run
    searched (a local pool, or the suite's global pool)."""

    def __init__(self, tables: Sequence):
        from mmbench.data.types import canonical_modality

        self.rows: dict[str, tuple] = {}
        for t in tables:
            for cid, modality, text, image in zip(t.ids, t.modalities, t.texts, t.image_paths):
                self.rows.setdefault(cid, (canonical_modality(modality), text,
                                           str(Path(t.root) / image) if image else None))

    def modality(self, cid: str) -> str | None:
        row = self.rows.get(cid)
        return row[0] if row else None

    def content(self, cid: str):
        return self.rows.get(cid)


def mine(results: Path, task: str, out: Path, recipe: MiningRecipe, *, data_root: Path | None = None) -> MiningResult:
    """Mine ``task``'s run in the run folder ``results`` into ``out`` (module docstring)."""
    from mmbench.catalog import suites, tasks
    from mmbench.data.types import canonical_modality
    from mmbench.pipeline.plan import load_global_pool, load_task_data
    from mmbench.results.records import run_file_problem
    from mmbench.results.trec import read_run
    from mmbench.util.io import atomic_open, write_json

    path, record = find_record(results, task)
    spec = tasks().get(task)
    if spec.loader not in FORMATS:
        raise MmbenchError(f"task {task!r} is of task family {spec.loader!r}; mine writes "
                           + " and ".join(f"{f} ({fmt})" for f, fmt in FORMATS.items()) + " tasks")
    folder = path.parent
    problem = run_file_problem(folder, record)
    if problem:
        raise MmbenchError(f"{problem}: mine reads the run file written with {path.name}")
    files = record.get("files") or {}
    if not isinstance(files.get("run"), str):
        raise DataError(path, "missing; expected the name of the run file", field="files.run")
    depth = files.get("run_depth")
    if isinstance(depth, int) and recipe.last_rank > depth:
        raise MmbenchError(f"window ends at rank {recipe.last_rank}, but {files.get('run')} holds {depth} hits per "
                           f"query (run with --run-depth {recipe.last_rank} or --run-depth all), or narrow --window")
    config = run_config(path, record, data_root)
    global_pool = None
    if record.get("pool") == "global":           # the pool the run searched, loaded as the run loads it
        if not config.suite:
            raise DataError(path, "a global-pool record without its suite", field="provenance.config.suite")
        suite = suites().get(config.suite)
        global_pool = load_global_pool(suite, [tasks().get(n) for n in suite.tasks], config)
    data = load_task_data(spec, config, global_pool)
    _check_fingerprints(path, record, task, data.fingerprints, ("queries", "qrels", "pool"))
    index = _PoolIndex([data.pool])

    run_path = folder / files["run"]
    qids, ranked, _ = read_run(run_path)
    positives = {q: {d for d, rel in judged.items() if rel > 0} for q, judged in data.qrels.items()}
    mined = mine_negatives(qids, ranked, positives, index.modality, canonical_modality(spec.candidate_modality),
                           recipe, content_of=index.content, skip_identical_ids=data.ignore_identical_ids)

    out = Path(out)
    output = out / f"{task}.hard_negatives.jsonl"
    lines = (_mbeir_lines(spec, config, mined) if spec.loader == "mbeir"
             else _beir_lines(data.queries.ids, positives, mined))
    digest = hashlib.sha256()
    n_queries = with_negatives = n_negatives = short = 0
    with atomic_open(output) as f:
        for qid, line in lines:
            negatives = mined.get(qid, [])
            n_queries += 1
            with_negatives += bool(negatives)
            n_negatives += len(negatives)
            short += len(negatives) < recipe.per_query
            text = line + "\n"
            digest.update(text.encode("utf-8"))
            f.write(text)
    result = MiningResult(task, spec.loader, output, out / f"{task}.recipe.json", n_queries, with_negatives,
                          n_negatives, short)
    write_json(result.recipe_path, _recipe_file(result, recipe, spec, record, path, run_path, digest.hexdigest()))
    return result


def _mbeir_lines(spec, config, mined: dict[str, list[str]]):
    """The task's query file as shipped, each object with ``neg_cand_list`` replaced."""
    from mmbench.catalog import task_family
    from mmbench.data.lines import iter_json_objects

    root = task_family(spec).data_root(spec, config)
    for _, obj in iter_json_objects(Path(root) / spec.files.queries):
        qid = obj["qid"]
        yield qid, json.dumps({**obj, "neg_cand_list": mined.get(qid, [])}, ensure_ascii=False)


def _beir_lines(query_ids: Sequence[str], positives: Mapping[str, set], mined: dict[str, list[str]]):
    for qid in query_ids:
        yield qid, json.dumps({"query-id": qid, "positives": sorted(positives.get(qid, ())),
                               "negatives": mined.get(qid, [])}, ensure_ascii=False)


def _recipe_file(result: MiningResult, recipe: MiningRecipe, spec, record: dict, record_path: Path,
                 run_path: Path, output_sha256: str) -> dict:
    import mmbench

    prov = record.get("provenance") or {}
    model = record.get("model") or {}
    return {
        "schema": RECIPE_SCHEMA,
        "task": spec.name,
        "family": spec.loader,
        "format": FORMATS[spec.loader],
        "recipe": {**recipe.to_dict(), "target_modality": spec.candidate_modality,
                   "rule": "ranks in sampled_ranks; not a positive (qrels relevance > 0) nor a copy of one; "
                           "the task's candidate modality; per_query drawn without replacement by "
                           "numpy default_rng([seed, sha256(qid)[:8] little-endian]); listed in rank order; "
                           "a query without positives gets none"},
        "output": {"file": result.output.name, "sha256": output_sha256, "queries": result.queries,
                   "queries_with_negatives": result.queries_with_negatives, "negatives": result.negatives,
                   "short_queries": result.short_queries},
        "source": {"record": str(record_path), "model": model.get("name"), "revision": model.get("revision"),
                   "suite": record.get("suite"), "pool": record.get("pool"), "config_hash": prov.get("config_hash"),
                   "run_file": run_path.name, "run_sha256": file_sha256(run_path),
                   "run_depth": (record.get("files") or {}).get("run_depth"),
                   "data_fingerprints": prov.get("data_fingerprints")},
        "mmbench": {"version": mmbench.__version__,
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    }


__all__ = ["FORMATS", "MiningRecipe", "MiningResult", "find_record", "mine", "mine_negatives", "parse_window",
           "query_rng", "run_config"]
