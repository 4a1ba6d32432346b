"""The registries of tasks, suites, models and task families, filled lazily on first use.

* tasks and suites come from the TOML specs under ``tasks/`` (plus the entry-point groups
  ``mmbench.tasks`` and ``mmbench.suites``);
* models are :class:`~mmbench.models.base.ModelMeta` objects (plus entry-point group
  ``mmbench.models``); names with a scheme (``clip:<hub-id-or-folder>``) resolve dynamically;
* task families (:class:`~mmbench.data.families.base.TaskFamily`) are named by a spec's ``loader``
  field: ``mbeir`` and ``mteb`` built in, more through the entry-point group ``mmbench.loaders``.

Nothing heavy is imported here: ``import mmbench.catalog`` does not import torch.
"""

from __future__ import annotations

from functools import cache

from mmbench.errors import UnknownNameError
from mmbench.models.base import ModelMeta
from mmbench.registry import Registry, closest
from mmbench.data.specs import SuiteSpec, TaskSpec, iter_spec_files, load_suite_spec, load_task_spec

DEFAULT_MODEL = "effnet-lite0-imagenet-labels-minilm"
DEFAULT_SUITE = "mbeir-mini"
DEFAULT_EXTRA_SUITES = ("mteb-mini",)   # plain `mmbench run` also runs these after DEFAULT_SUITE


def _populate_tasks(reg: Registry[TaskSpec]) -> None:
    for path in iter_spec_files("tasks"):
        spec = load_task_spec(path)
        reg.register(spec.name, spec)


def _populate_suites(reg: Registry[SuiteSpec]) -> None:
    for path in iter_spec_files("suites"):
        spec = load_suite_spec(path)
        reg.register(spec.name, spec)


def _populate_models(reg: Registry[ModelMeta]) -> None:
    from mmbench.models.builtin import register_builtin_models

    register_builtin_models(reg)


def _populate_task_families(reg: Registry) -> None:
    reg.register("mbeir", "mmbench.data.families.mbeir:FAMILY")
    reg.register("mteb", "mmbench.data.families.mteb:FAMILY")


@cache
def tasks() -> Registry[TaskSpec]:
    return Registry("task", populate=_populate_tasks, entry_point_group="mmbench.tasks")


@cache
def suites() -> Registry[SuiteSpec]:
    return Registry("suite", populate=_populate_suites, entry_point_group="mmbench.suites")


@cache
def models() -> Registry[ModelMeta]:
    return Registry("model", populate=_populate_models, entry_point_group="mmbench.models")


@cache
def task_families() -> Registry:
    """Task family name (a spec's ``loader`` field) -> :class:`~mmbench.data.families.base.TaskFamily`."""
    return Registry("task family", populate=_populate_task_families, entry_point_group="mmbench.loaders")


def task_family(spec: TaskSpec):
    """The :class:`~mmbench.data.families.base.TaskFamily` that ``spec`` names."""
    return task_families().get(spec.loader)


def get_model(name: str) -> ModelMeta:
    """A registered model, or a dynamic one (``clip:<hub-id-or-folder>``)."""
    if name in models():
        return models().get(name)
    from mmbench.models.builtin import resolve_dynamic_model

    meta = resolve_dynamic_model(name)
    if meta is not None:
        return meta
    return models().get(name)  # raises UnknownNameError with the closest names


def resolve_tasks(suite: str | None, task_names: list[str] | None) -> tuple[SuiteSpec | None, list[TaskSpec]]:
    """The suite (if any) and the tasks to run: the suite's, or the named subset of it."""
    suite_spec = suites().get(suite) if suite else None
    if task_names:
        specs = [tasks().get(n) for n in task_names]
        if suite_spec is not None:
            outside = [s.name for s in specs if s.name not in suite_spec.tasks]
            if outside:
                raise UnknownNameError(f"task(s) {', '.join(outside)} are not in suite {suite_spec.name!r}")
        return suite_spec, specs
    if suite_spec is None:
        raise UnknownNameError("give --suite or --tasks")
    return suite_spec, [tasks().get(n) for n in suite_spec.tasks]


__all__ = ["DEFAULT_MODEL", "DEFAULT_SUITE", "closest", "get_model", "models", "resolve_tasks", "suites",
           "task_families", "task_family", "tasks"]
