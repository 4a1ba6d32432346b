"""The types the pipeline's steps pass along and hand back.

The library never prints: progress and messages go to a :class:`Reporter` (the CLI renders them
with rich; the base class is silent). A run returns a :class:`SuiteOutcome` with one
:class:`TaskOutcome` per task; each task's full record (:class:`TaskRecord`) is its JSON file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

Progress = Callable[[int, int], None]


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

    @classmethod
    def from_record(cls, task: str, record: TaskRecord, path: Path, *, reused: bool) -> TaskOutcome:
        return cls(task, record["main_metric"], record["main_score"], record["metrics"], record["n_queries"],
                   record["n_candidates"], reused, path)


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


class TaskRecord(TypedDict, total=False):
    """A task's JSON record (``<task>.json``; :func:`mmbench.pipeline.score.task_record` builds it, in
    this key order). Both stages write the keys from ``main_metric`` to ``modality_report`` and
    ``files`` and ``provenance``; the rest belong to one stage."""

    task: dict[str, Any]                 # the spec's identity (name, source, dataset, modalities, spec_hash)
    suite: str                           # the suite label ("local" for tasks run against their own pools)
    pool: str                            # "local" or "global"
    notes: list[str]                     # (rerank stage: here; first stage: after "search")
    main_metric: str
    main_score: float                    # rounded to 6 decimals, as every metric
    metrics: dict[str, float]
    metric_definitions: dict[str, str]   # first stage
    n_queries: int                       # queries scored (those with qrels)
    n_queries_in_file: int               # first stage
    n_candidates: int
    top_k: int
    modality_report: dict
    timings_s: dict[str, float]          # first stage: encode, search, score
    efficiency: dict                     # first stage: encode items/s, search latency, bytes, peak memory
    instructions: dict                   # first stage: policy and seed
    model: dict                          # first stage: ModelMeta and the encoder's settings
    search: dict                         # first stage: the search backend, exactness, tie rule
    rerank: dict                         # rerank stage: the reranker, its settings, the order rule
    first_stage: dict                    # rerank stage: the first stage's result it reranked
    files: dict                          # run file, per-query file, run_bytes
    provenance: dict                     # environment, config_hash, config, data fingerprints, date


__all__ = ["NullReporter", "Progress", "Reporter", "SuiteOutcome", "TaskOutcome", "TaskRecord"]
