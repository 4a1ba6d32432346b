"""The second stage: rerank the top-k of a first-stage run read from the results folder.

``mmbench run --model M --suite S --rerank R --rerank-top-k K`` first runs (or, when its finished result
of the same configuration exists, reuses) the first stage, then :func:`rerank_suite`:

1. reads ``<output>/<model>/<revision>/<suite>/<task>.trec`` (never re-encodes the first stage);
2. scores the (query, candidate) pairs of each query's top K with the reranker;
3. orders each row: the scored pairs of the top K by reranker score (ties: candidate id descending, the one
   tie rule), then the pairs of the top K the reranker cannot read (e.g. an image in a global pool for a text
   reranker) and every position beyond K, in first-stage order. Run-file scores are the reranker's, rounded to
   the file's 6 decimals before ordering; the rest keep their first-stage scores shifted below the lowest
   reranker score of the row (ties among them: candidate id descending, as trec_eval reads the first-stage
   file), so the file re-sorted by trec_eval's rule gives the same order;
4. evaluates it with :mod:`mmbench.metrics.scoring` and writes the first stage's files (``<task>.json``, ``.trec``,
   ``.per_query.tsv``, ``summary.json``) under ``<suite>/experiments/rerank=<reranker>__top<K>/``, with the
   first stage's config hash and the sha256 of its run file, and the reranker's metadata and settings.

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
from mmbench.data.types import ItemTable, TaskData
from mmbench.embeddings.cache import ids_digest, slug
from mmbench.errors import IncompatibleModelError, MmbenchError
from mmbench.results.provenance import environment
from mmbench.rerank.base import Reranker, RerankerMeta, RerankJob, load_reranker, parse_reranker
from mmbench.results.records import (load_task_result, run_file_problem, trec_tag, write_per_query, write_summary,
                             write_task_result, write_trec)

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
    """Query ids and, per query, candidate ids and scores in the file's rank order."""
    if not path.is_file():
        raise MmbenchError(f"first-stage run {path} not found; produce it with `{_run_command(config)}`")
    qids: list[str] = []
    rows: dict[str, tuple[list[str], list[float]]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) != 6:
                raise MmbenchError(f"{path}:{lineno}: expected 'qid Q0 did rank score tag', got {line.strip()!r}")
            qid, _, did, _, score, _ = parts
            if qid not in rows:
                qids.append(qid)
                rows[qid] = ([], [])
            rows[qid][0].append(did)
            rows[qid][1].append(float(score))
    return qids, [rows[q][0] for q in qids], [rows[q][1] for q in qids]


