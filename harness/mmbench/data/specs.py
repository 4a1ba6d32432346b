"""Task and suite specs: TOML files under ``tasks/`` validated into frozen dataclasses.

Specs are data. Behaviour lives in the task family a spec names in its ``loader`` field
(``loader = "mbeir"``; :mod:`mmbench.data.families`, :func:`mmbench.catalog.task_families`). Unknown keys,
missing keys and wrong types are errors that name the file and the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from importlib.resources import files
from pathlib import Path

from mmbench.data.types import canonical_modality
from mmbench.errors import DataError
from mmbench.metrics.families import parse_metric


def tasks_dir() -> Path:
    """The folder of specs: ``$MMBENCH_TASKS_DIR``, else the installed data package ``mmbench.specs``
    (the repository's ``tasks/``, which pyproject.toml maps onto that package: the same folder in an
    editable install, a copy in a wheel or sdist install)."""
    env = os.environ.get("MMBENCH_TASKS_DIR")
    if env:
        return Path(env)
    return Path(str(files("mmbench.specs")))


@dataclass(frozen=True)
class TaskFiles:
    queries: str
    pool: str
    qrels: str
    instructions: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    name: str
    loader: str                       # the task family (mmbench.catalog.task_families): "mbeir", "mteb", a plugin's
    source: str                       # "mbeir", "mbeir-mini", "mteb", ...
    dataset: str
    query_modality: str
    candidate_modality: str
    domain: str
    metrics: tuple[str, ...]
    main_metric: str
    files: TaskFiles | None = None    # M-BEIR-layout files, relative to the data root
    loader_args: dict = field(default_factory=dict)   # the family's own settings (e.g. mteb task name)
    dataset_id: int | None = None
    task_id: int | None = None
    top_k: int = 100
    n_queries: int | None = None      # published count, shown by `show task`
    n_candidates: int | None = None
    default_data_root: str | None = None   # e.g. "mini": the embedded suite's build folder
    description: str = ""
    path: str = ""                    # spec file it came from

    def spec_hash(self) -> str:
        d = asdict(self)
        d.pop("path")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def paper_metric_note(self) -> str:
        return "hit@k is what M-BEIR/UniIR tables call Recall@k (1 if any positive is in the top k)"


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    tasks: tuple[str, ...]
    pool: str = "local"               # "local": each task against its own pool; "global": the union
    description: str = ""
    groups: dict = field(default_factory=dict)   # {"CQADupStack": [member tasks]}: their mean counts as one task
    pool_file: str | None = None      # a global suite's own pool file under the data root (read when present)
    path: str = ""


def _check_keys(path: Path, data: dict, cls) -> None:
    allowed = {f.name for f in fields(cls)} - {"path"}
    for key in data:
        if key not in allowed:
            raise DataError(path, f"unknown key {key!r}; allowed: {', '.join(sorted(allowed))}", field=key)


def _require(path: Path, data: dict, key: str, typ):
    if key not in data:
        raise DataError(path, "missing required key", field=key)
    value = data[key]
    if not isinstance(value, typ):
        raise DataError(path, f"expected {getattr(typ, '__name__', typ)}, got {type(value).__name__}", field=key)
    return value


def load_task_spec(path: Path) -> TaskSpec:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DataError(path, f"invalid TOML: {exc}") from None
    _check_keys(path, data, TaskSpec)
    files = data.get("files")
    if files is not None:
        if not isinstance(files, dict):
            raise DataError(path, "expected a table", field="files")
        for key in files:
            if key not in {f.name for f in fields(TaskFiles)}:
                raise DataError(path, f"unknown key {key!r} in [files]", field=f"files.{key}")
        for key in ("queries", "pool", "qrels"):
            _require(path, files, key, str)
    elif data.get("loader") == "mbeir":
        raise DataError(path, "missing required key", field="files")
    if not isinstance(data.get("loader_args", {}), dict):
        raise DataError(path, "expected a table", field="loader_args")
    metrics = tuple(_require(path, data, "metrics", list))
    for m in metrics:
        try:
            parse_metric(m)
        except ValueError as exc:
            raise DataError(path, str(exc), field="metrics") from None
    main = _require(path, data, "main_metric", str)
    if main not in metrics:
        raise DataError(path, f"main_metric {main!r} is not in metrics", field="main_metric")
    kwargs = {k: v for k, v in data.items() if k not in {"files", "metrics"}}
    for key in ("name", "loader", "source", "dataset", "query_modality", "candidate_modality", "domain"):
        _require(path, data, key, str)
    for key in ("query_modality", "candidate_modality"):
        try:
            kwargs[key] = canonical_modality(data[key])
        except ValueError as exc:
            raise DataError(path, str(exc), field=key) from None
    max_k = max(parse_metric(m)[1] for m in metrics)
    top_k = int(data.get("top_k", 100))
    if not max_k <= top_k <= 1000:
        raise DataError(path, f"top_k must be between the largest metric cut-off ({max_k}) and 1000", field="top_k")
    return TaskSpec(files=TaskFiles(**files) if files else None, metrics=metrics, path=str(path), **kwargs)


def load_suite_spec(path: Path) -> SuiteSpec:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DataError(path, f"invalid TOML: {exc}") from None
    _check_keys(path, data, SuiteSpec)
    _require(path, data, "name", str)
    tasks = tuple(_require(path, data, "tasks", list))
    pool = data.get("pool", "local")
    if pool not in ("local", "global"):
        raise DataError(path, f"pool must be 'local' or 'global', got {pool!r}", field="pool")
    groups = data.get("groups", {})
    if not isinstance(groups, dict) or not all(isinstance(v, list) and v for v in groups.values()):
        raise DataError(path, "expected a table of non-empty task lists", field="groups")
    for group, members in groups.items():
        outside = [m for m in members if m not in tasks]
        if outside:
            raise DataError(path, f"group {group!r} names tasks not in the suite: {', '.join(outside)}", field="groups")
    pool_file = data.get("pool_file")
    if pool_file is not None and (not isinstance(pool_file, str) or pool != "global"):
        raise DataError(path, "expected a path (string) under the data root, in a suite with pool = 'global'",
                        field="pool_file")
    return SuiteSpec(name=data["name"], tasks=tasks, pool=pool, groups={k: tuple(v) for k, v in groups.items()},
                     description=data.get("description", ""), pool_file=pool_file, path=str(path))


def iter_spec_files(kind: str) -> list[Path]:
    """``kind`` = "tasks" (every ``*.toml`` outside ``suites/``) or "suites"."""
    root = tasks_dir()
    if kind == "suites":
        return sorted((root / "suites").glob("*.toml"))
    return sorted(p for p in root.rglob("*.toml") if p.parent.name != "suites")
