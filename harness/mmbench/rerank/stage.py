"""The second stage: rerank the top-k of a first-stage run read from the results folder.

``mmbench run --model M --suite S --rerank R --rerank-top-k K`` first runs (or, when its finished result
of the same configuration exists, reuses) the first stage, then :func:`rerank_suite`:

1. reads ``<output>/<model>/<revision>/<suite>/<task>.trec`` (never re-encodes the first stage);
2. scores the (query, candidate) pairs of each query's top K with the reranker;
3. orders each row: the scored pairs of the top K by reranker score (ties: candidate id descending, the one
   tie rule), then the pairs of the top K the reranker cannot read (e.g. an image in a global pool for a text
   reranker) and every position beyond K, in first-stage order. Run-file scores are the reranker's, rounded to
   6 decimals before ordering; the rest keep their first-stage scores shifted below the lowest reranker
   score of the row (ties among them: candidate id descending, as trec_eval reads the first-stage file).
   Those scores are then written as float32 by :func:`mmbench.results.trec.rule_safe_scores`, which
   moves a score one float32 step down where float32 cannot tell it from the one ranked above it, so
   the file re-sorted by trec_eval's rule gives the rank column's order at every rank;
4. evaluates it with :mod:`mmbench.metrics.scoring` and writes the first stage's files (``<task>.json``, ``.trec``,
   ``.per_query.tsv``, ``summary.json``) under ``<suite>/experiments/rerank=<reranker>__top<K>/``, with the
   first stage's config hash and the sha256 of its run file, and the reranker's metadata and settings.

The candidates are read from the pool the first stage searched, loaded as it loads it: a task's own
pool, or for a global-pool run the suite's global pool (:func:`mmbench.pipeline.plan.load_global_pool`),
so a ``--tasks`` subset of a global suite reads no other task's queries.

Tasks whose query or candidate modality the reranker cannot read are skipped (listed in the summary). A
finished experiment result with the same experiment hash and first-stage run file is reused.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mmbench.catalog import get_model, resolve_tasks, tasks
from mmbench.config import RunConfig
from mmbench.data.types import ItemTable, PoolData, TaskData
from mmbench.embeddings import ids_digest
from mmbench.errors import IncompatibleModelError, MmbenchError
from mmbench.pipeline.plan import load_global_pool, load_task_data
from mmbench.pipeline.score import provenance, score_run, task_record
from mmbench.pipeline.types import Reporter, SuiteOutcome, TaskOutcome
from mmbench.pipeline.write import Immediate, finish_task, start_run_file
from mmbench.rerank.base import Reranker, RerankerMeta, RerankJob, load_reranker, parse_reranker
from mmbench.results.layout import experiment_dir, per_query_file, record_file, run_file, slug, trec_tag
from mmbench.results.records import load_task_result, run_file_problem, write_summary
from mmbench.results.trec import read_run, rule_safe_scores

ORDER_RULE = ("top-k: scored pairs by reranker score descending, then candidate id descending; below them the "
              "unscorable pairs of the top-k and every position beyond k, in first-stage order")


def experiment_name(reranker: str, top_k: int) -> str:
    return f"rerank={slug(reranker)}__top{top_k}"


def experiment_hash(first_stage_hash: str, meta: RerankerMeta, top_k: int) -> str:
    blob = {"first_stage": first_stage_hash, "reranker": meta.name, "revision": meta.revision, "top_k": top_k}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def check_rerank(config: RunConfig) -> RerankerMeta:
    """Parse ``config.rerank`` and refuse before any work when it can score none of the run's tasks."""
    meta = parse_reranker(config.rerank)
    if config.rerank_top_k < 1:
        raise MmbenchError(f"--rerank-top-k must be >= 1, got {config.rerank_top_k}")
    _, specs = resolve_tasks(config.suite, list(config.tasks) or None)
    if not any(meta.can_score(s.query_modality, s.candidate_modality) for s in specs):
        raise IncompatibleModelError(
            f"reranker {meta.name!r} reads {', '.join(meta.modalities)} items but no task of this run fits it "
            f"({', '.join(f'{s.name}: {s.query_modality}->{s.candidate_modality}' for s in specs)})")
    return meta


def _run_command(config: RunConfig) -> str:
    sel = f"--suite {config.suite}" if config.suite else ""
    if config.tasks:
        sel += f" --tasks {','.join(config.tasks)}"
    return f"mmbench run --model {config.model} {sel.strip()} --output {config.output}"


def read_first_stage(path: Path, config: RunConfig) -> tuple[list[str], list[list[str]], list[list[float]]]:
    """Query ids and, per query, candidate ids and scores in the file's rank order
    (:func:`mmbench.results.trec.read_run`); a missing file names the command that writes it."""
    if not path.is_file():
        raise MmbenchError(f"first-stage run {path} not found; produce it with `{_run_command(config)}`")
    return read_run(path)