class _Pools:
    """id -> (table, row) over the pool a task searched (its local pool, or the suite's union)."""

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
    """Column order and run-file scores of each row (see the module docstring for the rule).

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
    return order, np.take_along_axis(out_scores, order, axis=1)


def rerank_suite(outcome, config: RunConfig, reporter=None, data: dict[str, TaskData] | None = None):
    """Rerank every task of ``outcome`` (a first-stage :class:`~mmbench.pipeline.run.SuiteOutcome`); returns the experiment's."""
    from mmbench.metrics.scoring import CandidateIds, Run, evaluate
    from mmbench.metrics.modality import modality_report
    from mmbench.pipeline.run import Reporter, SuiteOutcome, TaskOutcome, load_task_data
    from mmbench.data.specs import parse_metric

    reporter = reporter or Reporter()
    meta = check_rerank(config)
    k = config.rerank_top_k
    suite, _ = resolve_tasks(config.suite, list(config.tasks) or None)
    data = dict(data or {})

    def task_data(name: str) -> TaskData:
        if name not in data:
            data[name] = load_task_data(tasks().get(name), config)
        return data[name]

    first_hash = config.config_hash()
    exp_hash = experiment_hash(first_hash, meta, k)
    exp_dir = outcome.directory / "experiments" / experiment_name(meta.name, k)
    label = f"{outcome.suite} → rerank {meta.name} top {k}"
    exp = SuiteOutcome(label, outcome.pool, outcome.model, outcome.revision, exp_dir)
    reranker: Reranker | None = None
    pools_cache: dict[str, _Pools] = {}
    skipped: dict[str, str] = {}
    first_scores_of: dict[str, float] = {}
    model_meta = get_model(config.model)

    for first in outcome.tasks:
        spec = tasks().get(first.task)
        if not meta.can_score(spec.query_modality, spec.candidate_modality):
            skipped[spec.name] = f"{spec.query_modality}->{spec.candidate_modality} not readable by {meta.name}"
            reporter.message(f"{spec.name}: skipped by the reranker ({skipped[spec.name]})")
            continue
        trec_path = outcome.directory / f"{spec.name}.trec"
        qids, cids, fscores = read_first_stage(trec_path, config)
        trec_sha = hashlib.sha256(trec_path.read_bytes()).hexdigest()
        first_rec = load_task_result(outcome.directory / f"{spec.name}.json") or {}
        first_prov = first_rec.get("provenance", {})
        first_scores_of[spec.name] = first.main_score
        path = exp_dir / f"{spec.name}.json"
        previous = None if config.overwrite else load_task_result(path)
        if previous and not (previous.get("provenance", {}).get("config_hash") == exp_hash
                             and previous.get("first_stage", {}).get("trec_sha256") == trec_sha):
            previous = None                         # another configuration or another first stage
        if previous and (problem := run_file_problem(exp_dir, previous)):
            reporter.message(f"{spec.name}: finished rerank result found, but its {problem}: reranked again")
            previous = None
        if previous:
            reporter.message(f"{spec.name}: finished rerank result found, reused ({path})")
            exp.tasks.append(TaskOutcome(spec.name, previous["main_metric"], previous["main_score"], previous["metrics"],
                                         previous["n_queries"], previous["n_candidates"], True, path))
            continue

        td = task_data(spec.name)
        pool_names = suite.tasks if outcome.pool == "global" else (spec.name,)
        pool_id = "global" if outcome.pool == "global" else td.pool_key
        if pool_id not in pools_cache:
            distinct: dict[str, TaskData] = {}
            for n in pool_names:
                distinct.setdefault(task_data(n).pool_key, task_data(n))
            pools_cache[pool_id] = _Pools([d.pool for d in distinct.values()],
                                          [d.pool_key for d in distinct.values()])
        pools = pools_cache[pool_id]

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
        if reranker is None:
            reporter.message(f"loading reranker {meta.name} ({meta.revision})")
            reranker = load_reranker(meta, config=config, reporter=reporter)
        t0 = time.perf_counter()
        pair_scores = np.asarray(reranker.score_job(job, batch_size=config.batch_size,
                                                    progress=reporter.progress(f"{spec.name}: rerank {len(job):,} pairs", len(job))),
                                 dtype=np.float64)
        t1 = time.perf_counter()
        if pair_scores.shape != (len(job),) or np.isnan(pair_scores).any():
            raise MmbenchError(f"reranker {meta.name!r} returned {pair_scores.shape} scores (NaN?) for {len(job)} pairs")
        new = np.zeros_like(fs)
        new[rows_i, cols_i] = np.round(pair_scores, 6)
        order, out_scores = rerank_order(fs, scored, new, universe.ranks[np.maximum(idx, 0)], valid)
        out_idx = np.take_along_axis(idx, order, axis=1)
        ranked = Run(qids, universe, out_idx, out_scores)
        scored_eval = evaluate(ranked, td.qrels, spec.metrics)
        top_k = first_rec.get("top_k", depth)
        ks = sorted({parse_metric(spec.main_metric)[1], 10, min(top_k, 100)} - {0})
        modality = modality_report(out_idx, modalities, spec.candidate_modality, [x for x in ks if x <= depth])

        run_bytes = write_trec(exp_dir / f"{spec.name}.trec", qids, universe, out_idx, out_scores,
                               trec_tag(model_meta.name, "rerank", meta.name), fsync=False)
        write_per_query(exp_dir / f"{spec.name}.per_query.tsv", scored_eval.query_ids, scored_eval.per_query)
        record = {
            **{key: first_rec[key] for key in ("task", "suite", "pool", "notes") if key in first_rec},
            "main_metric": spec.main_metric,
            "main_score": round(float(scored_eval.mean[spec.main_metric]), 6),
            "metrics": {m: round(float(v), 6) for m, v in scored_eval.mean.items()},
            "n_queries": len(scored_eval.query_ids),
            "n_candidates": first.n_candidates,
            "top_k": top_k,
            "modality_report": modality,
            "rerank": {"reranker": meta.to_dict(), "settings": reranker.settings(), "top_k": k,
                       "scored_pairs": int(scored.sum()), "unscored_pairs_in_top_k": int((in_top & ~scored).sum()),
                       "order": ORDER_RULE, "seconds": round(t1 - t0, 3)},
            "first_stage": {"model": model_meta.name, "revision": outcome.revision, "config_hash": first_prov.get("config_hash"),
                            "result": str(outcome.directory / f"{spec.name}.json"), "run": str(trec_path),
                            "trec_sha256": trec_sha, "main_score": first.main_score, "metrics": first.metrics},
            "files": {"run": f"{spec.name}.trec", "per_query": f"{spec.name}.per_query.tsv", "run_bytes": run_bytes},
            "provenance": {**environment(), "config_hash": exp_hash, "config": config.to_dict(),
                           "data_fingerprints": td.fingerprints,
                           "date": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        }
        write_task_result(exp_dir, spec.name, record)
        exp.tasks.append(TaskOutcome(spec.name, record["main_metric"], record["main_score"], record["metrics"],
                                     record["n_queries"], record["n_candidates"], False, path))

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
