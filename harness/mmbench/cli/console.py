"""Terminal rendering for the commands (the CLI is the only part of mmbench that prints): the console,
rich progress bars for a run's :class:`~mmbench.pipeline.types.Reporter`, and result tables."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text
from rich.table import Table

from mmbench.pipeline.types import Reporter, SuiteOutcome


def make_console() -> Console:
    """A terminal's own width; written to a file or pipe, ``$COLUMNS`` or 200 (wide enough that the
    model table keeps every identifier whole)."""
    if sys.stdout.isatty():
        return Console(highlight=False)
    columns = os.environ.get("COLUMNS", "")
    return Console(highlight=False, width=int(columns) if columns.isdigit() and int(columns) > 0 else 200)


class RateColumn(ProgressColumn):
    """Items per second of a bar (rich's speed estimate over its recent updates), e.g. ``412 items/s``."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("– items/s", style="progress.data.speed")
        return Text(f"{speed:,.0f} items/s" if speed >= 10 else f"{speed:.1f} items/s", style="progress.data.speed")


class RichReporter(Reporter):
    """Progress bars on a terminal (off when not a TTY or MMBENCH_NO_PROGRESS=1); messages to stderr.
    Each phase (encode, search) has its own bar: done/total, items per second, elapsed and remaining
    time (updated per encoded batch, so the rate and ETA are there from the first batches)."""

    def __init__(self, console: Console):
        self.console = console
        self.err = Console(stderr=True, highlight=False)
        enabled = sys.stderr.isatty() and os.environ.get("MMBENCH_NO_PROGRESS") != "1"
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                             TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                             console=self.err, disable=not enabled, transient=False)

    def __enter__(self):
        self.bars.start()
        return self

    def __exit__(self, *exc):
        self.bars.stop()

    def progress(self, description: str, total: int):
        task = self.bars.add_task(description, total=total)

        def update(done: int, total: int) -> None:
            self.bars.update(task, completed=done, total=total)

        return update

    def message(self, text: str) -> None:
        self.err.print(f"[dim]{text}[/dim]")


def where_table(config, outcomes: list[SuiteOutcome]) -> Table:
    """Where this run's files went: each results folder (and its rerank experiment), the mteb-format
    copies, the embedding cache, the built datasets and the model assets."""
    from mmbench.config import data_home
    from mmbench.pipeline.write import extras_root

    table = Table(title="where everything went", show_header=False, box=None, pad_edge=False)
    table.add_column("what", style="bold")
    table.add_column("path", overflow="fold")
    for o in outcomes:
        table.add_row(f"results ({o.suite})", str(o.directory))
        if o.summary_path:
            table.add_row("  summary", str(o.summary_path))
        if o.experiment is not None:
            table.add_row("  rerank results", str(o.experiment.directory))
        mteb = extras_root(config.output, o.directory, config.variant()) / "mteb" / "results"
        if mteb.is_dir() and any(t.path.with_suffix(".json").is_file() and _is_mteb(t.path) for t in o.tasks):
            table.add_row("  mteb-format copies", str(mteb))
    cache = config.cache_dir
    table.add_row("embedding cache", str(cache / "embeddings"))
    table.add_row("built datasets", str(data_home()))
    table.add_row("model assets", str(cache / "assets"))
    return table


def _is_mteb(record_path) -> bool:
    import json

    try:
        return json.loads(record_path.read_text()).get("task", {}).get("source", "").startswith("mteb")
    except (OSError, ValueError):
        return False


def summary_table(outcome: SuiteOutcome) -> Table:
    table = Table(title=f"{outcome.model} ({outcome.revision}) on {outcome.suite} [{outcome.pool} pool]")
    table.add_column("task")
    table.add_column("headline")
    table.add_column("score", justify="right")
    table.add_column("ndcg@10", justify="right")
    table.add_column("mrr@10", justify="right")
    table.add_column("queries", justify="right")
    table.add_column("candidates", justify="right")
    for t in outcome.tasks:
        table.add_row(t.task + (" (reused)" if t.reused else ""), t.main_metric, f"{100 * t.main_score:.2f}",
                      _pct(t.metrics.get("ndcg@10")), _pct(t.metrics.get("mrr@10")),
                      f"{t.n_queries:,}", f"{t.n_candidates:,}")
    if outcome.average is not None:
        table.add_section()
        table.add_row("average", "mean of headlines", f"{100 * outcome.average:.2f}", "", "", "", "")
    table.caption = "hit@k = UniIR's \"Recall@k\": 1 if any positive is in the top k. Scores ×100."
    return table


def rerank_table(first: SuiteOutcome, experiment: SuiteOutcome) -> Table:
    """The reranked tasks beside their first-stage scores (same queries: a paired comparison)."""
    table = Table(title=experiment.suite)
    for name in ("task", "headline", "first stage", "reranked", "Δ", "ndcg@10", "mrr@10"):
        table.add_column(name, justify="left" if name in ("task", "headline") else "right")
    base = {t.task: t.main_score for t in first.tasks}
    for t in experiment.tasks:
        table.add_row(t.task + (" (reused)" if t.reused else ""), t.main_metric, _pct(base.get(t.task)),
                      f"{100 * t.main_score:.2f}", f"{100 * (t.main_score - base.get(t.task, 0.0)):+.2f}",
                      _pct(t.metrics.get("ndcg@10")), _pct(t.metrics.get("mrr@10")))
    if experiment.average is not None:
        first_avg = sum(base[t.task] for t in experiment.tasks) / len(experiment.tasks)
        table.add_section()
        table.add_row("average", "mean of headlines", _pct(first_avg), f"{100 * experiment.average:.2f}",
                      f"{100 * (experiment.average - first_avg):+.2f}", "", "")
    skipped = [t.task for t in first.tasks if t.task not in {e.task for e in experiment.tasks}]
    table.caption = "Scores ×100." + (f" Not reranked (modality the reranker cannot read): {', '.join(skipped)}." if skipped else "")
    return table


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}"
