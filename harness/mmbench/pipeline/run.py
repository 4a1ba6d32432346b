"""One run as named steps: plan -> pools -> retrieve -> score -> write -> rerank.

* :mod:`~mmbench.pipeline.plan`: resolve the model, suite and tasks; refuse what cannot run; load the data;
* :mod:`~mmbench.pipeline.pools`: the candidates and queries embedded, through the cache;
* :mod:`~mmbench.pipeline.retrieve`: exact search and the task family's after-search rule;
* :mod:`~mmbench.pipeline.score`: metrics and the modality report -> the task record;
* :mod:`~mmbench.pipeline.write`: run file, per-query file, record, summary, the family's extra files;
* :mod:`mmbench.rerank.stage`: with ``--rerank``, the second stage over the run files just written.

The library never prints: progress and messages go to a :class:`~mmbench.pipeline.types.Reporter`.
"""

from __future__ import annotations

import time

from mmbench.catalog import task_family
from mmbench.config import RunConfig
from mmbench.distributed.group import current as current_group
from mmbench.data.specs import TaskSpec
from mmbench.embeddings import BackgroundWriter
from mmbench.pipeline.plan import Plan, make_plan, reusable
from mmbench.pipeline.pools import LazyEncoder, Pools
from mmbench.pipeline.retrieve import describe_search, retrieve
from mmbench.pipeline.score import first_stage_record, score_run
from mmbench.pipeline.types import Reporter, SuiteOutcome, TaskOutcome
from mmbench.pipeline.write import (extras_root, finish_task, start_run_file, write_config, write_extras,
                                    write_suite_summary)
from mmbench.results.layout import record_file, trec_tag
from mmbench.util.locks import FolderLock


def run(config: RunConfig, reporter: Reporter | None = None, *, encoders: dict | None = None,
        group=None) -> SuiteOutcome:
    """Evaluate ``config.model`` on the configured suite or tasks and write the results.

    ``encoders``: a dict shared by the runs of one invocation (plain ``mmbench run`` runs two suites),
    so that the model is loaded once for all of them (:func:`shared_encoder`).

    ``group``: the process group this process is a rank of (:class:`mmbench.distributed.RankInfo`;
    default: the one initialised in this process, if any). In a group, every rank calls ``run``: the
    ranks encode the missing cache chunks together (:func:`mmbench.distributed.encode.encode_shared`),
    then rank 0 alone searches, scores and writes from the cache, exactly as a single process does,
    and the other ranks return the outcome without tasks."""
    reporter = reporter or Reporter()
    plan = make_plan(config)
    if config.rerank:                     # an unusable reranker is refused before any work too
        from mmbench.rerank.stage import check_rerank

        check_rerank(config)
    plan.load()
    outcome = plan.outcome()
    shared = ranks = None
    group = group if group is not None else current_group()
    if group is not None:
        encoder = shared_encoder(encoders, plan.meta, config, reporter)
        shared = encode_over_group(plan, group, encoder, reporter)
        ranks = search_over_ranks(plan, group, shared, encoder, reporter)
        if not group.lead:
            return outcome                # every chunk is written and every search answered; rank 0 evaluates
    search = {}
    try:
        # one run per results folder (a second one waits; the lock also makes a killed run's temporary
        # files safe to remove); cache chunks and result files are written in the background, in
        # submission order; leaving the block waits for them (also on failure)
        with FolderLock(plan.directory, "the results folder", reporter.message):
            if config.variant():
                write_config(plan.directory, config)
            with BackgroundWriter() as writer:
                pools = make_pools(plan, shared_encoder(encoders, plan.meta, config, reporter), reporter, writer,
                                   shared=shared)
                for spec in plan.specs:
                    previous = reusable(plan, spec, reporter)
                    if previous is not None:
                        outcome.tasks.append(TaskOutcome.from_record(
                            spec.name, previous, plan.directory / record_file(spec.name), reused=True))
                        continue
                    search = search or describe_search(config, ranks)
                    outcome.tasks.append(evaluate_task(plan, spec, pools, writer, reporter, search, ranks))
            outcome.average, outcome.summary_path = write_suite_summary(
                outcome, plan.suite_tasks, plan.config_hash, groups=plan.suite.groups if plan.suite else None)
    finally:
        if ranks is not None:
            ranks.close()                 # the serving ranks return (also when rank 0 failed)
    if config.rerank:                     # second stage: reads the run files just written or reused
        from mmbench.rerank.stage import rerank_suite

        outcome.experiment = rerank_suite(outcome, config, reporter, data=plan.loaded)
    return outcome


def make_pools(plan: Plan, encoder: LazyEncoder, reporter: Reporter, writer: BackgroundWriter | None, *,
               shared=None) -> Pools:
    """The run's :class:`Pools` (``writer``: None when its tables are only listed, not embedded)."""
    return Pools(plan.meta, plan.config, plan.data, plan.pool_specs, plan.pool_mode, encoder, reporter, writer,
                 images=plan.images, shared=shared, global_pool=plan.global_pool)


