"""Step 1 of a run: what to run, refused before any work when it cannot run, and what to reuse.

:func:`make_plan` resolves the model (with ``--model-option``), the suite and
its tasks, the pool mode (each task against its local pool, or every task against the union of the
suite's pools) and the results folder, and checks that the model reads every modality it will be given.
:meth:`Plan.load` loads each task's data through its family (:mod:`mmbench.data.families`);
:func:`reusable` decides whether a finished result of the same configuration can stand.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mmbench.catalog import get_model, resolve_tasks, task_family, tasks
from mmbench.config import RunConfig
from mmbench.data.specs import SuiteSpec, TaskSpec
from mmbench.data.types import ItemTable, PoolData, PoolPart, TaskData
from mmbench.embeddings.images import images_fingerprint
from mmbench.errors import DataError, MmbenchError
from mmbench.models.base import ModelMeta
from mmbench.models.loading import with_model_options
from mmbench.pipeline.pools import image_fingerprints
from mmbench.pipeline.types import Reporter, SuiteOutcome
from mmbench.results.layout import record_file, result_dir, run_file
from mmbench.results.records import load_task_result, run_file_problem


def resolve_model(config: RunConfig) -> ModelMeta:
    """The run's model: the catalog's, with ``--model-option``."""
    return with_model_options(get_model(config.model), config.model_options)


def load_task_data(spec: TaskSpec, config: RunConfig, pool: PoolData | None = None) -> TaskData:
    """A task's data as its family loads it from the family's data root; with ``pool`` (a global
    pool), checked against that pool instead of its own."""
    family = task_family(spec)
    root = family.data_root(spec, config)
    if pool is not None:
        return family.load_with_pool(spec, root, pool, instructions=config.instructions, seed=config.seed)
    return family.load(spec, root, instructions=config.instructions, seed=config.seed)


def load_global_pool(suite: SuiteSpec, pool_specs: list[TaskSpec], config: RunConfig) -> PoolData:
    """A global suite's pool, without any task's queries: the suite's ``pool_file`` where its data
    root has one (M-BEIR's union file: :meth:`~mmbench.data.families.base.TaskFamily.global_pool`),
    else the union of the distinct local pools of ``pool_specs`` (identical pool files enter it once),
    each pool one part. Candidate ids must be unique across it."""
    first = pool_specs[0]
    family = task_family(first)
    if suite.pool_file:
        pool = family.global_pool(suite.pool_file, pool_specs, family.data_root(first, config))
        if pool is not None:
            return pool
    distinct: dict[str, PoolData] = {}
    for spec in pool_specs:
        fam = task_family(spec)
        part = fam.load_pool(spec, fam.data_root(spec, config))
        distinct.setdefault(part.key, part)
    tables = [p.table for p in distinct.values()]
    table = ItemTable.concat(tables, source="union")
    bounds = np.cumsum([0, *map(len, tables)]).tolist()
    parts = [PoolPart(a, b, p.key) for a, b, p in zip(bounds, bounds[1:], distinct.values())]
    key = hashlib.sha256("\0".join(distinct).encode()).hexdigest()
    pool = PoolData(table, key, {"pool": key}, parts,
                    source=f"the union of the local pools of {', '.join(s.name for s in pool_specs)}")
    if len(pool.id_set()) != len(table):
        raise DataError("global pool", "candidate ids are not unique across the union of the local pools")
    return pool


def with_model_instructions(spec: TaskSpec, data: TaskData, meta: ModelMeta, config: RunConfig) -> TaskData:
    """A task's data as model ``meta`` encodes its queries (the family's rule)."""
    return task_family(spec).with_model_instructions(data, meta, config)


@dataclass
class Plan:
    config: RunConfig
    meta: ModelMeta
    suite: SuiteSpec | None
    specs: list[TaskSpec]                  # the tasks to run
    pool_mode: str                         # "local" or "global"
    pool_specs: list[TaskSpec]             # the tasks whose pools are searched
    label: str                             # the suite's name, or "local"
    directory: Path
    config_hash: str
    # each task's data as its family gives it (a reranker applies its own model's instructions to it)...
    loaded: dict[str, TaskData] = field(default_factory=dict)
    # ... and as this run's model encodes its queries
    data: dict[str, TaskData] = field(default_factory=dict)
    # the fingerprints of the images each task reads (pipeline.pools.image_fingerprints; {} for text)
    images: dict[str, dict] = field(default_factory=dict)
    # a global suite's pool (load_global_pool), loaded by load()
    global_pool: PoolData | None = None

    @property
    def suite_tasks(self) -> tuple[str, ...]:
        """The tasks of the summary: the suite's, or the ones named."""
        return self.suite.tasks if self.suite else tuple(s.name for s in self.specs)

    def top_k(self, spec: TaskSpec) -> int:
        return self.config.top_k or spec.top_k

    def run_depth(self, spec: TaskSpec) -> int:
        """Hits per query written to the run file: ``--run-depth`` (default 100), at most the top k
        searched and scored; ``--run-depth all``: the top k."""
        depth = self.config.run_depth
        return self.top_k(spec) if depth is None else min(depth, self.top_k(spec))

    def load(self) -> None:
        """The data of the tasks run, and for a global suite its pool first (:func:`load_global_pool`:
        no other task's queries are read)."""
        if self.pool_mode == "global":
            self.global_pool = load_global_pool(self.suite, self.pool_specs, self.config)
        for spec in self.specs:
            self.loaded[spec.name] = load_task_data(spec, self.config, self.global_pool)
            self.data[spec.name] = with_model_instructions(spec, self.loaded[spec.name], self.meta, self.config)
        memo: dict = {}
        if self.global_pool is not None:      # each part's images once: its cache key's and the record's
            glob = self.global_pool
            glob.part_images = [images_fingerprint(glob.table.slice(p.start, p.stop)) for p in glob.part_list()]
            whole = (hashlib.sha256(json.dumps(glob.part_images).encode()).hexdigest()
                     if any(glob.part_images) else None)
            memo[("pool", glob.key, str(glob.table.root))] = whole
        for name, data in self.data.items():
            self.images[name] = image_fingerprints(data, self.config.verify_data, memo)

    def outcome(self) -> SuiteOutcome:
        return SuiteOutcome(self.label, self.pool_mode, self.meta.name, self.meta.revision, self.directory)


