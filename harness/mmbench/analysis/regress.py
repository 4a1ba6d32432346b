"""Two-sided regression check of a run against a committed baseline file.

The baseline (JSON, written atomically by ``mmbench regress --update``) holds, per task, the headline
metric and score, the query count, the config hash and data fingerprints it came from, and the
per-query vectors of the headline metric and of ``ndcg@10`` (query id -> value).

A task *changed* when

* its headline moved by more than ``tolerance`` (absolute, on the 0-1 scale) in either direction, or
* a paired randomization test on one of the stored per-query vectors gives p < ``alpha`` (per-query
  differences within 1e-6 count as equal, so float noise is not a change; ``ndcg@10`` catches
  consistent small ranking shifts that the 0/1 headline cannot), or
* its set of scored queries differs, or it is missing from the run.

Improvements count as changes too: they must be accepted deliberately with ``--update``.
Differences in config hash or data fingerprints are reported as notes (the scores decide).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mmbench.analysis import stats
from mmbench.analysis.compare import RunResults, load_run
from mmbench.analysis.escape import console
from mmbench.errors import DataError, MmbenchError
from mmbench.results.records import check_field, json_type, read_json_object
from mmbench.util.io import write_json

BASELINE_SCHEMA = 1
PER_QUERY_METRICS = ("ndcg@10",)          # stored besides each task's headline metric
QUERY_ATOL = 1e-6
DEFAULT_TOLERANCE = 0.005
DEFAULT_ALPHA = 0.05
DEFAULT_RESAMPLES = 10_000


def make_baseline(run: RunResults) -> dict:
    tasks = {}
    for name in sorted(run.tasks):
        t = run.tasks[name]
        rec = t.record
        prov = rec.get("provenance", {})
        metrics = [rec["main_metric"], *[m for m in PER_QUERY_METRICS if m != rec["main_metric"]]]
        per_query = {}
        for m in metrics:
            try:
                per_query[m] = t.per_query(m)
            except MmbenchError:
                if m == rec["main_metric"]:
                    raise
        tasks[name] = {"main_metric": rec["main_metric"], "main_score": rec["main_score"],
                       "n_queries": rec.get("n_queries"), "n_candidates": rec.get("n_candidates"),
                       "config_hash": prov.get("config_hash"), "data_fingerprints": prov.get("data_fingerprints", {}),
                       "per_query": per_query}
    return {"schema_version": BASELINE_SCHEMA, "model": run.model, "revision": run.revision, "suite": run.suite,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "how_to_update": "mmbench regress --baseline <this file> --update (after reviewing the change)",
            "tasks": tasks}


def load_baseline(path: Path) -> dict:
    """The baseline at ``path``, every field :func:`check` reads checked: anything else is one
    :class:`~mmbench.errors.DataError` naming the file, the field and what was expected."""
    path = Path(path)
    if not path.exists():
        raise MmbenchError(f"{path}: baseline not found (create it with `mmbench regress --baseline {path} --update RUN`)")
    data = read_json_object(path, what="regression baseline")
    if data.get("schema_version") != BASELINE_SCHEMA or not isinstance(data.get("tasks"), dict):
        raise DataError(path, f"not an mmbench baseline (expected schema_version {BASELINE_SCHEMA} and an object "
                              f"'tasks'; found schema_version {data.get('schema_version')!r}, 'tasks' "
                              f"{json_type(data.get('tasks')) if 'tasks' in data else 'missing'})")
    for key in ("model", "revision", "suite"):
        check_field(path, data, key, "string")
    for name, task in data["tasks"].items():
        where = f"tasks.{name}"
        if not isinstance(task, dict):
            raise DataError(path, f"expected an object, found {json_type(task)}", field=where)
        for key, kind, required in (("main_metric", "string", True), ("main_score", "score", True),
                                    ("n_queries", "count", False), ("n_candidates", "count", False),
                                    ("config_hash", "string", False), ("data_fingerprints", "object", False),
                                    ("per_query", "object", False)):
            try:
                check_field(path, task, key, kind, required=required)
            except DataError as exc:
                raise DataError(path, str(exc).split(": ", 1)[-1], field=f"{where}.{key}") from None
        for metric, values in (task.get("per_query") or {}).items():
            field_name = f"{where}.per_query.{metric}"
            if not isinstance(values, dict):
                raise DataError(path, f"expected an object of query id -> value, found {json_type(values)}",
                                field=field_name)
            for qid, v in values.items():
                if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
                    raise DataError(path, f"query {qid[:80]!r}: expected a number, found {json_type(v)}"
                                          + (f" {v!r}" if isinstance(v, float) else ""), field=field_name)
    return data


def default_run_dir(baseline: dict, results: Path) -> Path:
    from mmbench.results.layout import result_dir

    return result_dir(results, baseline["model"], baseline["revision"], baseline["suite"])


@dataclass
class TaskCheck:
    task: str
    metric: str
    baseline: float | None
    current: float | None
    changed: bool
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    p_values: dict[str, float] = field(default_factory=dict)
    queries_changed: dict[str, int] = field(default_factory=dict)

    @property
    def delta(self) -> float | None:
        return None if self.baseline is None or self.current is None else self.current - self.baseline


@dataclass
class RegressReport:
    baseline_path: Path
    run_path: Path
    tolerance: float
    alpha: float
    checks: list[TaskCheck]

    @property
    def passed(self) -> bool:
        return not any(c.changed for c in self.checks)

    def to_dict(self) -> dict:
        return {"baseline": str(self.baseline_path), "run": str(self.run_path), "tolerance": self.tolerance,
                "alpha": self.alpha, "passed": self.passed,
                "tasks": [{"task": c.task, "metric": c.metric, "baseline": c.baseline, "current": c.current,
                           "delta": c.delta, "changed": c.changed, "reasons": c.reasons, "notes": c.notes,
                           "p_values": c.p_values, "queries_changed": c.queries_changed} for c in self.checks]}

    def rich_table(self):
        """The overview: one row per task, its status a word (the reasons are in :meth:`details`)."""
        from rich.table import Table

        table = Table(title=f"regress vs {console(self.baseline_path)} (tolerance ±{self.tolerance}, alpha {self.alpha})")
        width = max([len(c.task) for c in self.checks] + [4])
        table.add_column("task", no_wrap=True, min_width=width)
        table.add_column("metric", no_wrap=True)
        for col in ("baseline", "current", "Δ"):
            table.add_column(col, justify="right", no_wrap=True)
        table.add_column("status", no_wrap=True)
        for c in self.checks:
            table.add_row(console(c.task), console(c.metric), _f(c.baseline), _f(c.current), "-" if c.delta is None else f"{c.delta:+.6f}",
                          "[red]CHANGED[/red]" if c.changed else ("[green]ok[/green]" + (" *" if c.notes else "")))
        return table

    def details(self) -> list[str]:
        """Each task that changed or carries a note, on a line of its own, then its reasons, notes and
        changed query counts indented below it (plain text: wraps at any width, never cut)."""
        out = []
        for c in self.checks:
            if not (c.changed or c.notes):
                continue
            out.append(f"{c.task}: {'CHANGED' if c.changed else 'ok, with notes'}")
            out += [f"  {r}" for r in c.reasons]
            out += [f"  note: {n}" for n in c.notes]
            moved = {m: n for m, n in c.queries_changed.items() if n}
            if moved:
                out.append("  queries changed: " + ", ".join(f"{m}: {n}" for m, n in moved.items()))
        return out


def _f(x) -> str:
    return "-" if x is None else f"{x:.6f}"


def check(run: RunResults, baseline: dict, *, baseline_path: Path, tolerance: float = DEFAULT_TOLERANCE,
          alpha: float = DEFAULT_ALPHA, n_resamples: int = DEFAULT_RESAMPLES, seed: int = stats.DEFAULT_SEED) -> RegressReport:
    if tolerance < 0:
        raise MmbenchError(f"--tolerance must be >= 0, got {tolerance}")
    checks = []
    for name, base in baseline["tasks"].items():
        metric = base["main_metric"]
        t = run.tasks.get(name)
        if t is None:
            problem = run.problem_of(name)
            checks.append(TaskCheck(name, metric, base["main_score"], None, True,
                                    [f"unreadable: {problem}" if problem else f"task missing from {run.path}"]))
            continue
        rec = t.record
        c = TaskCheck(name, metric, float(base["main_score"]), float(rec["main_score"]), False)
        if rec["main_metric"] != metric:
            c.changed = True
            c.reasons.append(f"headline metric {rec['main_metric']} (baseline {metric})")
        if abs(c.delta) > tolerance + 1e-12:
            c.changed = True
            c.reasons.append(f"{'up' if c.delta > 0 else 'down'} {abs(c.delta):.6f} > tolerance {tolerance}")
        prov = rec.get("provenance", {})
        if base.get("config_hash") and prov.get("config_hash") != base.get("config_hash"):
            c.notes.append("config hash differs")
        fp_base, fp_now = base.get("data_fingerprints", {}), prov.get("data_fingerprints", {})
        differing = sorted(k for k in set(fp_base) | set(fp_now) if fp_base.get(k) != fp_now.get(k))
        if differing:
            c.notes.append("data fingerprints differ: " + ", ".join(differing))
        for m, base_q in base.get("per_query", {}).items():
            try:
                now_q = t.per_query(m)
            except MmbenchError as exc:
                c.changed = True
                c.reasons.append(str(exc))
                continue
            if set(now_q) != set(base_q):
                c.changed = True
                c.reasons.append(f"{m}: scored queries differ ({len(base_q)} in baseline, {len(now_q)} now, "
                                 f"{len(set(now_q) & set(base_q))} shared)")
                continue
            qids = sorted(base_q)
            a = np.array([now_q[q] for q in qids])
            b = np.array([base_q[q] for q in qids])
            n_changed = int(np.sum(np.abs(a - b) > QUERY_ATOL))
            c.queries_changed[m] = n_changed
            if n_changed:
                p = stats.randomization_test(a, b, n_resamples=n_resamples, seed=seed, atol=QUERY_ATOL)
                c.p_values[m] = p
                if p < alpha:
                    c.changed = True
                    c.reasons.append(f"{m}: per-query scores changed (paired randomization p = {p:.2g} < {alpha}, "
                                     f"{n_changed} queries, mean {'up' if a.mean() > b.mean() else 'down'})")
        checks.append(c)
    for file, problem in sorted(run.problems.items()):
        if Path(file).stem not in baseline["tasks"]:
            checks.append(TaskCheck(Path(file).stem, "-", None, None, False,
                                    notes=[f"not in the baseline (ignored), and unreadable: {problem}"]))
    extra = sorted(set(run.tasks) - set(baseline["tasks"]))
    for name in extra:
        checks.append(TaskCheck(name, run.tasks[name].record["main_metric"], None,
                                float(run.tasks[name].record["main_score"]), False, notes=["not in the baseline (ignored)"]))
    return RegressReport(Path(baseline_path), run.path, tolerance, alpha, checks)


def update(run: RunResults, path: Path) -> dict:
    """Write (atomically) a new baseline from ``run``; returns it."""
    data = make_baseline(run)
    write_json(Path(path), data)
    return data


def resolve_run(run_dir: Path | None, baseline_path: Path, results: Path) -> RunResults:
    if run_dir is not None:
        return load_run(run_dir)
    if not Path(baseline_path).exists():
        raise MmbenchError(f"{baseline_path}: baseline not found; pass the run folder (RUN) or an existing "
                           f"--baseline to locate it")
    base = load_baseline(baseline_path)
    path = default_run_dir(base, results)
    if not path.is_dir():
        raise MmbenchError(f"{path}: no results of {base['model']} ({base['revision']}) on {base['suite']}; "
                           f"run `mmbench run --model {base['model']} --suite {base['suite']} --output {results}` first")
    return load_run(path)
