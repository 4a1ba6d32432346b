"""`mmbench inspect RESULTS`: the failure gallery, one self-contained HTML page per task
(:mod:`mmbench.analysis.inspect`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mmbench.cli.params import split_values


def inspect(
    results: Annotated[Path, typer.Argument(metavar="RESULTS", help="A results folder <output>/<model>/<revision>/<suite> (or an experiments/... folder).")],
    task: Annotated[Optional[list[str]], typer.Option("--task", "-t", metavar="TASKS", help="Only these tasks (comma-separated or repeated; default: every task of RESULTS).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR", help="Folder for <task>.html (default: RESULTS/inspect, where leaderboards link to it).")] = None,
    against: Annotated[Optional[Path], typer.Option("--against", metavar="OTHER", help="Another results folder of the same tasks (a rerank experiment, another model): show and filter the queries whose outcome changed.")] = None,
    limit: Annotated[int, typer.Option("--limit", metavar="N", min=1, help="Queries shown per page: the N with the worst first-positive rank (plus, with --against, up to N changed ones).")] = 200,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", metavar="DIR", help="M-BEIR root, when the task data is not where the run read it.")] = None,
) -> None:
    """Failure gallery: per task, each query, its positives and the model's top 5 (hit/miss, modality), as HTML."""
    from mmbench.analysis.inspect import write_galleries
    from mmbench.cli.console import make_console

    def warn(text: str) -> None:
        typer.echo(f"warning: {text}", err=True)

    paths = write_galleries(results, out, tasks=list(split_values(task)) or None, against=against, limit=limit,
                            data_root=data_root, warn=warn)
    console = make_console()
    for p in paths:
        console.print(f"wrote {p}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("inspect", short_help="Failure gallery: queries, positives and top 5 as self-contained HTML.",
                epilog="Example:\n\n\b\n  mmbench inspect results/minilm/REV/mbeir-mini-global --task tuxpaint_task0\n"
                       "  mmbench inspect RUN --against RUN/experiments/rerank=NAME__top10")(inspect)
