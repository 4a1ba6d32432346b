"""Compare runs task by task with paired tests on their per-query scores.

A *run* is a result folder ``<output>/<model>/<revision>/<suite>`` (or any folder below it that
holds task result JSONs, e.g. an ``experiments/...`` subfolder). The first run is the baseline; every
other run is compared with it on the tasks they share:

* per-query scores of the metric (default: each task's headline) are aligned by query id;
* delta = mean(run) - mean(baseline), a paired bootstrap 95 % interval of it, the paired
  randomization (sign-flip) test and the paired t-test (:mod:`mmbench.analysis.stats`);
* the chosen test's p-values are Holm-adjusted over the whole family of (task, run) comparisons;
* wins/ties/losses count queries.

Runs are refused when, for a shared task, their query sets, pools (pool mode, number of candidates,
pool file fingerprint) or qrels (fingerprint) differ -- the message names the task and what differs --
unless ``force`` is given (then only the queries both runs scored are paired, and the report says so).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmbench.analysis import stats
from mmbench.analysis.escape import console, md
from mmbench.errors import DataError, MmbenchError
from mmbench.results.layout import SUMMARY_FILE, record_file
from mmbench.results.records import (UnsafeNameError, check_task_record, is_task_result_like, read_json_object,
                                     read_summary)
from mmbench.util.io import atomic_open, write_json

TESTS = ("randomization", "t")


@dataclass
class TaskRun:
    name: str
    record: dict
    json_path: Path
    per_query_path: Path

    def per_query(self, metric: str) -> dict[str, float]:
        """query id -> value of ``metric`` from the task's per-query TSV."""
        path = self.per_query_path
        if not path.is_file():
            raise MmbenchError(f"{path}: per-query file missing (needed for paired tests)")
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise DataError(path, f"cannot read the per-query file ({exc.strerror or exc})") from None
        except UnicodeDecodeError as exc:
            raise DataError(path, f"not UTF-8 (byte {exc.start}); expected a tab-separated per-query file") from None
        lines = text.split("\n")
        header = lines[0].rstrip("\r").split("\t")
        if header[0] != "query_id":
            raise DataError(path, "expected a 'query_id' header column", line=1)
        if metric not in header:
            raise DataError(path, f"no column {metric!r} (has {', '.join(header[1:])})")
        col = header.index(metric)
        if not text.endswith("\n"):
            raise DataError(path, "truncated: the last line has no line end (an interrupted copy?)", line=len(lines))
        out = {}
        for lineno, line in enumerate(lines[1:-1], 2):
            parts = line.rstrip("\r").split("\t")
            if len(parts) != len(header):
                raise DataError(path, f"malformed row: {len(parts)} fields, the header has {len(header)}", line=lineno)
            try:
                value = float(parts[col])
            except ValueError:
                raise DataError(path, f"expected a number, found {parts[col][:40]!r}", line=lineno, field=metric) from None
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise DataError(path, f"expected a number in [0, 1], found {parts[col][:40]!r}", line=lineno, field=metric)
            if parts[0] in out:
                raise DataError(path, f"query {parts[0][:80]!r} appears twice", line=lineno)
            out[parts[0]] = value
        return out


@dataclass
class RunResults:
    path: Path
    label: str
    model: str
    revision: str
    suite: str
    experiment: str = ""                  # "" for a first stage; e.g. "rerank=<reranker>__top<K>"
    variant: str = ""                     # "" for the default configuration; e.g. "topk=50" (record_variant)
    tasks: dict[str, TaskRun] = field(default_factory=dict)
    problems: dict[Path, str] = field(default_factory=dict)     # task result file -> why it cannot be read
    summary: dict = field(default_factory=dict)                 # the folder's summary.json ({} when none)

    def problem_of(self, task: str) -> str | None:
        """Why ``<task>.json`` of this run cannot be read, or None."""
        return self.problems.get(self.path / record_file(task))

    def why_missing(self, task: str) -> str:
        """Why the run has no result for ``task``, in words (a broken file, or what summary.json says)."""
        problem = self.problem_of(task)
        if problem:
            return problem
        if task in (self.summary.get("missing_tasks") or []):
            return f"not run (summary.json lists it among missing_tasks; no {record_file(task)} in {self.path})"
        return f"no {record_file(task)} in {self.path}"

    @property
    def name(self) -> str:
        """The model, its configuration when not the default, and the experiment when there is one
        (``minilm [topk=50] + rerank=bge__top10``)."""
        model = f"{self.model} [{self.variant}]" if self.variant else self.model
        return f"{model} + {self.experiment}" if self.experiment else model