class _Pools:
    """id -> (table, row) over the pool a task searched (its local pool, or the suite's global pool)."""

    def __init__(self, tables: list[ItemTable], fingerprints: list[str]):
        self.tables, self.fingerprints = tables, fingerprints
        self.where: dict[str, tuple[int, int]] = {}
        for t, table in enumerate(tables):
            for r, cid in enumerate(table.ids):
                self.where.setdefault(cid, (t, r))

    def modality(self, cid: str) -> str:
        t, r = self.where[cid]
        return self.tables[t].modalities[r]

    def subset(self, ids: list[str]) -> ItemTable:
        out = ItemTable([], [], [], [], root=Path("/"), source="rerank candidates")
        for cid in ids:
            t, r = self.where[cid]
            table = self.tables[t]
            out.ids.append(cid)
            out.modalities.append(table.modalities[r])
            out.texts.append(table.texts[r])
            p = table.image_paths[r]
            out.image_paths.append(str(table.root / p) if p else None)
        return out

    def fingerprint(self, ids: list[str]) -> str:
        return hashlib.sha256(json.dumps([self.fingerprints, ids_digest(ids)]).encode()).hexdigest()


def rerank_order(first_scores: np.ndarray, scored: np.ndarray, new_scores: np.ndarray,
                 tiebreak: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column order and run-file scores of each row (see the module docstring for the rule); the
    scores are float32 in the new order, made by :func:`~mmbench.results.trec.rule_safe_scores` so that
    trec_eval's rule reproduces that order at every rank.

    All arrays are (Q, depth) in first-stage order: ``scored`` marks pairs with a reranker score
    ``new_scores``; ``tiebreak`` is the candidate id rank; ``valid`` marks filled slots.
    """
    from mmbench.search.ties import rule_order

    q, depth = first_scores.shape
    position = np.broadcast_to(np.arange(depth), (q, depth))
    group = np.where(scored, 0, np.where(valid, 1, 2))       # reranked, then the rest, then empty slots
    key_score = np.where(scored, new_scores, np.where(valid, first_scores, 0.0))
    key_tie = np.where(valid, tiebreak, -1 - position)       # empty slots keep their position order
    order = rule_order(key_score, key_tie, groups=group)
    rest = valid & ~scored
    any_scored = scored.any(axis=1)
    floor = np.where(scored, new_scores, np.inf).min(axis=1) - 1.0
    top_rest = np.where(rest, first_scores, -np.inf).max(axis=1)
    offset = np.where(any_scored & np.isfinite(top_rest), np.round(floor - top_rest, 6), 0.0)
    out_scores = np.where(scored, new_scores, np.where(valid, first_scores + offset[:, None], -np.inf))
    ordered_tiebreak = np.take_along_axis(np.where(valid, tiebreak, -1), order, axis=1)
    return order, rule_safe_scores(np.take_along_axis(out_scores, order, axis=1), ordered_tiebreak)


def rerank_suite(outcome: SuiteOutcome, config: RunConfig, reporter: Reporter | None = None,
                 data: dict[str, TaskData] | None = None) -> SuiteOutcome:
    """Rerank every task of ``outcome`` (a first stage's); returns the experiment's outcome."""
    reporter = reporter or Reporter()
    meta = check_rerank(config)
    k = config.rerank_top_k
    suite, _ = resolve_tasks(config.suite, list(config.tasks) or None)
    data = dict(data or {})
    global_pool: list[PoolData] = []

    def task_data(name: str) -> TaskData:
        """``data``'s (the first stage's, whose pool is the one it searched), else loaded as the first
        stage loads it: against the suite's global pool (:func:`load_global_pool`, no other task's
        queries read), or against its own pool."""
        if name not in data:
            if outcome.pool == "global" and not global_pool:
                global_pool.append(load_global_pool(suite, [tasks().get(n) for n in suite.tasks], config))
            data[name] = load_task_data(tasks().get(name), config, global_pool[0] if global_pool else None)
        return data[name]

    first_hash = config.config_hash()
    exp_hash = experiment_hash(first_hash, meta, k)
    exp_dir = experiment_dir(outcome.directory, experiment_name(meta.name, k))
    exp = SuiteOutcome(f"{outcome.suite} → rerank {meta.name} top {k}", outcome.pool, outcome.model,
                       outcome.revision, exp_dir)
    state = _Stage(config, meta, get_model(config.model), outcome, exp_dir, exp_hash, reporter)
    pools_cache: dict[str, _Pools] = {}
    skipped: dict[str, str] = {}
    first_scores_of: dict[str, float] = {}

    for first in outcome.tasks:
        spec = tasks().get(first.task)
        if not meta.can_score(spec.query_modality, spec.candidate_modality):
            skipped[spec.name] = f"{spec.query_modality}->{spec.candidate_modality} not readable by {meta.name}"
            reporter.message(f"{spec.name}: skipped by the reranker ({skipped[spec.name]})")
            continue
        trec_path = outcome.directory / run_file(spec.name, config.run_format)   # written or reused just now
        qids, cids, fscores = read_first_stage(trec_path, config)
        trec_sha = hashlib.sha256(trec_path.read_bytes()).hexdigest()
        first_scores_of[spec.name] = first.main_score
        path = exp_dir / record_file(spec.name)
        previous = _reusable(config, exp_dir, path, exp_hash, trec_sha, spec.name, reporter)
        if previous is not None:
            exp.tasks.append(TaskOutcome.from_record(spec.name, previous, path, reused=True))
            continue

        td = task_data(spec.name)             # its pool: the task's own, or the suite's global pool
        if td.pool_key not in pools_cache:
            pools_cache[td.pool_key] = _Pools([td.pool], [td.pool_key])
        record = state.rerank_task(spec, td, first, pools_cache[td.pool_key], trec_path, trec_sha, qids, cids,
                                   fscores)
        exp.tasks.append(TaskOutcome.from_record(spec.name, record, path, reused=False))

    headlines = {t.task: {"main_metric": t.main_metric, "main_score": t.main_score,
                          "first_stage_main_score": first_scores_of[t.task]} for t in exp.tasks}
    exp.average = round(float(np.mean([t.main_score for t in exp.tasks])), 6) if exp.tasks else None
    first_avg = round(float(np.mean(list(first_scores_of.values()))), 6) if first_scores_of else None
    exp.summary_path = write_summary(exp_dir, {
        "suite": outcome.suite, "pool": outcome.pool, "model": outcome.model, "revision": outcome.revision,
        "experiment": experiment_name(meta.name, k), "config_hash": exp_hash, "first_stage_config_hash": first_hash,
        "reranker": meta.to_dict(), "rerank_top_k": k, "average_main_score": exp.average,
        "first_stage_average_main_score": first_avg,
        "average_definition": "plain mean of the headline scores of the reranked tasks (skipped tasks excluded, "
                              "first_stage_average_main_score over the same tasks)",
        "skipped_tasks": skipped, "tasks": headlines,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return exp


def _reusable(config: RunConfig, exp_dir: Path, path: Path, exp_hash: str, trec_sha: str, task: str,
              reporter: Reporter) -> dict | None:
    """A finished rerank record of the same experiment over the same first-stage run file, with its
    own run file as written; None otherwise, or with ``--overwrite``."""
    previous = None if config.overwrite else load_task_result(path)
    if previous and not (previous.get("provenance", {}).get("config_hash") == exp_hash
                         and previous.get("first_stage", {}).get("trec_sha256") == trec_sha):
        return None                          # another configuration or another first stage
    wanted = run_file(task, config.run_format)
    if previous and (previous.get("files") or {}).get("run", wanted) != wanted:
        reporter.message(f"{task}: finished rerank result found, its run file is {previous['files']['run']}, "
                         f"not {wanted} (--run-format): reranked again")
        return None
    if previous and (problem := run_file_problem(exp_dir, previous)):
        reporter.message(f"{task}: finished rerank result found, but its {problem}: reranked again")
        return None
    if previous:
        reporter.message(f"{task}: finished rerank result found, reused ({path})")
    return previous


class _Stage:
    """The rerank of one task at a time; the reranker is loaded on the first task that needs it."""

    def __init__(self, config: RunConfig, meta: RerankerMeta, model_meta, outcome: SuiteOutcome, exp_dir: Path,
                 exp_hash: str, reporter: Reporter):
        self.config, self.meta, self.model_meta, self.outcome = config, meta, model_meta, outcome
        self.exp_dir, self.exp_hash, self.reporter = exp_dir, exp_hash, reporter
        self.reranker: Reranker | None = None

    def rerank_task(self, spec, td: TaskData, first: TaskOutcome, pools: _Pools, trec_path: Path, trec_sha: str,
                    qids: list[str], cids: list[list[str]], fscores: list[list[float]]) -> dict:
        from mmbench.metrics.scoring import CandidateIds, Run

        meta, k, reporter = self.meta, self.config.rerank_top_k, self.reporter
        # the first-stage run as arrays over the candidates it holds
        universe = CandidateIds(sorted({c for row in cids for c in row}))
        missing = [c for c in universe if c not in pools.where]
        if missing:
            raise MmbenchError(f"{trec_path}: candidate {missing[0]!r} is not in the pool of {spec.name} "
                               f"(is the run file from other data? rerun the first stage with --overwrite)")
        depth = max((len(r) for r in cids), default=0)
        pos = universe.position
        idx = np.full((len(qids), depth), -1, dtype=np.int64)
        fs = np.full((len(qids), depth), -np.inf)
        for i, (row, srow) in enumerate(zip(cids, fscores)):
            idx[i, :len(row)] = [pos[c] for c in row]
            fs[i, :len(row)] = srow
        if k > depth:
            reporter.message(f"{spec.name}: the first-stage run holds {depth} hits per query; reranking all of them")
        valid = idx >= 0
        modalities = np.array([pools.modality(c) for c in universe])
        readable = {m: meta.can_read(m) for m in set(modalities.tolist()) | set(td.queries.modalities)}
        q_row = {q: r for r, q in enumerate(td.queries.ids)}
        unknown = [q for q in qids if q not in q_row]
        if unknown:
            raise MmbenchError(f"{trec_path}: query {unknown[0]!r} is not in {spec.name}'s query file")
        q_ok = np.array([readable[td.queries.modalities[q_row[q]]] for q in qids], dtype=bool)
        c_ok = np.append([readable[m] for m in modalities.tolist()], False)[idx]     # idx -1 -> False
        in_top = valid & (np.arange(depth) < k)
        scored = in_top & c_ok & q_ok[:, None]

        # score the pairs
        rows_i, cols_i = np.nonzero(scored)
        pair_cids = [universe[j] for j in idx[rows_i, cols_i].tolist()]
        subset_ids = sorted(set(pair_cids))
        sub_pos = {c: r for r, c in enumerate(subset_ids)}
        job = RerankJob(spec.name, td, np.array([q_row[qids[r]] for r in rows_i.tolist()], dtype=np.int64),
                        pools.subset(subset_ids), np.array([sub_pos[c] for c in pair_cids], dtype=np.int64),
                        pools.fingerprint(subset_ids))
        if self.reranker is None:
            reporter.message(f"loading reranker {meta.name} ({meta.revision})")
            self.reranker = load_reranker(meta, config=self.config, reporter=reporter)
        t0 = time.perf_counter()
        pair_scores = np.asarray(self.reranker.score_job(
            job, batch_size=self.config.batch_size,
            progress=reporter.progress(f"{spec.name}: rerank {len(job):,} pairs", len(job))), dtype=np.float64)
        t1 = time.perf_counter()
        if pair_scores.shape != (len(job),) or np.isnan(pair_scores).any():
            raise MmbenchError(f"reranker {meta.name!r} returned {pair_scores.shape} scores (NaN?) for {len(job)} pairs")
        new = np.zeros_like(fs)
        new[rows_i, cols_i] = np.round(pair_scores, 6)
        order, out_scores = rerank_order(fs, scored, new, universe.ranks[np.maximum(idx, 0)], valid)
        ranked = Run(qids, universe, np.take_along_axis(idx, order, axis=1), out_scores)

        first_rec = load_task_result(self.outcome.directory / record_file(spec.name)) or {}
        top_k = first_rec.get("top_k", depth)
        writer = Immediate()
        run_bytes = start_run_file(writer, self.exp_dir, spec.name, ranked,
                                   trec_tag(self.model_meta.name, "rerank", meta.name),
                                   run_format=self.config.run_format)
        scored_task = score_run(spec, ranked, td.qrels, modalities, top_k=top_k, depth=depth)
        stage = {
            "rerank": {"reranker": meta.to_dict(), "settings": self.reranker.settings(), "top_k": k,
                       "scored_pairs": int(scored.sum()), "unscored_pairs_in_top_k": int((in_top & ~scored).sum()),
                       "order": ORDER_RULE, "seconds": round(t1 - t0, 3)},
            "first_stage": {"model": self.model_meta.name, "revision": self.outcome.revision,
                            "config_hash": first_rec.get("provenance", {}).get("config_hash"),
                            "result": str(self.outcome.directory / record_file(spec.name)), "run": str(trec_path),
                            "trec_sha256": trec_sha, "main_score": first.main_score, "metrics": first.metrics},
        }
        record = task_record(scored_task, head={key: first_rec[key] for key in ("task", "suite", "pool", "notes")
                                                if key in first_rec},
                             n_candidates=first.n_candidates, top_k=top_k, stage=stage,
                             files={"run": run_file(spec.name, self.config.run_format),
                                    "per_query": per_query_file(spec.name)},
                             provenance=provenance(self.config, self.exp_hash, td))
        finish_task(writer, self.exp_dir, spec.name, scored_task, record, run_bytes)
        return {**record, "files": {**record["files"], "run_bytes": run_bytes.result()}}
