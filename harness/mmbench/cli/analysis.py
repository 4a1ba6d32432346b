"""`mmbench compare`, `mmbench leaderboard build`, `mmbench regress` and `mmbench import-mteb`.

Heavy imports (pandas, Pillow) happen inside the command bodies.
"""

from __future__ import annotations

import shlex
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mmbench.cli.params import split_values


class Test(str, Enum):
    randomization = "randomization"
    t = "t"


class Format(str, Enum):
    table = "table"
    markdown = "markdown"
    json = "json"


def compare(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN", help="Run folders <output>/<model>/<revision>/<suite> (or an experiments/... folder); the first is the baseline.")],
    metric: Annotated[Optional[str], typer.Option("--metric", metavar="METRIC", help="Per-query metric to compare (default: each task's headline).")] = None,
    test: Annotated[Test, typer.Option("--test", help="Test whose p-values are Holm-corrected and decide significance.")] = Test.randomization,
    alpha: Annotated[float, typer.Option("--alpha", metavar="LEVEL", help="Significance level after Holm's correction.")] = 0.05,
    seed: Annotated[int, typer.Option("--seed", metavar="INT", help="Seed of the randomization test and the bootstrap.")] = 0,
    resamples: Annotated[int, typer.Option("--resamples", metavar="N", min=100, help="Randomization and bootstrap resamples.")] = 10_000,
    tasks: Annotated[Optional[list[str]], typer.Option("--tasks", "-t", metavar="TASKS", help="Only these tasks (comma-separated or repeated).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Compare even when query sets, pools or qrels differ (pairs the shared queries).")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="What to print: a table, markdown or JSON.")] = Format.table,
    markdown: Annotated[Optional[Path], typer.Option("--markdown", metavar="FILE", help="Also write the markdown report here.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", metavar="FILE", help="Also write the JSON report here.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", metavar="FILE", help="Also write a PNG of per-task deltas with their intervals here.")] = None,
) -> None:
    """Per-task deltas between runs with paired tests (randomization, t), bootstrap CIs and Holm correction."""
    from mmbench.analysis.compare import compare as run_compare, dumps
    from mmbench.analysis.escape import console as esc
    from mmbench.cli.console import make_console

    task_names = split_values(tasks)
    result = run_compare(list(runs), metric=metric, test=test.value, alpha=alpha, seed=seed, n_resamples=resamples,
                         force=force, tasks=list(task_names) or None)
    console = make_console()
    for text in result.warnings:
        typer.echo(f"warning: {text}", err=True)
    if fmt is Format.table:
        console.print(result.rich_table())
        for label, s in result.summary().items():
            console.print(f"{esc(label)}: mean Δ {100 * s['mean_delta']:+.2f} over {s['tasks']} tasks; significantly "
                          f"better {s['significant_wins']}, worse {s['significant_losses']}, not separable {s['not_significant']}")
        for row in result.rows:
            if row.forced:
                console.print(f"[yellow]forced[/yellow]: {esc(row.task)} / {esc(row.run)} differ in {esc(', '.join(row.forced))}")
        for task, missing in result.skipped_tasks.items():
            console.print(f"[dim]skipped {esc(task)}: missing in {esc(', '.join(missing))}[/dim]")
    elif fmt is Format.markdown:
        typer.echo(result.markdown(), nl=False)
    else:
        typer.echo(dumps(result))
    if markdown:
        from mmbench.util.io import atomic_open

        with atomic_open(markdown) as f:
            f.write(result.markdown())
    if json_out:
        result.write_json(json_out)
    if plot:
        result.plot(plot)
    for label, path in (("markdown", markdown), ("json", json_out), ("plot", plot)):
        if path:
            typer.echo(f"{label}: {path}", err=True)


def leaderboard_build(
    results: Annotated[Path, typer.Option("--results", "-r", metavar="DIR", help="Results tree.")] = Path("results"),
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Folder for <name>.md/.csv/.html.")] = Path("leaderboards"),
    suite: Annotated[Optional[list[str]], typer.Option("--suite", "-s", metavar="SUITES", help="Suites to build (default: every suite in the tree); a suite without runs shows the published numbers only.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", metavar="NAME", help="Board name (one suite only; default: the suite name).")] = None,
    reported: Annotated[Optional[Path], typer.Option("--reported", metavar="FILE", help="Published numbers (default: leaderboards/reported.toml of this checkout).")] = None,
    no_reported: Annotated[bool, typer.Option("--no-reported", help="Leave the published numbers off.")] = False,
    efficiency: Annotated[bool, typer.Option("--efficiency", help="Add what each run cost: encode items/s, search q/s and latency, index and peak memory.")] = False,
) -> None:
    """Turn a results tree into leaderboards/<name>.md, .csv and a self-contained .html."""
    from mmbench.cli.console import make_console
    from mmbench.analysis.leaderboard import DEFAULT_REPORTED, build

    def warn(text: str) -> None:
        typer.echo(f"warning: {text}", err=True)

    suites = split_values(suite)
    paths = build(results, out, suites=list(suites) or None, name=name,
                  reported=None if no_reported else (reported or DEFAULT_REPORTED), warn=warn, efficiency=efficiency)
    console = make_console()
    for p in paths:
        console.print(f"wrote {p}", markup=False, highlight=False)


