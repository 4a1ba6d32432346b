"""Orchestration of one run: load -> embed (cached) -> search -> score -> write.

The library never prints: progress and messages go to a :class:`Reporter` (the CLI renders them
with rich; :class:`NullReporter` is silent).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mmbench.catalog import get_model, loaders, resolve_tasks, tasks
from mmbench.config import RunConfig
from mmbench.data.types import ItemTable, TaskData
from mmbench.embeddings.cache import BackgroundWriter, EmbeddingKey, embed_table
from mmbench.errors import DataError, MmbenchError
from mmbench.models.loading import hub_miss_error, is_hub_miss, loader_options, with_model_options
from mmbench.models.base import ModelMeta, l2_normalize
from mmbench.results.provenance import environment
from mmbench.registry import import_target
from mmbench.results.records import (
    load_task_result,
    result_dir,
    run_file_problem,
    trec_tag,
    write_per_query,
    write_summary,
    write_task_result,
    write_trec,
)
from mmbench.data.specs import TaskSpec, parse_metric

Progress = Callable[[int, int], None]

METRIC_NOTES = {
    "hit@k": "1 if any relevant candidate is in the top k (trec_eval success@k); what M-BEIR/UniIR tables call Recall@k",
    "recall@k": "relevant candidates in the top k / relevant candidates in qrels (trec_eval recall_k)",
}


class Reporter:
    """Receives progress and messages; the default implementation ignores them."""

    def progress(self, description: str, total: int) -> Progress:
        return lambda done, total: None

    def message(self, text: str) -> None:
        pass


NullReporter = Reporter


@dataclass
class TaskOutcome:
    task: str
    main_metric: str
    main_score: float
    metrics: dict[str, float]
    n_queries: int
    n_candidates: int
    reused: bool
    path: Path


@dataclass
class SuiteOutcome:
    suite: str
    pool: str
    model: str
    revision: str
    directory: Path
    tasks: list[TaskOutcome] = field(default_factory=list)
    average: float | None = None
    summary_path: Path | None = None
    experiment: SuiteOutcome | None = None      # the rerank stage's outcome (--rerank), if any


class LazyEncoder:
    """Loads the model on first use only (a fully cached run never loads weights)."""

    def __init__(self, meta: ModelMeta, config: RunConfig, reporter: Reporter):
        self.meta, self.config, self.reporter = meta, config, reporter
        self._encoder = None

    def __call__(self):
        if self._encoder is None:
            self.reporter.message(f"loading model {self.meta.name} ({self.meta.revision})")
            _quiet_transformers()
            factory = import_target(self.meta.loader)
            accepted = inspect.signature(factory).parameters
            extra = {"device": self.config.device, "cache_dir": Path(self.config.cache_dir) / "assets"}
            opts = dict(self.meta.options)
            for key, value in extra.items():
                if key in accepted:          # only options the factory names explicitly
                    opts.setdefault(key, value)
            if "trust_remote_code" in accepted:    # the user's flag decides, never an option
                opts["trust_remote_code"] = bool(self.config.trust_remote_code)
            try:
                self._encoder = factory(self.meta, **opts)
            except TypeError as exc:
                if "unexpected keyword argument" not in str(exc) or not self.config.model_options:
                    raise
                raise MmbenchError(f"model {self.meta.name!r}: {exc} (from --model-option; this loader takes "
                                   f"{loader_options(factory)})") from None
            except OSError as exc:
                if not is_hub_miss(exc):
                    raise
                raise hub_miss_error(self.meta, opts, exc) from None
        return self._encoder

    def settings(self) -> dict | None:
        return self._encoder.settings() if self._encoder is not None else None


def _quiet_transformers() -> None:
    """transformers draws its own weight-loading bar; the CLI has its own progress display."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()


def _data_root(spec: TaskSpec, config: RunConfig) -> Path | None:
    if spec.loader == "mteb":                       # None = the HF hub (through mteb's loader)
        from mmbench.data.mteb_loader import data_root_for

        return data_root_for(spec, config)
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


def load_task_data(spec: TaskSpec, config: RunConfig) -> TaskData:
    load = loaders().get(spec.loader)
    return load(spec, _data_root(spec, config), instructions=config.instructions, seed=config.seed)