def scan_folder(folder: Path) -> tuple[list[tuple[Path, dict]], dict[Path, str]]:
    """The task records in ``folder`` (checked, :func:`~mmbench.results.records.read_task_result`) and
    the files that claim to be task results but cannot be read (file -> the named error's message).
    A JSON object with none of ``schema_version``, ``task``, ``main_score`` is not a result and is
    passed over; a record whose ``task.name`` is not its file's name is a problem. A name that cannot
    safely be a file name raises :class:`~mmbench.results.records.UnsafeNameError`."""
    found, problems = [], {}
    for p in sorted(Path(folder).glob("*.json")):
        if p.name == SUMMARY_FILE or p.name.startswith("."):
            continue
        try:
            data = read_json_object(p, what="task result")
            if not is_task_result_like(data):
                continue
            rec = check_task_record(p, data)
            if record_file(rec["task"]["name"]) != p.name:
                raise DataError(p, f"the record is task {rec['task']['name']!r}, its file is named {p.name} "
                                   f"(expected {record_file(rec['task']['name'])})", field="task.name")
        except UnsafeNameError:
            raise
        except DataError as exc:
            problems[p] = str(exc)
            continue
        found.append((p, rec))
    return found, problems


def find_run_folders(root: Path, *, include_experiments: bool = True) -> list[Path]:
    """Folders under ``root`` (itself included) that hold task result JSONs."""
    root = Path(root)
    out = []
    for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        rel = folder.relative_to(root).parts
        if not include_experiments and "experiments" in rel:
            continue
        if any(part.startswith(".") for part in rel):
            continue
        found, problems = scan_folder(folder)
        if found or problems:
            out.append(folder)
    return out


def record_variant(record: dict) -> str:
    """The configuration a task record was computed with, as its results folder's variant
    (:meth:`mmbench.config.RunConfig.variant`: ``""`` for the default, else e.g. ``topk=50``), from the
    record's ``provenance.config``, never from the folder's name. Settings this version does not know
    are passed over; a record without a config is the default's."""
    import dataclasses

    from mmbench.config import RunConfig

    config = (record.get("provenance") or {}).get("config")
    if not isinstance(config, dict):
        return ""
    known = {f.name for f in dataclasses.fields(RunConfig)} - {"output", "cache_dir", "data_root", "mini_root"}
    fields = {k: v for k, v in config.items() if k in known}
    if isinstance(fields.get("model_options"), dict):
        fields["model_options"] = tuple(sorted(fields["model_options"].items()))
    for name in ("tasks", "devices"):
        if isinstance(fields.get(name), list):
            fields[name] = tuple(fields[name])
    try:
        return RunConfig(**fields).variant()
    except (TypeError, ValueError):
        return ""


def run_identity(folder: Path, record_path: Path, record: dict) -> tuple[str, str, str, str]:
    """(model, revision, suite, experiment) of a run folder, from its records, never from folder names.

    A first-stage task record names its model under ``model``; a rerank record under ``first_stage``
    (its reranker under ``rerank``), and the folder's ``summary.json`` names the experiment.
    """
    summary = read_summary(Path(folder) / SUMMARY_FILE)
    stage = record.get("model") if isinstance(record.get("model"), dict) else record.get("first_stage")
    stage = stage if isinstance(stage, dict) else {}
    name = stage.get("name", stage.get("model")) or summary.get("model")
    revision = stage.get("revision") or summary.get("revision")
    suite = record.get("suite") or summary.get("suite")
    missing = [k for k, v in (("model", name), ("revision", revision), ("suite", suite)) if not v]
    if missing:
        raise MmbenchError(f"{record_path}: the record names no {', '.join(missing)} (not an mmbench task result?)")
    experiment = summary.get("experiment") or ""
    rerank = record.get("rerank")
    if not experiment and isinstance(rerank, dict):
        from mmbench.util.text import slug

        experiment = f"rerank={slug(str(rerank.get('reranker', {}).get('name', '?')))}__top{rerank.get('top_k', '?')}"
    return str(name), str(revision), str(suite), str(experiment)


