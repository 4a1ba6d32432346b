"""Step 4 of a run: a ranked run -> its metrics and modality report -> the task record.

One builder (:func:`task_record`) makes the record of both stages: the first stage's
(:func:`first_stage_record`) and the rerank stage's (:mod:`mmbench.rerank.stage`); they differ only in
the keys that describe the stage (:class:`~mmbench.pipeline.types.TaskRecord`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from mmbench.config import RunConfig
from mmbench.data.specs import TaskSpec
from mmbench.data.types import Qrels, TaskData
from mmbench.metrics.families import metric_notes, parse_metric
from mmbench.pipeline.efficiency import efficiency_report
from mmbench.pipeline.types import TaskRecord
from mmbench.results.layout import per_query_file, run_file
from mmbench.results.provenance import environment

def report_cutoffs(main_metric: str, top_k: int, depth: int) -> list[int]:
    """The cut-offs of the modality report: the headline's, 10 and min(top_k, 100), those <= ``depth``."""
    ks = sorted({parse_metric(main_metric)[1], 10, min(top_k, 100)} - {0})
    return [k for k in ks if k <= depth]


@dataclass
class ScoredTask:
    main_metric: str
    result: object            # metrics.scoring.MetricResult: per-query values and their means
    modality_report: dict

    def headline(self) -> dict:
        mean = self.result.mean
        return {"main_metric": self.main_metric, "main_score": round(float(mean[self.main_metric]), 6),
                "metrics": {m: round(float(v), 6) for m, v in mean.items()}}


def score_run(spec: TaskSpec, ranked, qrels: Qrels, modalities: np.ndarray, *, top_k: int,
              depth: int) -> ScoredTask:
    """Every metric of ``spec`` over ``ranked`` (rows in rank order) and which modalities its top
    ranks hold (``modalities``: each candidate's, indexed as ``ranked.indices``), with the metrics the
    run would get without its wrong-modality candidates (``without_wrong_modality``)."""
    from mmbench.metrics.modality import modality_report, without_wrong_modality
    from mmbench.metrics.scoring import evaluate

    result = evaluate(ranked, qrels, spec.metrics)
    report = modality_report(ranked.indices, modalities, spec.candidate_modality,
                             report_cutoffs(spec.main_metric, top_k, depth))
    report["without_wrong_modality"] = without_wrong_modality(ranked, qrels, modalities, spec.candidate_modality,
                                                              spec.metrics, spec.main_metric, result.mean)
    return ScoredTask(spec.main_metric, result, report)


def task_identity(spec: TaskSpec) -> dict:
    return {"name": spec.name, "source": spec.source, "dataset": spec.dataset, "dataset_id": spec.dataset_id,
            "task_id": spec.task_id, "query_modality": spec.query_modality,
            "candidate_modality": spec.candidate_modality, "domain": spec.domain, "spec_hash": spec.spec_hash()}


def provenance(config: RunConfig, config_hash: str, data: TaskData, images: dict | None = None) -> dict:
    """``images``: the task's image fingerprints (:func:`mmbench.pipeline.pools.image_fingerprints`),
    recorded as ``image_fingerprints`` when it has images."""
    return {**environment(), "config_hash": config_hash, "config": config.to_dict(),
            "data_fingerprints": data.fingerprints, **({"image_fingerprints": images} if images else {}),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def task_record(scored: ScoredTask, *, head: dict, n_candidates: int, top_k: int, stage: dict,
                files: dict, provenance: dict, definitions: dict | None = None,
                n_queries_in_file: int | None = None) -> TaskRecord:
    """The task record, keys in :class:`~mmbench.pipeline.types.TaskRecord`'s order: ``head`` (task,
    suite, pool...), the headline and every metric, the counts, the modality report, the ``stage``'s
    own keys, ``files`` and ``provenance``."""
    record: dict = {**head, **scored.headline()}
    if definitions is not None:
        record["metric_definitions"] = definitions
    record["n_queries"] = len(scored.result.query_ids)
    if n_queries_in_file is not None:
        record["n_queries_in_file"] = n_queries_in_file
    record.update(n_candidates=n_candidates, top_k=top_k, modality_report=scored.modality_report)
    record.update(stage)
    record.update(files=files, provenance=provenance)
    return record


def first_stage_record(plan, spec: TaskSpec, data: TaskData, pool, queries, retrieved, scored: ScoredTask,
                       score_seconds: float, model_settings: dict | None, search: dict) -> TaskRecord:
    """The first stage's record of ``spec`` (``plan``: :class:`~mmbench.pipeline.plan.Plan`; ``pool``,
    ``queries``: :mod:`~mmbench.pipeline.pools`; ``retrieved``: :mod:`~mmbench.pipeline.retrieve`)."""
    config = plan.config
    stage = {
        "timings_s": {"encode_queries": round(queries.stats.seconds, 3),
                      "encode_candidates": round(pool.encode_seconds, 3),
                      "queries_from_cache": queries.stats.cached, "candidates_from_cache": pool.from_cache,
                      "search": round(retrieved.seconds, 3),
                      "score": round(score_seconds, 3)},
        "efficiency": efficiency_report(device=config.device, queries_stats=queries.stats,
                                        query_modalities=data.queries.modalities, pool=pool, search=search,
                                        retrieved=retrieved),
        "instructions": {"policy": config.instructions,
                         "seed": config.seed if config.instructions == "random" else None},
        "model": {**plan.meta.to_dict(), "settings": model_settings or None},
        "search": search,
        "notes": data.notes,
    }
    return task_record(scored, head={"task": task_identity(spec), "suite": plan.label, "pool": plan.pool_mode},
                       definitions=metric_notes(), n_queries_in_file=len(data.queries), n_candidates=len(pool.table),
                       top_k=plan.top_k(spec), stage=stage,
                       files={"run": run_file(spec.name, config.run_format), "per_query": per_query_file(spec.name),
                              "run_depth": plan.run_depth(spec)},
                       provenance=provenance(config, plan.config_hash, data, plan.images.get(spec.name)))


__all__ = ["ScoredTask", "first_stage_record", "provenance", "report_cutoffs", "score_run",
           "task_identity", "task_record"]