def with_model_instructions(data: TaskData, meta: ModelMeta, config: RunConfig) -> TaskData:
    """An MTEB task whose queries have no instruction (mteb gives the task no prompt) takes the model's
    own instruction for it (``meta.task_instructions``), as the model's authors evaluated it; unchanged
    otherwise, and always with ``--instructions none``."""
    if (data.mteb is None or meta.task_instructions is None or not meta.uses_instructions
            or data.queries.instructions is not None or config.instructions == "none"):
        return data
    instruction = import_target(meta.task_instructions)(data.mteb["name"])
    if not instruction:
        return data
    queries = replace(data.queries, instructions=[instruction] * len(data.queries))
    note = f"query instruction from {meta.name}'s table (mteb has no prompt for this task): {instruction!r}"
    return replace(data, queries=queries, notes=[*data.notes, note])


def _query_key(meta: ModelMeta, config: RunConfig, data: TaskData) -> EmbeddingKey:
    h = hashlib.sha256(data.fingerprints["queries"].encode())
    h.update(json.dumps(data.queries.instructions).encode())
    policy = f"random:{config.seed}" if config.instructions == "random" else config.instructions
    return EmbeddingKey(meta.name, meta.revision, "query", policy, h.hexdigest(), config.embed_dtype)


def _pool_key(meta: ModelMeta, config: RunConfig, data: TaskData) -> EmbeddingKey:
    return EmbeddingKey(meta.name, meta.revision, "candidate", "n/a", data.pool_key, config.embed_dtype)


@dataclass
class Pool:
    """The candidates searched by a task: one local pool, or the union of the suite's distinct pools."""

    label: str
    table: ItemTable
    blocks: list[np.ndarray]           # normalised embeddings, block by block (row order = table)
    encode_seconds: float
    from_cache: int = 0                # candidates whose embeddings came from the cache
    candidate_ids: object = None       # metrics.CandidateIds: id -> index and tie-break ranks, built once

    @property
    def modalities(self) -> np.ndarray:
        return np.asarray(self.table.modalities)