def load_run(path: Path, label: str | None = None) -> RunResults:
    """Load a run folder; a folder above exactly one run folder (not counting experiments) is accepted too."""
    path = Path(path)
    if not path.is_dir():
        raise MmbenchError(f"{path}: not a folder (expected <output>/<model>/<revision>/<suite>)")
    files, problems = scan_folder(path)
    if not files and not problems:
        below = find_run_folders(path, include_experiments=False)
        if len(below) != 1:
            hint = ("; ".join(str(p) for p in below[:8]) if below else "none found")
            raise MmbenchError(f"{path}: no task results here; pass one run folder "
                               f"(<output>/<model>/<revision>/<suite>); run folders below it: {hint}")
        path = below[0]
        files, problems = scan_folder(path)
    if not files:
        raise MmbenchError(f"{path}: no readable task result:\n  " + "\n  ".join(problems.values()))
    model, revision, suite, experiment = run_identity(path, files[0][0], files[0][1])
    run = RunResults(path, label or "", model, revision, suite, experiment, variant=record_variant(files[0][1]),
                     problems=problems, summary=read_summary(path / SUMMARY_FILE))
    for p, rec in files:
        name = rec["task"]["name"]
        run.tasks[name] = TaskRun(name, rec, p, p.with_name(f"{name}.per_query.tsv"))
    return run


def _labels(runs: list[RunResults]) -> None:
    """Short unique labels: model/suite, plus revision or the path when needed."""
    def cand(r: RunResults, level: int) -> str:
        if level == 0:
            return f"{r.name}/{r.suite}"
        if level == 1:
            return f"{r.name}@{r.revision}/{r.suite}"
        parts = [x.path.resolve().parts for x in runs]
        pre = len(os.path.commonprefix(parts))
        suf = len(os.path.commonprefix([p[pre:][::-1] for p in parts]))
        mine = r.path.resolve().parts[pre:len(r.path.resolve().parts) - suf]
        return "/".join(mine) if mine else str(r.path)

    for level in range(3):
        labels = [r.label or cand(r, level) for r in runs]
        if len(set(labels)) == len(labels):
            break
    for r, lab in zip(runs, labels):
        r.label = lab


def _short(h: str | None) -> str:
    return "-" if h is None else str(h)[:12]


def differences(base: TaskRun, other: TaskRun, base_q: set[str], other_q: set[str]) -> list[str]:
    """What makes two task results incomparable (empty when they are comparable)."""
    out = []
    if base_q != other_q:
        out.append(f"query sets ({len(base_q)} vs {len(other_q)} queries, {len(base_q & other_q)} shared)")
    else:
        fa = base.record.get("provenance", {}).get("data_fingerprints", {}).get("queries")
        fb = other.record.get("provenance", {}).get("data_fingerprints", {}).get("queries")
        if fa and fb and fa != fb:
            out.append(f"query file (data_fingerprints.queries {_short(fa)} vs {_short(fb)})")
    pool = []
    if base.record.get("pool") != other.record.get("pool"):
        pool.append(f"pool mode {base.record.get('pool')} vs {other.record.get('pool')}")
    if base.record.get("n_candidates") != other.record.get("n_candidates"):
        pool.append(f"n_candidates {base.record.get('n_candidates')} vs {other.record.get('n_candidates')}")
    pa = base.record.get("provenance", {}).get("data_fingerprints", {}).get("pool")
    pb = other.record.get("provenance", {}).get("data_fingerprints", {}).get("pool")
    if pa != pb:
        pool.append(f"data_fingerprints.pool {_short(pa)} vs {_short(pb)}")
    if pool:
        out.append("pools (" + "; ".join(pool) + ")")
    qa = base.record.get("provenance", {}).get("data_fingerprints", {}).get("qrels")
    qb = other.record.get("provenance", {}).get("data_fingerprints", {}).get("qrels")
    if qa != qb:
        out.append(f"qrels (data_fingerprints.qrels {_short(qa)} vs {_short(qb)})")
    return out


@dataclass
class Row:
    task: str
    run: str
    metric: str
    result: stats.PairedResult
    p_adjusted: float = float("nan")
    significant: bool = False
    forced: list[str] = field(default_factory=list)   # what differed (only with force)


