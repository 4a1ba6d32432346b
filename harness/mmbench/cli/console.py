"""Terminal rendering for the commands (the CLI is the only part of mmbench that prints): the console,
rich progress bars for a run's :class:`~mmbench.pipeline.types.Reporter`, and result tables."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mmbench.pipeline.types import Reporter, SuiteOutcome


def make_console() -> Console:
    """A terminal's own width; written to a file or pipe, ``$COLUMNS`` or 200 (wide enough that the
    model table keeps every identifier whole)."""
    if sys.stdout.isatty():
        return Console(highlight=False)
    columns = os.environ.get("COLUMNS", "")
    return Console(highlight=False, width=int(columns) if columns.isdigit() and int(columns) > 0 else 200)


class RichReporter(Reporter):
    """Progress bars on a terminal (off when not a TTY or MMBENCH_NO_PROGRESS=1); messages to stderr."""

    def __init__(self, console: Console):
        self.console = console
        self.err = Console(stderr=True, highlight=False)
        enabled = sys.stderr.isatty() and os.environ.get("MMBENCH_NO_PROGRESS") != "1"
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=self.err, disable=not enabled, transient=False)

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