def run(config: RunConfig, reporter: Reporter | None = None) -> SuiteOutcome:
    """Evaluate ``config.model`` on the configured suite or tasks and write the results."""
    from mmbench.metrics.scoring import CandidateIds, Run, evaluate
    from mmbench.metrics.modality import modality_report
    from mmbench.search import describe_backend, search

    reporter = reporter or Reporter()
    meta = with_model_options(get_model(config.model), config.model_options)
    if config.trust_remote_code and meta.options.get("trust_remote_code") is False:
        # the remote-code path is a different implementation: keep its cache and results apart
        meta = replace(meta, revision=meta.revision + "+remote-code")
    suite, specs = resolve_tasks(config.suite, list(config.tasks) or None)
    pool_mode = suite.pool if suite else "local"
    pool_specs = [tasks().get(n) for n in suite.tasks] if pool_mode == "global" else specs
    for spec in specs:                                  # refuse before any work starts
        meta.check_task(spec.name, spec.query_modality, spec.candidate_modality)
    for spec in pool_specs:
        meta.check_task(f"{spec.name} (candidates of the global pool)", spec.candidate_modality, spec.candidate_modality)
    if config.rerank:                                   # an unusable reranker is refused before any work too
        from mmbench.rerank.stage import check_rerank

        check_rerank(config)

    label = suite.name if suite else "local"
    out_dir = result_dir(config.output, meta.name, meta.revision, label)
    outcome = SuiteOutcome(label, pool_mode, meta.name, meta.revision, out_dir)
    encoder = LazyEncoder(meta, config, reporter)
    config_hash = config.config_hash()
    loaded: dict[str, TaskData] = {}             # as the loaders give it (a reranker applies its own model's table)
    data: dict[str, TaskData] = {}               # ... and as this model's queries are encoded
    for spec in {s.name: s for s in [*specs, *pool_specs]}.values():
        loaded[spec.name] = load_task_data(spec, config)
        data[spec.name] = with_model_instructions(loaded[spec.name], meta, config)

    pools: dict[str, Pool] = {}
    model_settings: dict = {}

    def embed(table: ItemTable, key: EmbeddingKey, label: str, dtype: str = "float32"):
        """Embeddings as searched (unit rows for cosine models), through the cache: float32, or for a
        pool with ``--embed-dtype float16`` float16 (half the memory; searched in float32 block by block)."""
        emb, stats = embed_table(table, key, encoder, cache_dir=config.cache_dir, batch_size=config.batch_size,
                                 chunk_size=config.chunk_size, overwrite=config.overwrite,
                                 progress=reporter.progress(label, len(table)), writer=writer,
                                 normalize=meta.similarity == "cosine", normalized_dtype=dtype,
                                 message=reporter.message)
        return np.asarray(emb, dtype), stats

    def local_pool(spec: TaskSpec) -> Pool:
        td = data[spec.name]
        if td.pool_key not in pools:
            emb, stats = embed(td.pool, _pool_key(meta, config, td), f"{spec.name}: encode candidates",
                               dtype=config.embed_dtype)
            pools[td.pool_key] = Pool(spec.name, td.pool, [emb], stats.seconds, stats.cached)
        return pools[td.pool_key]

    def global_pool() -> Pool:
        if "global" not in pools:
            parts = []
            for spec in pool_specs:
                p = local_pool(spec)
                if all(p is not q for q in parts):     # identical pool files enter the union once
                    parts.append(p)
            table = ItemTable.concat([p.table for p in parts], source="union")
            if len(set(table.ids)) != len(table.ids):
                raise DataError("global pool", "candidate ids are not unique across the union of the local pools")
            pools["global"] = Pool("global", table, [b for p in parts for b in p.blocks],
                                   sum(p.encode_seconds for p in parts), sum(p.from_cache for p in parts))
        return pools["global"]

    # cache chunks and result files are written in the background, in submission order; leaving the
    # block waits for them (also on failure)
    with BackgroundWriter() as writer:
        for spec in specs:
            td = data[spec.name]
            path = out_dir / f"{spec.name}.json"
            previous = None if config.overwrite else load_task_result(path)
            top_k = config.top_k or spec.top_k
            if previous and previous.get("provenance", {}).get("config_hash") == config_hash \
                    and previous.get("provenance", {}).get("data_fingerprints") == td.fingerprints:
                problem = run_file_problem(out_dir, previous)
                if problem is None:
                    reporter.message(f"{spec.name}: finished result found, reused ({path})")
                    outcome.tasks.append(_outcome_from_record(spec, previous, path, reused=True))
                    continue
                reporter.message(f"{spec.name}: finished result found, but its {problem}: computed again")

            pool = global_pool() if pool_mode == "global" else local_pool(spec)
            if pool.candidate_ids is None:
                pool.candidate_ids = CandidateIds(pool.table.ids)
            q_emb, q_stats = embed(td.queries, _query_key(meta, config, td), f"{spec.name}: encode queries")
            t1 = time.perf_counter()
            indices, scores = search(q_emb, pool.blocks, top_k, tiebreak=pool.candidate_ids.ranks, device=config.device,
                                     memory_budget_bytes=int(config.memory_budget_gb * 1024**3),
                                     progress=reporter.progress(f"{spec.name}: search {len(pool.table):,} candidates",
                                                                len(pool.table)))
            if td.ignore_identical_ids:                 # mteb: after search, before scoring
                from mmbench.data.mteb_loader import drop_identical_ids

                indices, scores = drop_identical_ids(list(td.queries.ids), pool.candidate_ids, indices, scores)
            t2 = time.perf_counter()
            ranked = Run(list(td.queries.ids), pool.candidate_ids, indices, scores)
            # the run file is written by the background writer while the hits are scored; the task's
            # JSON (what marks it finished) is submitted after it, so it never names a missing run file,
            # and records its size (the run file is not fsynced: a reuse checks the size instead)
            run_file = writer.submit(write_trec, out_dir / f"{spec.name}.trec", ranked.query_ids, pool.candidate_ids,
                                     indices, scores, trec_tag(meta.name), fsync=False)
            scored = evaluate(ranked, td.qrels, spec.metrics)
            ks = sorted({parse_metric(spec.main_metric)[1], 10, min(top_k, 100)} - {0})
            modality = modality_report(indices, pool.modalities, spec.candidate_modality, [k for k in ks if k <= top_k])
            t3 = time.perf_counter()
            model_settings = encoder.settings() or q_stats.settings or model_settings

            writer.submit(write_per_query, out_dir / f"{spec.name}.per_query.tsv", scored.query_ids, scored.per_query)
            record = {
                "task": {"name": spec.name, "source": spec.source, "dataset": spec.dataset,
                         "dataset_id": spec.dataset_id, "task_id": spec.task_id,
                         "query_modality": spec.query_modality, "candidate_modality": spec.candidate_modality,
                         "domain": spec.domain, "spec_hash": spec.spec_hash()},
                "suite": label,
                "pool": pool_mode,
                "main_metric": spec.main_metric,
                "main_score": round(float(scored.mean[spec.main_metric]), 6),
                "metrics": {m: round(float(v), 6) for m, v in scored.mean.items()},
                "metric_definitions": METRIC_NOTES,
                "n_queries": len(scored.query_ids),
                "n_queries_in_file": len(td.queries),
                "n_candidates": len(pool.table),
                "top_k": top_k,
                "modality_report": modality,
                "timings_s": {"encode_queries": round(q_stats.seconds, 3),
                              "encode_candidates": round(pool.encode_seconds, 3),
                              "queries_from_cache": q_stats.cached, "candidates_from_cache": pool.from_cache,
                              "search": round(t2 - t1, 3),
                              "score": round(t3 - t2, 3)},
                "instructions": {"policy": config.instructions,
                                 "seed": config.seed if config.instructions == "random" else None},
                "model": {**meta.to_dict(), "settings": model_settings or None},
                "search": {**describe_backend(device=config.device), "exact": True,
                           "tie_break": "score descending, then candidate id descending (trec_eval's rule)"},
                "notes": td.notes,
                "files": {"run": f"{spec.name}.trec", "per_query": f"{spec.name}.per_query.tsv"},
                "provenance": {**environment(), "config_hash": config_hash, "config": config.to_dict(),
                               "data_fingerprints": td.fingerprints,
                               "date": datetime.now(timezone.utc).isoformat(timespec="seconds")},
            }
            writer.submit(_write_record, out_dir, spec.name, record, run_file)
            if spec.loader == "mteb":                    # also mteb's own results format
                from mmbench.results.mteb_format import write_mteb_result

                writer.submit(write_mteb_result, config.output, meta, spec, td, scored.mean, record)
            outcome.tasks.append(_outcome_from_record(spec, record, path, reused=False))

    outcome.average, outcome.summary_path = _write_summary(outcome, suite.tasks if suite else tuple(s.name for s in specs), config_hash,
                                                           groups=suite.groups if suite else None)
    if config.rerank:                                   # second stage: reads the run files just written or reused
        from mmbench.rerank.stage import rerank_suite

        outcome.experiment = rerank_suite(outcome, config, reporter, data=loaded)
    return outcome


