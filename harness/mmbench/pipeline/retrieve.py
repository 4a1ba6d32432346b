"""Step 3 of a run: queries -> the search backend -> a ranked run, then the task family's rule.

Search is maximum inner product over the pool's blocks with the run's backend (``--search-backend``;
default the best exact one available; :func:`mmbench.search.search`), each row ordered by the one tie
rule: score descending, then candidate id descending (trec_eval's). The
family's :meth:`~mmbench.data.families.base.TaskFamily.after_search` rule then applies (mteb's
``ignore_identical_ids``) before the run is scored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from mmbench.config import RunConfig
from mmbench.data.types import TaskData
from mmbench.pipeline.pools import Pool
from mmbench.pipeline.types import Reporter

TIE_BREAK = "score descending, then candidate id descending (trec_eval's rule)"


def describe_search(config: RunConfig, ranks=None) -> dict:
    """The record's ``search``: the backend the run's search uses (its name, whether it is exact and
    its own keys; :func:`mmbench.search.describe_backend`), the tie rule, and with ``ranks`` (a
    :class:`~mmbench.distributed.search.LeadShards`) how the pool is shared over the ranks."""
    from mmbench.search import describe_backend

    if ranks is not None:             # rank 0's own share: its backend on its device, as every rank's
        return {**describe_backend(config.search_backend, ranks.device), "tie_break": TIE_BREAK,
                "ranks": ranks.describe()}
    return {**describe_backend(config.search_backend, config.device, config.devices), "tie_break": TIE_BREAK}


@dataclass
class Retrieved:
    ranked: object          # metrics.scoring.Run: rows in rank order, over the pool's candidate ids
    seconds: float          # search and the family's rule
    search_seconds: float = 0.0     # the batch search alone
    latency: dict | None = None     # single-query search latency (pipeline.efficiency.sample_latency)


def retrieve(family, data: TaskData, pool: Pool, queries: np.ndarray, top_k: int, config: RunConfig,
             reporter: Reporter, label: str, ranks=None) -> Retrieved:
    """The top ``top_k`` of each query of ``data`` in ``pool``, after ``family``'s rule; then a few
    queries searched alone, timed for the efficiency report (:func:`~mmbench.pipeline.efficiency.sample_latency`;
    their answers are not used). ``ranks``: rank 0's :class:`~mmbench.distributed.search.LeadShards`
    when the search is sharded over a group's ranks (``label`` is then the task's name)."""
    from mmbench.metrics.scoring import Run
    from mmbench.pipeline.efficiency import sample_latency
    from mmbench.search import pool_norm_bound, search

    prepare = None if ranks is None else ranks.preparer(label, pool.label)
    budget = int(config.memory_budget_gb * 1024**3)
    t0 = time.perf_counter()
    if pool.norm_bound is None:         # one pass over the pool (timed with the first search), whatever
        pool.norm_bound = pool_norm_bound(pool.blocks, budget)     # searches it later: tasks, latency samples

    def run_search(q: np.ndarray, progress=None):
        return search(q, pool.blocks, top_k, tiebreak=pool.candidate_ids.ranks, backend=config.search_backend,
                      device=config.device, devices=config.devices,
                      memory_budget_bytes=budget, progress=progress, prepare=prepare, norm_bound=pool.norm_bound)

    indices, scores = run_search(queries, reporter.progress(f"{label}: search {len(pool.table):,} candidates",
                                                            len(pool.table)))
    search_seconds = time.perf_counter() - t0
    indices, scores = family.after_search(data, pool.candidate_ids, indices, scores)
    seconds = time.perf_counter() - t0
    latency = sample_latency(lambda i: run_search(queries[i:i + 1]), len(queries), search_seconds)
    return Retrieved(Run(list(data.queries.ids), pool.candidate_ids, indices, scores), seconds,
                     search_seconds=search_seconds, latency=latency)


__all__ = ["TIE_BREAK", "Retrieved", "describe_search", "retrieve"]
