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
dropped (pytrec_eval would ignore them), both counted in ``notes``.

After search, a task with mteb's ``ignore_identical_ids`` drops each retrieved document whose id is the
query's (:func:`drop_identical_ids`); after scoring, the task's scores are also written in mteb's own
results format (:func:`mmbench.results.mteb_format.write_mteb_result`). A model with its own table of
query instructions (``ModelMeta.task_instructions``) gets it for the tasks mteb gives no prompt
(:meth:`MtebFamily.with_model_instructions`).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from mmbench.data.families.base import BaseFamily
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


def _read_table(paths: list[Path]):
    import pandas as pd

    frames = []
    for p in paths:
        name = p.name
        if name.endswith(".parquet"):
            frames.append(pd.read_parquet(p))
        elif name.endswith((".jsonl", ".jsonl.gz", ".json")):
            frames.append(pd.read_json(p, lines=name.endswith((".jsonl", ".jsonl.gz")), dtype=False))
        elif name.endswith((".tsv", ".csv")):
            frames.append(pd.read_csv(p, sep="\t" if name.endswith(".tsv") else ",", dtype=str,
                                      keep_default_na=False, quoting=3))
        else:
            raise DataError(p, "unsupported data file type (expected parquet, jsonl or tsv)")
    if not frames:
        raise DataError(paths, "no data files")
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def hf_configs(folder: Path) -> dict[str, dict[str, list[str]]]:
    """``{config_name: {split: [glob, ...]}}`` from the README's YAML front matter."""
    import yaml

    text = (folder / "README.md").read_text(encoding="utf-8")
    m = re.match(r"^---\s*\n(.*?)\n---", text, re.S)
    if not m:
        raise DataError(folder / "README.md", "no YAML front matter with configs")
    meta = yaml.safe_load(m.group(1)) or {}
    out: dict[str, dict[str, list[str]]] = {}
    for cfg in meta.get("configs", []):
        files = cfg.get("data_files", [])
        if isinstance(files, (str, list)) and (isinstance(files, str) or (files and isinstance(files[0], str))):
            files = [{"split": "train", "path": files}]
        splits = {}
        for entry in files:
            p = entry["path"]
            splits[entry["split"]] = [p] if isinstance(p, str) else list(p)
        out[cfg["config_name"]] = splits
    return out


def _hf_files(folder: Path, configs: dict, names: tuple[str, ...], split: str) -> list[Path]:
    for name in names:
        if name in configs:
            splits = configs[name]
            key = split if split in splits else (next(iter(splits)) if len(splits) == 1 else None)
            if key is None:
                raise DataError(folder, f"config {name!r} has no split {split!r} (has {', '.join(splits)})")
            files = sorted({f for g in splits[key] for f in folder.glob(g)})
            if not files:
                raise DataError(folder, f"config {name!r} split {key!r}: no file matches {splits[key]}")
            return files
    raise DataError(folder / "README.md", f"none of the configs {', '.join(names)} is declared")


def read_local(folder: Path, split: str):
    """(corpus DataFrame [id,title,text], queries DataFrame [id,text], qrels DataFrame, files read)."""
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
    corpus, queries, qrels = (_read_table(files[k]) for k in ("corpus", "queries", "qrels"))
    corpus, queries = (df.rename(columns={"_id": "id"}) if "_id" in df.columns else df for df in (corpus, queries))
    return corpus, queries, qrels, files


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
    import pandas as pd

    task = mteb_task(info["name"])
    try:
        task.load_data()
    except Exception as exc:   # ConnectionError, OfflineModeIsEnabled, HTTP errors ...
        raise missing_data_error(info, None, f"the HF hub could not be reached ({type(exc).__name__})") from None
    subset = task.dataset["default"] if "default" in task.dataset else next(iter(task.dataset.values()))
    data = subset[info["split"]]
    corpus = data["corpus"]
    corpus = pd.DataFrame({"id": list(corpus["id"]),
                           "title": list(corpus["title"]) if "title" in corpus.column_names else [""] * len(corpus),
                           "text": list(corpus["text"])})
    queries = pd.DataFrame({"id": list(data["queries"]["id"]), "text": list(data["queries"]["text"])})
    rows = [(q, d, s) for q, docs in data["relevant_docs"].items() for d, s in docs.items()]
    qrels = pd.DataFrame(rows, columns=["query-id", "corpus-id", "score"])
    return corpus, queries, qrels


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