def _normalise(emb: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """Encoder output as searched: unit rows for cosine models (in place: the caller owns ``emb``).
    The runner gets the same from :func:`embed_table` with ``normalize``."""
    return l2_normalize(emb, inplace=True) if meta.similarity == "cosine" else np.asarray(emb, dtype=np.float32)


def _write_record(directory: Path, task: str, record: dict, run_file: Future) -> None:
    """The task JSON, with the size of its run file (written before it by the same writer)."""
    write_task_result(directory, task, {**record, "files": {**record["files"], "run_bytes": run_file.result()}})


def _outcome_from_record(spec: TaskSpec, record: dict, path: Path, *, reused: bool) -> TaskOutcome:
    return TaskOutcome(spec.name, record["main_metric"], record["main_score"], record["metrics"],
                       record["n_queries"], record["n_candidates"], reused, path)


def _write_summary(outcome: SuiteOutcome, suite_tasks: tuple[str, ...], config_hash: str, groups: dict | None = None):
    """Headlines of every suite task with a result of this configuration, and their plain mean (UniIR's average)."""
    headlines = {}
    for name in suite_tasks:
        rec = load_task_result(outcome.directory / f"{name}.json")
        if rec and rec.get("provenance", {}).get("config_hash") == config_hash:
            headlines[name] = {"main_metric": rec["main_metric"], "main_score": rec["main_score"]}
    units = _group_units(headlines, groups or {})
    average = round(float(np.mean(list(units.values()))), 6) if units else None
    summary = {"suite": outcome.suite, "pool": outcome.pool, "model": outcome.model, "revision": outcome.revision,
               "config_hash": config_hash, "average_main_score": average,
               "average_definition": "plain mean of the task headline scores (as UniIR averages its 16 tasks)",
               "complete": len(headlines) == len(suite_tasks), "missing_tasks": [t for t in suite_tasks if t not in headlines],
               "tasks": headlines, **({"groups": {g: units.get(g) for g in groups}} if groups else {}),
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return average, write_summary(outcome.directory, summary)


def _group_units(headlines: dict, groups: dict) -> dict[str, float]:
    """Scores that enter the suite average: each group's mean of its members (as mteb averages
    CQADupStack's forums) counts as one task; other tasks count as themselves."""
    grouped = {m for members in groups.values() for m in members}
    units = {n: h["main_score"] for n, h in headlines.items() if n not in grouped}
    for g, members in groups.items():
        present = [headlines[m]["main_score"] for m in members if m in headlines]
        if present:
            units[g] = round(float(np.mean(present)), 6)
    return units