@dataclass
class Comparison:
    baseline: RunResults
    runs: list[RunResults]
    rows: list[Row]
    metric: str | None
    test: str
    alpha: float
    seed: int
    n_resamples: int
    confidence: float
    skipped_tasks: dict[str, list[str]]          # task -> labels of runs lacking it
    warnings: list[str] = field(default_factory=list)   # unreadable results of tasks not compared (file: why)

    # ----------------------------------------------------------------- outputs
    def to_dict(self) -> dict:
        return _clean({
            "baseline": {"label": self.baseline.label, "path": str(self.baseline.path),
                         "model": self.baseline.model, "revision": self.baseline.revision, "suite": self.baseline.suite,
                         "experiment": self.baseline.experiment or None},
            "runs": [{"label": r.label, "path": str(r.path), "model": r.model, "revision": r.revision, "suite": r.suite,
                      "experiment": r.experiment or None} for r in self.runs],
            "settings": {"metric": self.metric or "each task's main metric", "test": self.test, "alpha": self.alpha,
                         "correction": "holm (over every (task, run) comparison in this report)",
                         "seed": self.seed, "n_resamples": self.n_resamples, "confidence": self.confidence,
                         "delta": "mean(run) - mean(baseline) over the queries both scored"},
            "rows": [{"task": r.task, "run": r.run, "metric": r.metric, **r.result.to_dict(),
                      "p_adjusted": _finite(r.p_adjusted), "significant": r.significant,
                      "forced_despite": r.forced} for r in self.rows],
            "summary": self.summary(),
            "skipped_tasks": self.skipped_tasks,
            **({"warnings": self.warnings} if self.warnings else {}),
        })

    def summary(self) -> dict:
        """Per run: mean delta over tasks and significant wins/ties/losses across tasks."""
        out = {}
        for r in self.runs:
            rows = [x for x in self.rows if x.run == r.label]
            out[r.label] = {
                "tasks": len(rows),
                "mean_delta": _finite(float(np.mean([x.result.delta for x in rows]))) if rows else None,
                "significant_wins": sum(x.significant and x.result.delta > 0 for x in rows),
                "significant_losses": sum(x.significant and x.result.delta < 0 for x in rows),
                "not_significant": sum(not x.significant for x in rows),
            }
        return out

    def write_json(self, path: Path) -> None:
        write_json(path, self.to_dict())

    def markdown(self) -> str:
        p_name = "p (rand.)" if self.test == "randomization" else "p (t)"
        path = " ".join(str(self.baseline.path).replace("`", "'").split("\n"))
        lines = [f"Baseline: **{md(self.baseline.label)}** (`{path}`)", ""]
        lines.append(f"| task | run | metric | baseline | run | delta | {int(self.confidence * 100)}% CI | p (rand.) | p (t) | "
                     f"{p_name} Holm | W/T/L |")
        lines.append("|---|---|---|---:|---:|---:|---|---:|---:|---:|---|")
        for x in self.rows:
            r = x.result
            mark = " *" if x.significant else ""
            lines.append(
                f"| {md(x.task)} | {md(x.run)} | {md(x.metric)} | {100 * r.mean_b:.2f} | {100 * r.mean_a:.2f} | "
                f"{100 * r.delta:+.2f}{mark} | [{100 * r.ci_low:+.2f}, {100 * r.ci_high:+.2f}] | "
                f"{_p(r.p_randomization)} | {_p(r.p_t)} | {_p(x.p_adjusted)} | {r.wins}/{r.ties}/{r.losses} |")
        lines.append("")
        for label, s in self.summary().items():
            lines.append(f"- **{md(label)}**: mean delta {_pts(s['mean_delta'])} over {s['tasks']} tasks; "
                         f"significantly better on {s['significant_wins']}, worse on {s['significant_losses']}, "
                         f"not separable on {s['not_significant']}.")
        lines.append("")
        lines.append(f"Scores ×100. `*` = Holm-adjusted {self.test} p < {self.alpha}. Paired over queries "
                     f"(seed {self.seed}, {self.n_resamples} resamples). W/T/L counts queries.")
        for x in self.rows:
            if x.forced:
                lines.append(f"- forced: {md(x.task)} / {md(x.run)} differ in {md(', '.join(x.forced))}")
        for task, missing in self.skipped_tasks.items():
            lines.append(f"- skipped {md(task)}: missing in {md(', '.join(missing))}")
        for text in self.warnings:
            lines.append(f"- warning: {md(text)}")
        return "\n".join(lines) + "\n"

    def rich_table(self):
        from rich.table import Table

        table = Table(title=f"compare vs {console(self.baseline.label)} ({self.test} test, Holm, alpha={self.alpha})")
        for col, just in [("task", "left"), ("run", "left"), ("metric", "left"), ("base", "right"),
                          ("run", "right"), ("Δ", "right"), (f"{int(self.confidence * 100)}% CI", "right"),
                          ("p rand", "right"), ("p t", "right"), ("p Holm", "right"), ("W/T/L", "right")]:
            table.add_column(col, justify=just)
        for x in self.rows:
            r = x.result
            style = ("green" if r.delta > 0 else "red") if x.significant else None
            table.add_row(console(x.task), console(x.run), console(x.metric), f"{100 * r.mean_b:.2f}", f"{100 * r.mean_a:.2f}",
                          f"{100 * r.delta:+.2f}" + (" *" if x.significant else ""),
                          f"[{100 * r.ci_low:+.2f}, {100 * r.ci_high:+.2f}]", _p(r.p_randomization), _p(r.p_t),
                          _p(x.p_adjusted), f"{r.wins}/{r.ties}/{r.losses}", style=style)
        table.caption = "scores ×100; * = significant after Holm; W/T/L counts queries"
        return table

    def plot(self, path: Path) -> None:
        """PNG forest plot: per-(task, run) delta (×100) with its bootstrap interval (Pillow only)."""
        write_delta_plot(path, [(f"{x.task}  {x.run}" if len(self.runs) > 1 else x.task, 100 * x.result.delta,
                                 100 * x.result.ci_low, 100 * x.result.ci_high, x.significant) for x in self.rows],
                         title=f"delta vs {self.baseline.label} ({self.metric or 'headline metric'}, x100, "
                               f"{int(self.confidence * 100)}% bootstrap CI)")