def make_plan(config: RunConfig) -> Plan:
    """Resolve the run and refuse it, before any work, when the model cannot read a task's queries or
    candidates (the candidates of every pool searched)."""
    meta = resolve_model(config)
    suite, specs = resolve_tasks(config.suite, list(config.tasks) or None)
    pool_mode = suite.pool if suite else "local"
    pool_specs = [tasks().get(n) for n in suite.tasks] if pool_mode == "global" else specs
    for spec in specs:
        meta.check_task(spec.name, spec.query_modality, spec.candidate_modality)
    for spec in pool_specs:
        meta.check_task(f"{spec.name} (candidates of the global pool)", spec.candidate_modality, spec.candidate_modality)
    label = suite.name if suite else "local"
    plan = Plan(config, meta, suite, specs, pool_mode, pool_specs, label,
                result_dir(config.output, meta.name, meta.revision, label, config.variant()), config.config_hash())
    if config.rerank:                     # the second stage reads its hits from the run files
        short = [s for s in specs if plan.run_depth(s) < config.rerank_top_k]
        if short:
            raise MmbenchError(f"--rerank-top-k {config.rerank_top_k} needs that many hits per query in the run "
                               f"file, but {', '.join(s.name for s in short)} keep{'s' if len(short) == 1 else ''} "
                               f"{min(plan.run_depth(s) for s in short)}: raise --run-depth "
                               f"(or --top-k), or lower --rerank-top-k")
    return plan


def reusable(plan: Plan, spec: TaskSpec, reporter: Reporter) -> dict | None:
    """The finished record of ``spec`` when it stands: same configuration hash, same data fingerprints
    and its run file as written; None (compute it) otherwise, or with ``--overwrite``."""
    if plan.config.overwrite:
        return None
    path = plan.directory / record_file(spec.name)
    previous = load_task_result(path)
    provenance = (previous or {}).get("provenance", {})
    if not previous or provenance.get("config_hash") != plan.config_hash \
            or provenance.get("data_fingerprints") != plan.data[spec.name].fingerprints \
            or provenance.get("image_fingerprints", {}) != plan.images.get(spec.name, {}):
        return None
    problem = run_file_problem(plan.directory, previous)
    wanted = run_file(spec.name, plan.config.run_format)
    if problem is None and (previous.get("files") or {}).get("run", wanted) != wanted:
        problem = f"run file is {previous['files']['run']}, not {wanted} (--run-format)"
    if problem is not None:
        reporter.message(f"{spec.name}: finished result found, but its {problem}: computed again")
        return None
    reporter.message(f"{spec.name}: finished result found, reused ({path})")
    return previous


__all__ = ["Plan", "load_global_pool", "load_task_data", "make_plan", "resolve_model", "reusable", "with_model_instructions"]