def regress(
    run: Annotated[Optional[Path], typer.Argument(metavar="RUN", help="Run folder (default: <results>/<model>/<revision>/<suite> named in the baseline).")] = None,
    baseline: Annotated[Path, typer.Option("--baseline", metavar="FILE", help="Baseline JSON (e.g. leaderboards/baselines/mbeir-mini.json).")] = ...,
    tolerance: Annotated[float, typer.Option("--tolerance", metavar="FRACTION", help="Largest accepted move of a task's headline, either way (0-1 scale).")] = 0.005,
    alpha: Annotated[float, typer.Option("--alpha", metavar="LEVEL", help="Paired randomization test level for per-query changes.")] = 0.05,
    results: Annotated[Path, typer.Option("--results", "-r", metavar="DIR", help="Results tree used when RUN is not given.")] = Path("results"),
    update: Annotated[bool, typer.Option("--update", help="Accept the run: (re)write the baseline from it.")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", metavar="FILE", help="Also write the report as JSON here.")] = None,
) -> None:
    """Two-sided regression check: exit 1 when any task moves beyond the tolerance or its per-query scores change."""
    from mmbench.analysis import regress as rg
    from mmbench.analysis.escape import console as esc
    from mmbench.cli.console import make_console
    from mmbench.errors import MmbenchError
    from mmbench.util.io import write_json

    console = make_console()
    current = rg.resolve_run(run, baseline, results)
    if update:
        old = None
        if baseline.exists():
            try:
                old = rg.check(current, rg.load_baseline(baseline), baseline_path=baseline, tolerance=tolerance, alpha=alpha)
            except MmbenchError as exc:            # an unreadable old baseline is replaced, visibly
                typer.echo(f"warning: the old baseline cannot be read, it is replaced: {exc}", err=True)
                old = None
        data = rg.update(current, baseline)
        if old is not None:
            console.print(old.rich_table())
            for line in old.details():
                console.print(line, markup=False, highlight=False, soft_wrap=True)
        console.print(f"baseline written: {esc(baseline)} ({len(data['tasks'])} tasks of {esc(data['model'])} on {esc(data['suite'])})")
        raise typer.Exit(0)
    report = rg.check(current, rg.load_baseline(baseline), baseline_path=baseline, tolerance=tolerance, alpha=alpha)
    console.print(report.rich_table())
    for line in report.details():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if json_out:
        write_json(json_out, report.to_dict())
    if report.passed:
        console.print("[green]no change beyond the tolerance[/green]")
        raise typer.Exit(0)
    where = f"{shlex.quote(str(run))} " if run is not None else f"--results {shlex.quote(str(results))} "
    console.print("[red]changed[/red]: if this is intended, accept it deliberately with", highlight=False)
    console.print(f"  mmbench regress {where}--baseline {shlex.quote(str(baseline))} --update", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def import_mteb(
    folder: Annotated[Path, typer.Argument(metavar="FOLDER", help="mteb results folder (ResultCache, its results/, or a clone of embeddings-benchmark/results).")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="Table to write (.csv, else JSON lines).")] = Path("leaderboards/mteb.csv"),
) -> None:
    """Import mteb result folders into one table (model, revision, task, split, subset, main score, metrics)."""
    from mmbench.cli.console import make_console
    from mmbench.results.mteb_format import import_mteb_results

    path, n = import_mteb_results(folder, out)
    make_console().print(f"{n} rows -> {path}")


def register(app: typer.Typer) -> None:
    app.command("compare", short_help="Per-task deltas between runs, with paired tests.", epilog="Example:\n\n\b\n  mmbench compare results/minilm/REV/mbeir-mini results/other/REV/mbeir-mini \\\n"
                                  "      --plot deltas.png")(compare)
    leaderboard_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Build leaderboards from a results tree.")
    leaderboard_app.command("build", short_help="Leaderboards (.md, .csv, .html) from a results tree.", epilog="Example:\n\n\b\n  mmbench leaderboard build --suite mbeir-local,mbeir-global")(leaderboard_build)
    app.add_typer(leaderboard_app, name="leaderboard")
    app.command("regress", short_help="Check a run against a baseline (exit 1 on a change).", epilog="Example:\n\n\b\n  mmbench run\n"
                                  "  mmbench regress --baseline leaderboards/baselines/mbeir-mini.json")(regress)
    app.command("import-mteb", short_help="Import mteb result folders into one table.")(import_mteb)