def _clean(obj):
    """JSON-safe: NaN -> null, +-inf -> "inf"/"-inf"."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    return obj


def _finite(x: float):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _p(p: float) -> str:
    if p is None or math.isnan(p):
        return "-"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def _pts(x) -> str:
    return "-" if x is None else f"{100 * x:+.2f}"


def compare(paths: list[Path], *, metric: str | None = None, test: str = "randomization", alpha: float = 0.05,
            seed: int = stats.DEFAULT_SEED, n_resamples: int = stats.DEFAULT_RESAMPLES, confidence: float = 0.95,
            force: bool = False, tasks: list[str] | None = None, labels: list[str] | None = None) -> Comparison:
    if len(paths) < 2:
        raise MmbenchError("compare needs at least two runs (the first is the baseline)")
    if test not in TESTS:
        raise MmbenchError(f"--test must be one of {', '.join(TESTS)}, got {test!r}")
    runs = [load_run(p, labels[i] if labels and i < len(labels) else None) for i, p in enumerate(paths)]
    _labels(runs)
    # a task result that cannot be read is an error when its task is compared, a warning otherwise;
    # never a task that is silently "missing"
    broken, warnings = [], []
    for r in runs:
        for file, problem in r.problems.items():
            (broken if not tasks or Path(file).stem in tasks else warnings).append(problem)
    if broken:
        raise MmbenchError("unreadable task results (repair or remove them, or leave their tasks out with "
                           "--tasks):\n  " + "\n  ".join(broken))
    base, others = runs[0], runs[1:]
    names = [t for t in base.tasks if all(t in r.tasks for r in others)]
    skipped = {t: [r.label for r in runs if t not in r.tasks]
               for t in sorted(set().union(*(r.tasks for r in runs))) if t not in names}
    if tasks:
        unknown = [t for t in tasks if t not in names]
        if unknown:
            raise MmbenchError(f"task(s) not in every run: {', '.join(unknown)} (shared: {', '.join(names) or 'none'})")
        names = [t for t in names if t in tasks]
    if not names:
        raise MmbenchError("the runs share no task: " + "; ".join(f"{r.label}: {', '.join(r.tasks)}" for r in runs))

    problems: list[str] = []
    pending = []
    for task in names:
        bt = base.tasks[task]
        m = metric or bt.record["main_metric"]
        for r in others:
            ot = r.tasks[task]
            om = metric or ot.record["main_metric"]
            if om != m:
                problems.append(f"{task}: {r.label} has main metric {om}, the baseline {m} (pass --metric)")
                continue
            bq, oq = bt.per_query(m), ot.per_query(m)
            diff = differences(bt, ot, set(bq), set(oq))
            if diff and not force:
                problems.append(f"{task}: {base.label} and {r.label} differ in " + ", ".join(diff))
            pending.append((task, r, m, bq, oq, diff))
    if problems:
        raise MmbenchError("runs are not comparable (use --force to compare anyway):\n  " + "\n  ".join(problems))

    rows = []
    for task, r, m, bq, oq, diff in pending:
        qids = [q for q in bq if q in oq]
        if not qids:
            raise MmbenchError(f"{task}: {base.label} and {r.label} share no scored query")
        a = np.array([oq[q] for q in qids])
        b = np.array([bq[q] for q in qids])
        res = stats.paired(a, b, n_resamples=n_resamples, seed=seed, confidence=confidence)
        rows.append(Row(task, r.label, m, res, forced=diff))
    p = [x.result.p_randomization if test == "randomization" else x.result.p_t for x in rows]
    for x, adj in zip(rows, stats.holm(p)):
        x.p_adjusted = float(adj)
        x.significant = bool(not math.isnan(adj) and adj < alpha)
    return Comparison(base, others, rows, metric, test, alpha, seed, n_resamples, confidence, skipped, warnings)


# ------------------------------------------------------------------------------ PNG plot (Pillow)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):           # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def write_delta_plot(path: Path, items: list[tuple[str, float, float, float, bool]], *, title: str = "") -> None:
    """Horizontal forest plot: one line per item (label, delta, low, high, significant)."""
    from PIL import Image, ImageDraw

    font, small = _font(14), _font(12)
    row_h, top, bottom, left, right = 26, 46, 40, 20, 30
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max([probe.textlength(lbl, font=font) for lbl, *_ in items] + [80])
    plot_left = int(left + label_w + 16)
    # labels are drawn whole: the image grows with the longest label (and the title)
    width = max(900, plot_left + 420, int(left + probe.textlength(title, font=font) + right))
    plot_right = width - right
    height = top + bottom + row_h * max(1, len(items))
    values = [v for _, d, lo, hi, _ in items for v in (d, lo, hi) if math.isfinite(v)] + [0.0]
    lo_v, hi_v = min(values), max(values)
    span = hi_v - lo_v or 1.0
    lo_v, hi_v = lo_v - 0.08 * span, hi_v + 0.08 * span

    def x_of(v: float) -> float:
        return plot_left + (v - lo_v) / (hi_v - lo_v) * (plot_right - plot_left)

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((left, 12), title, fill="black", font=font)
    draw.line([(x_of(0), top - 6), (x_of(0), height - bottom + 6)], fill=(150, 150, 150), width=1)
    for i, (label, d, lo, hi, sig) in enumerate(items):
        y = top + row_h * i + row_h // 2
        color = ((0, 130, 60) if d > 0 else (200, 40, 40)) if sig else (60, 60, 60)
        draw.text((left, y - 8), label, fill="black", font=font)
        if math.isfinite(lo) and math.isfinite(hi):
            draw.line([(x_of(lo), y), (x_of(hi), y)], fill=color, width=2)
            for v in (lo, hi):
                draw.line([(x_of(v), y - 5), (x_of(v), y + 5)], fill=color, width=2)
        if math.isfinite(d):
            draw.ellipse([x_of(d) - 5, y - 5, x_of(d) + 5, y + 5], fill=color)
    # axis with a few ticks
    y_axis = height - bottom + 10
    draw.line([(plot_left, y_axis), (plot_right, y_axis)], fill="black")
    for v in np.linspace(lo_v, hi_v, 6):
        draw.line([(x_of(v), y_axis), (x_of(v), y_axis + 4)], fill="black")
        draw.text((x_of(v) - 14, y_axis + 6), f"{v:+.2f}", fill="black", font=small)
    with atomic_open(Path(path), "wb") as f:
        img.save(f, format="PNG")


def dumps(comparison: Comparison) -> str:
    return json.dumps(comparison.to_dict(), indent=2)
