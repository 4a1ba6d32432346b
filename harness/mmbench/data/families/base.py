"""The seam of a task family: how a kind of task finds, loads and post-processes its data.

A task spec names its family in its ``loader`` field (``loader = "mbeir"``); the catalog maps that
name to an object that implements :class:`TaskFamily` (:func:`mmbench.catalog.task_families`). The
built-in families are :mod:`~mmbench.data.families.mbeir` (M-BEIR's layout, and the embedded
``mbeir-mini`` suite) and :mod:`~mmbench.data.families.mteb` (mteb's retrieval tasks). A plugin adds
one through the entry-point group ``mmbench.loaders``: the entry point is a callable that receives
the family registry and registers into it, e.g.
``registry.register("my-format", "my_package.family:FAMILY")``.

The pipeline asks a family, and nothing else, about what differs between families:

1. :meth:`TaskFamily.data_root`: the folder ``load`` reads (None: the family finds its data itself);
2. :meth:`TaskFamily.load`: the queries, the pool and the qrels, validated (:class:`TaskData`);
3. :meth:`TaskFamily.with_model_instructions`: the queries as a given model encodes them;
4. :meth:`TaskFamily.after_search`: a rule applied to each ranked row after search, before scoring;
5. :meth:`TaskFamily.write_extra_outputs`: files the family writes beside mmbench's own record;
6. for global suites: :meth:`TaskFamily.load_pool` (a pool without its queries),
   :meth:`TaskFamily.global_pool` (the suite's own pool file, if the family has one) and
   :meth:`TaskFamily.load_with_pool` (a task checked against the global pool).

:class:`BaseFamily` gives 3-6 their neutral behaviour (unchanged data, no rule, no extra file, pools
taken from :meth:`load`, no pool file), so a new family writes ``name``, ``data_root`` and ``load``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from mmbench.data.specs import TaskSpec
from mmbench.data.types import PoolData, TaskData

if TYPE_CHECKING:
    from mmbench.config import RunConfig
    from mmbench.models.base import ModelMeta


@runtime_checkable
class TaskFamily(Protocol):
    """What the pipeline needs from a kind of task (see the module docstring)."""

    name: str

    def data_root(self, spec: TaskSpec, config: RunConfig) -> Path | None:
        """The folder :meth:`load` reads for ``spec`` under ``config`` (building it if the family
        builds its data); raises :class:`~mmbench.errors.MmbenchError` naming what to pass when
        the data is not there."""
        ...

    def load(self, spec: TaskSpec, root: Path | None, *, instructions: str = "first", seed: int = 2023) -> TaskData:
        """The task's data, validated. ``instructions`` is the query-instruction policy (``first``,
        ``random`` drawn with ``seed``, ``none``)."""
        ...

    def with_model_instructions(self, data: TaskData, meta: ModelMeta, config: RunConfig) -> TaskData:
        """``data`` as model ``meta`` encodes it (a model's own query instructions, where the family
        defines none); ``data`` itself when nothing changes."""
        ...

    def after_search(self, data: TaskData, candidate_ids, indices: np.ndarray,
                     scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ranked rows (int64 indices into ``candidate_ids``, -1 in empty slots; scores, -inf
        there) after the family's rule, still in rank order with empty slots at the end."""
        ...

    def write_extra_outputs(self, output: Path, meta: ModelMeta, spec: TaskSpec, data: TaskData,
                            scores: dict[str, float], record: dict) -> None:
        """Files written after the task is scored, beside mmbench's own (``output`` is the run's
        results folder; ``scores`` the mean of every metric; ``record`` the task record)."""
        ...

    def load_pool(self, spec: TaskSpec, root: Path | None) -> PoolData:
        """``spec``'s candidate pool alone, without its queries (a global suite's other tasks)."""
        ...

    def global_pool(self, pool_file: str, specs: list[TaskSpec], root: Path | None) -> PoolData | None:
        """A global suite's own pool file (the suite spec's ``pool_file``, under ``root``) as one pool;
        None when there is none: the pipeline then takes the union of ``specs``' pools."""
        ...

    def load_with_pool(self, spec: TaskSpec, root: Path | None, pool: PoolData, *, instructions: str = "first",
                       seed: int = 2023) -> TaskData:
        """:meth:`load`, with ``pool`` (a global pool) as the task's pool, checked against it."""
        ...


class BaseFamily:
    """Neutral defaults for the optional steps of :class:`TaskFamily`."""

    name = "base"

    def with_model_instructions(self, data: TaskData, meta: ModelMeta, config: RunConfig) -> TaskData:
        return data

    def after_search(self, data: TaskData, candidate_ids, indices: np.ndarray,
                     scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return indices, scores

    def write_extra_outputs(self, output: Path, meta: ModelMeta, spec: TaskSpec, data: TaskData,
                            scores: dict[str, float], record: dict) -> None:
        return None

    def load_pool(self, spec: TaskSpec, root: Path | None) -> PoolData:
        data = self.load(spec, root, instructions="none")
        return PoolData(data.pool, data.pool_key, {"pool": data.pool_key}, source=spec.name)

    def global_pool(self, pool_file: str, specs: list[TaskSpec], root: Path | None) -> PoolData | None:
        return None

    def load_with_pool(self, spec: TaskSpec, root: Path | None, pool: PoolData, *, instructions: str = "first",
                       seed: int = 2023) -> TaskData:
        data = self.load(spec, root, instructions=instructions, seed=seed)
        return replace(data, pool=pool.table, pool_key=pool.key, fingerprints={**data.fingerprints, "pool": pool.key})

    def __repr__(self) -> str:
        return f"<task family {self.name!r}>"


__all__ = ["BaseFamily", "TaskFamily"]
