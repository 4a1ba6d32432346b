"""The library API a notebook calls; the CLI is a thin shell over these functions.

>>> from mmbench import api
>>> outcome = api.run(api.RunConfig(model="minilm", suite="mbeir-mini", tasks=("tuxpaint_task1",)))
>>> outcome.average
"""

from __future__ import annotations

from pathlib import Path

from mmbench.catalog import DEFAULT_MODEL, DEFAULT_SUITE, get_model, models, suites, tasks
from mmbench.config import RunConfig
from mmbench.data.types import canonical_modality
from mmbench.models.base import ModelMeta
from mmbench.pipeline.run import run as _run
from mmbench.pipeline.types import Reporter, SuiteOutcome, TaskOutcome
from mmbench.data.specs import SuiteSpec, TaskSpec


def run(config: RunConfig | None = None, reporter: Reporter | None = None, *,
        encoders: dict | None = None) -> SuiteOutcome:
    """Run an evaluation and write its results (see :class:`RunConfig` for every setting); runs given
    one ``encoders`` dict share the loaded model."""
    return _run(config or RunConfig(), reporter, encoders=encoders)


def list_tasks(*, query_modality: str | None = None, candidate_modality: str | None = None,
               domain: str | None = None, source: str | None = None) -> list[TaskSpec]:
    qm = canonical_modality(query_modality) if query_modality else None
    cm = canonical_modality(candidate_modality) if candidate_modality else None
    out = []
    for name in tasks().names():
        t = tasks().get(name)
        if (qm and t.query_modality != qm) or (cm and t.candidate_modality != cm) \
                or (domain and t.domain != domain) or (source and t.source != source):
            continue
        out.append(t)
    return out


def list_suites() -> list[SuiteSpec]:
    return [suites().get(n) for n in suites().names()]


def list_models() -> list[ModelMeta]:
    return [models().get(n) for n in models().names()]


def describe_task(name: str, data_root: Path | None = None) -> dict:
    """A task's spec and, per expected file, whether it exists under ``data_root`` and its size."""
    spec = tasks().get(name)
    root = None
    if data_root is not None:
        root = Path(data_root)
    elif spec.default_data_root == "mbeir-mini":
        from mmbench.data.builders.mini import default_mini_root

        root = default_mini_root()
    files = {}
    for role in ("queries", "pool", "qrels", "instructions") if spec.files else ():
        rel = getattr(spec.files, role)
        if rel is None:
            continue
        entry = {"path": rel, "exists": None, "bytes": None, "lines": None}
        if root is not None:
            p = root / rel
            entry["path"] = str(p)
            entry["exists"] = p.is_file()
            if entry["exists"]:
                entry["bytes"] = p.stat().st_size
                with open(p, "rb") as f:
                    entry["lines"] = sum(1 for _ in f)
        files[role] = entry
    shown = {k: v for k, v in spec.__dict__.items() if k not in ("files",)}
    return {"spec": shown, "data_root": str(root) if root else None, "files": files}


__all__ = ["DEFAULT_MODEL", "DEFAULT_SUITE", "RunConfig", "SuiteOutcome", "TaskOutcome", "describe_task",
           "get_model", "list_models", "list_suites", "list_tasks", "run"]