def encode_over_group(plan: Plan, group, encoder: LazyEncoder, reporter: Reporter):
    """Every rank: the tables of the tasks rank 0 will evaluate (those without a reusable result,
    as rank 0 sees them) encoded over the group; returns the group's
    :class:`~mmbench.distributed.encode.SharedEncode`."""
    from mmbench.distributed.encode import encode_shared
    from mmbench.distributed.group import broadcast

    todo = [s.name for s in plan.specs if reusable(plan, s, Reporter()) is None] if group.lead else None
    todo = broadcast(group, todo, "the list of tasks to run")
    cfg = plan.config
    jobs = make_pools(plan, encoder, reporter, None).jobs([s for s in plan.specs if s.name in todo])
    return encode_shared(jobs, group, encoder, cache_dir=cfg.cache_dir, chunk_size=cfg.chunk_size,
                         batch_size=cfg.batch_size, overwrite=cfg.overwrite, reporter=reporter)


def search_over_ranks(plan: Plan, group, shared, encoder: LazyEncoder, reporter: Reporter):
    """Every rank, after the group encoded: whether the search is sharded over the ranks
    (:func:`mmbench.distributed.search.agree`). Rank 0 gets its
    :class:`~mmbench.distributed.search.LeadShards` (or None: it searches alone, and says why when
    the group has several ranks); every other rank serves rank 0's searches
    (:func:`mmbench.distributed.search.serve`) from the pools it opens from the cache, then gets None."""
    from mmbench.distributed.search import LeadShards, agree, serve

    config = plan.config
    agreed, why = agree(group, config.search_backend, sees_cache=shared.sees_cache,
                        single_process_shards=bool(config.devices))
    if agreed is None:
        if group.lead and group.world_size > 1:
            reporter.message(f"search: rank 0 searches the whole pool alone ({why})")
        return None
    if group.lead:
        sent = f" (rank 0 sends their shares to rank(s) {', '.join(map(str, agreed.sent))}, which do not see its " \
               "cache)" if agreed.sent else ""
        reporter.message(f"search: the pool is shared over {group.world_size} ranks, each searching its share{sent}")
        return LeadShards(group, agreed)
    pools = make_pools(plan, encoder, Reporter(), None, shared=shared)
    specs = {s.name: s for s in plan.specs}

    def open_pool(task: str):
        pool = pools.for_task(specs[task])
        return pool.blocks, pool.candidate_ids.ranks

    serve(group, open_pool, agreed)
    return None


def shared_encoder(encoders: dict | None, meta, config: RunConfig, reporter: Reporter) -> LazyEncoder:
    """The run's :class:`LazyEncoder`: a new one, or with ``encoders`` the one already made for the same
    model (name, revision, options) and device, given this run's reporter."""
    if encoders is None:
        return LazyEncoder(meta, config, reporter)
    key = (meta.name, meta.revision, repr(sorted(meta.options.items())), config.device,
           str(config.cache_dir))
    encoder = encoders.get(key)
    if encoder is None:
        encoder = encoders[key] = LazyEncoder(meta, config, reporter)
    encoder.reporter = reporter
    return encoder


def evaluate_task(plan: Plan, spec: TaskSpec, pools: Pools, writer, reporter: Reporter, search: dict,
                  ranks=None) -> TaskOutcome:
    """One task of the first stage: its pool and queries, search, run file, scores, record. ``ranks``:
    rank 0's :class:`~mmbench.distributed.search.LeadShards` (the search sharded over the ranks)."""
    family, data = task_family(spec), plan.data[spec.name]
    pool = pools.for_task(spec)
    queries = pools.queries(spec)
    top_k = plan.top_k(spec)
    retrieved = retrieve(family, data, pool, queries.embeddings, top_k, plan.config, reporter, spec.name, ranks)
    t0 = time.perf_counter()
    run_bytes = start_run_file(writer, plan.directory, spec.name, retrieved.ranked, trec_tag(plan.meta.name),
                               depth=plan.run_depth(spec), run_format=plan.config.run_format)
    scored = score_run(spec, retrieved.ranked, data.qrels, pool.modalities, top_k=top_k, depth=top_k)
    score_seconds = time.perf_counter() - t0
    record = first_stage_record(plan, spec, data, pool, queries, retrieved, scored, score_seconds,
                                pools.model_settings(queries), search)
    path = finish_task(writer, plan.directory, spec.name, scored, record, run_bytes)
    write_extras(writer, family, extras_root(plan.config.output, plan.directory, plan.config.variant()),
                 plan.meta, spec, data, scored, record)
    return TaskOutcome.from_record(spec.name, record, path, reused=False)


__all__ = ["encode_over_group", "evaluate_task", "make_pools", "run", "shared_encoder"]