def document_texts(corpus) -> list[str]:
    """mteb's ``_corpus_to_dict``: ``(title + " " + text).strip()`` if the title is non-empty, else ``text.strip()``."""
    text = corpus["text"].fillna("").astype(str)
    if "title" not in corpus.columns:
        return text.str.strip().tolist()
    title = corpus["title"].fillna("").astype(str)
    joined = (title + " " + text).str.strip()
    return joined.where(title.str.len() > 0, text.str.strip()).tolist()


def _qrels(df, query_ids: set[str], notes: list[str]) -> Qrels:
    q = df["query-id"].astype(str).tolist()
    d = df["corpus-id"].astype(str).tolist()
    s = df["score"].astype(np.int64).tolist() if "score" in df.columns else [1] * len(q)
    qrels: Qrels = {}
    unknown = 0
    for qid, did, score in zip(q, d, s):
        if qid not in query_ids:
            unknown += 1
            continue
        qrels.setdefault(qid, {})[did] = int(score)
    if unknown:
        notes.append(f"{unknown} qrels rows name queries that are not in the query file; ignored (as pytrec_eval does)")
    return qrels


def load_task(spec, root: Path | None, *, instructions: str = "first", seed: int = 2023) -> TaskData:
    info = task_info(spec)
    fingerprints: dict[str, str] = {}
    if info.get("builtin"):
        if root is None:
            raise DataError(spec.path, "builtin mteb-format task needs its folder")
        corpus, queries, qrels_df, files = read_local(Path(root), info["split"])
        source = str(root)
    elif root is not None:
        folder = next((p for p in candidate_folders(Path(root), info) if p.is_dir() and detect_layout(p)), None)
        if folder is None:
            if _hub_offline():
                raise missing_data_error(info, Path(root), "the HF hub is disabled (HF_HUB_OFFLINE=1)")
            corpus, queries, qrels_df = read_hub(info)
            files, source = None, f"hf://{info['path']}@{info['revision']}"
        else:
            corpus, queries, qrels_df, files = read_local(folder, info["split"])
            source = str(folder)
    else:
        if _hub_offline():
            raise missing_data_error(info, None, "the HF hub is disabled (HF_HUB_OFFLINE=1)")
        corpus, queries, qrels_df = read_hub(info)
        files, source = None, f"hf://{info['path']}@{info['revision']}"
    if files is not None:
        for role, key in (("candidates", "corpus"), ("queries", "queries"), ("qrels", "qrels")):
            fingerprints[role] = _fingerprint(files[key])
    else:
        for role in ("candidates", "queries", "qrels"):
            fingerprints[role] = hashlib.sha256(f"{info['path']}@{info['revision']}:{info['split']}:{role}".encode()).hexdigest()

    notes: list[str] = []
    query_ids_all = queries["id"].astype(str).tolist()
    qrels = _qrels(qrels_df, set(query_ids_all), notes)
    keep = [i for i, q in enumerate(query_ids_all) if qrels.get(q)]
    if len(keep) < len(query_ids_all):
        notes.append(f"{len(query_ids_all) - len(keep)} queries without qrels dropped (as mteb does)")
    qrels = {q: r for q, r in qrels.items() if r}
    q_texts_all = queries["text"].fillna("").astype(str).tolist()
    q_ids = [query_ids_all[i] for i in keep]
    q_texts = [q_texts_all[i] for i in keep]
    prompt = query_prompt(info["prompt"])
    n = len(q_ids)
    query_table = ItemTable(q_ids, ["text"] * n, q_texts, [None] * n, root=Path("."), raw_texts=list(q_texts),
                            instructions=[prompt] * n if prompt and instructions != "none" else None,
                            source=f"{source} (queries)")
    doc_ids = corpus["id"].astype(str).tolist()
    if len(set(doc_ids)) != len(doc_ids):
        raise DataError(source, "corpus ids are not unique")
    docs = document_texts(corpus)
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
