"""The ``mmbench`` command line: a thin typer shell over the library (:mod:`mmbench.api`)."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mmbench.errors import MmbenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Evaluate retrieval models on M-BEIR (and MTEB retrieval), reproducibly and fast.")
data_app = typer.Typer(no_args_is_help=True, help="Build or inspect datasets.")
app.add_typer(data_app, name="data")

_STATE = {"debug": False}


class Kind(str, Enum):
    tasks = "tasks"
    suites = "suites"
    models = "models"


class Policy(str, Enum):
    first = "first"
    random = "random"
    none = "none"


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    _STATE["debug"] = debug


def _model_options(pairs: list[str] | None) -> tuple:
    from mmbench.config import parse_model_options

    try:
        return parse_model_options(pairs or [])
    except ValueError as exc:
        raise MmbenchError(str(exc)) from None


def _split(values: list[str] | None) -> tuple[str, ...]:
    return tuple(v.strip() for raw in values or [] for v in raw.split(",") if v.strip())


@app.command(epilog="Examples:\n\n  mmbench run\n\n  mmbench run --model clip-vit-l-14 --suite mbeir-local --data-root /data/M-BEIR\n\n"
                    "  mmbench run --model clip-vit-l-14 --suite mbeir-global --tasks mscoco_task0,cirr_task7 --data-root /data/M-BEIR")
def run(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Registered model name, or clip:<hub-id-or-folder>.")] = None,
    suite: Annotated[Optional[str], typer.Option("--suite", "-s", help="Suite name (mbeir-mini, mbeir-local, mbeir-global, ...).")] = None,
    tasks: Annotated[Optional[list[str]], typer.Option("--tasks", "-t", help="Task names, comma-separated or repeated (a subset of --suite when both are given).")] = None,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="M-BEIR's root folder (default $MMBENCH_MBEIR_ROOT).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Results folder.")] = Path("results"),
    instructions: Annotated[Policy, typer.Option("--instructions", help="Query instruction per query: first prompt, seeded random draw, or none.")] = Policy.first,
    seed: Annotated[int, typer.Option("--seed", help="Seed for --instructions random (UniIR used 2023).")] = 2023,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 32,
    top_k: Annotated[Optional[int], typer.Option("--top-k", min=1, max=1000, help="Hits kept per query (default: the task's, 100).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda[:N].")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Recompute embeddings and results even when cached.")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Embedding cache (default $MMBENCH_CACHE or ~/.cache/mmbench).")] = None,
    memory_budget_gb: Annotated[float, typer.Option("--memory-budget-gb", help="Largest float32 pool block searched at once.")] = 2.0,
    embed_dtype: Annotated[str, typer.Option("--embed-dtype", help="float32 or float16 for cached embeddings.")] = "float32",
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Items per cached embedding chunk (the unit of resume).")] = 4096,
    rerank: Annotated[Optional[str], typer.Option("--rerank", help="Rerank the first stage's top-k: rescore:<model>, cross-encoder:<folder-or-hub-id>, mllm-rerank:<folder-or-hub-id>.")] = None,
    rerank_top_k: Annotated[int, typer.Option("--rerank-top-k", min=1, max=1000, help="Hits reranked per query (with --rerank).")] = 10,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Allow a model's own code from its repository (mm-embed: run modeling_nvmmembed.py instead of the native implementation).")] = False,
    model_option: Annotated[Optional[list[str]], typer.Option("--model-option", help="KEY=VALUE passed to the model's loader over the catalog's options (repeatable), e.g. path=/models/clip_sf_large.pth, num_workers=8, dtype=bf16.")] = None,
) -> None:
    """Evaluate a model on a suite or tasks; with no arguments, the default model on mbeir-mini and mteb-mini."""
    from mmbench import api
    from mmbench.cli.console import RichReporter, make_console, summary_table

    task_names = _split(tasks)
    default_run = suite is None and not task_names
    if default_run:
        suite = api.DEFAULT_SUITE
    if embed_dtype not in ("float32", "float16"):
        raise MmbenchError(f"--embed-dtype must be float32 or float16, got {embed_dtype!r}")
    config = api.RunConfig(
        model=model or api.DEFAULT_MODEL, suite=suite, tasks=task_names, data_root=data_root,
        output=output, instructions=instructions.value, seed=seed, batch_size=batch_size, top_k=top_k,
        device=device, overwrite=overwrite, memory_budget_gb=memory_budget_gb, embed_dtype=embed_dtype, chunk_size=chunk_size,
        rerank=rerank, rerank_top_k=rerank_top_k, trust_remote_code=trust_remote_code,
        model_options=_model_options(model_option),
        **({"cache_dir": cache_dir} if cache_dir else {}))
    console = make_console()
    console.print(f"[bold]mmbench run[/bold] model={config.model} suite={config.suite or '-'} "
                  f"tasks={','.join(task_names) or 'all'} instructions={config.instructions} "
                  f"top_k={config.top_k or 'task default'} device={config.device}")
    with RichReporter(console) as reporter:
        outcome = api.run(config, reporter)
    console.print(summary_table(outcome))
    console.print(f"results: {outcome.directory}" + (f"  (summary: {outcome.summary_path})" if outcome.summary_path else ""))
    if default_run and not rerank:                   # the embedded default also covers the offline text tasks
        import dataclasses

        from mmbench.catalog import DEFAULT_EXTRA_SUITES

        for extra in DEFAULT_EXTRA_SUITES:
            with RichReporter(console) as reporter:
                extra_outcome = api.run(dataclasses.replace(config, suite=extra), reporter)
            console.print(summary_table(extra_outcome))
            console.print(f"results: {extra_outcome.directory}")
    if outcome.experiment is not None:
        from mmbench.cli.console import rerank_table

        console.print(rerank_table(outcome, outcome.experiment))
        console.print(f"rerank results: {outcome.experiment.directory}")


@app.command("list")
def list_(
    kind: Annotated[Kind, typer.Argument(help="tasks, suites or models")],
    query_modality: Annotated[Optional[str], typer.Option("--query-modality")] = None,
    candidate_modality: Annotated[Optional[str], typer.Option("--candidate-modality")] = None,
    domain: Annotated[Optional[str], typer.Option("--domain")] = None,
    source: Annotated[Optional[str], typer.Option("--source", help="mbeir, mbeir-mini, ...")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the entries as JSON (every field) instead of a table.")] = False,
) -> None:
    """List tasks (with filters), suites or models. Loads no weights and no data."""
    from rich.table import Column, Table

    from mmbench import api
    from mmbench.cli.console import make_console

    if as_json:
        import json

        if kind is Kind.models:
            entries = [m.to_dict() for m in api.list_models()]
        elif kind is Kind.suites:
            entries = [_plain(s) for s in api.list_suites()]
        else:
            entries = [_plain(t) for t in api.list_tasks(query_modality=query_modality, domain=domain,
                                                         candidate_modality=candidate_modality, source=source)]
        typer.echo(json.dumps(entries, indent=1, default=str))
        return

    console = make_console()
    if kind is Kind.tasks:
        rows = api.list_tasks(query_modality=query_modality, candidate_modality=candidate_modality,
                              domain=domain, source=source)
        table = Table("task", "source", "dataset", "query", "candidate", "domain", "headline", "queries", "candidates")
        for t in rows:
            table.add_row(t.name, t.source, t.dataset, t.query_modality, t.candidate_modality, t.domain,
                          t.main_metric, _num(t.n_queries), _num(t.n_candidates))
    elif kind is Kind.suites:
        table = Table("suite", "pool", "tasks", "description")
        for s in api.list_suites():
            table.add_row(s.name, s.pool, str(len(s.tasks)), s.description)
    else:
        # identifiers and numbers are never cut or wrapped (the description wraps instead); a
        # revision too long for its column folds onto the next line
        table = Table(*(Column(h, no_wrap=True) for h in ("model", "modalities", "fusion", "dim", "similarity",
                                                           "max tokens", "params", "licence", "instr.")),
                      Column("revision", overflow="fold", min_width=12), Column("description", min_width=24))
        for m in api.list_models():
            table.add_row(m.name, "+".join(m.modalities), m.fusion or "-", _num(m.embed_dim), m.similarity,
                          _num(m.max_tokens), _num(m.n_parameters), m.license or "-",
                          "yes" if m.uses_instructions else "no", m.revision, m.description)
    console.print(table)


def _plain(spec) -> dict:
    """A spec dataclass as JSON-ready fields."""
    import dataclasses

    return dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else dict(vars(spec))


def _num(v) -> str:
    return "-" if v is None else f"{v:,}"


@app.command()
def show(
    kind: Annotated[str, typer.Argument(help="'task'")],
    name: Annotated[str, typer.Argument(help="Task name, e.g. mscoco_task0.")],
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="M-BEIR root: show which files exist and their sizes.")] = None,
) -> None:
    """Show a task's spec, the files it expects, and their sizes when the data is present."""
    from mmbench import api
    from mmbench.cli.console import make_console

    if kind != "task":
        raise MmbenchError(f"`mmbench show` knows 'task', got {kind!r}")
    info = api.describe_task(name, data_root=data_root)
    console = make_console()
    for key, value in info["spec"].items():
        console.print(f"[bold]{key}[/bold]: {value}")
    console.print(f"[bold]data root[/bold]: {info['data_root'] or '(not given: pass --data-root)'}")
    for role, f in info["files"].items():
        state = f"{f['bytes']:,} bytes, {f['lines']:,} lines" if f["exists"] else ("missing" if f["exists"] is False else "")
        console.print(f"  {role:13s} {f['path']}  {state}")


@data_app.command("build-mini")
def build_mini(
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write it (default: the cache's data/mbeir-mini).")] = None,
    stamps_root: Annotated[Path, typer.Option("--stamps-root", help="tuxpaint-stamps-default's stamp folder.")] = Path("/usr/share/tuxpaint/stamps"),
) -> None:
    """Build the embedded suite mbeir-mini from Debian's tuxpaint-stamps-default (deterministic)."""
    from mmbench.cli.console import make_console
    from mmbench.data.builders.mini import build_mini as build, default_mini_root

    target = out or default_mini_root()
    manifest = build(target, stamps_root=stamps_root)
    console = make_console()
    console.print(f"mbeir-mini written to {target}")
    for name, count in sorted(manifest.get("counts", {}).items()):
        console.print(f"  {name}: {count}")


from mmbench.cli.analysis import register as _register_analysis  # noqa: E402  (compare, leaderboard, regress)

_register_analysis(app)


@data_app.command("build-text")
def build_text(
    tasks: Annotated[Optional[list[str]], typer.Option("--tasks", "-t", help="Offline text tasks (default: all).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write them (default: the cache's data/mteb-text).")] = None,
) -> None:
    """Build the offline text tasks (tuxpaint cross-lingual captions, WordNet glosses) in mteb's format."""
    from mmbench.cli.console import make_console
    from mmbench.data.builders.text_tasks import TASKS, build_task, default_text_root

    console = make_console()
    names = _split(tasks) or tuple(TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise MmbenchError(f"unknown offline task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    root = out or default_text_root()
    for name in names:
        manifest = build_task(name, root / name)
        console.print(f"{name}: {manifest['counts']} -> {root / name}")


@data_app.command("download")
def download(
    tasks: Annotated[list[str], typer.Option("--tasks", "-t", help="mteb task names, comma-separated or repeated.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to pass later as --data-root.")] = Path("mteb-data"),
) -> None:
    """Download mteb tasks' datasets (at mteb's pinned revisions) for offline runs with --data-root."""
    from mmbench.cli.console import make_console
    from mmbench.data.builders.download import download_tasks

    console = make_console()
    folders = download_tasks(list(_split(tasks)), out, message=console.print)
    console.print(f"{len(folders)} task(s) in {out}; run with --data-root {out}")


@app.command("import-mteb")
def import_mteb(
    folder: Annotated[Path, typer.Argument(help="mteb results folder (ResultCache, its results/, or a clone of embeddings-benchmark/results).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Table to write (.csv, else JSON lines).")] = Path("leaderboards/mteb.csv"),
) -> None:
    """Import mteb result folders into one table (model, revision, task, split, subset, main score, metrics)."""
    from mmbench.cli.console import make_console
    from mmbench.results.mteb_format import import_mteb_results

    path, n = import_mteb_results(folder, out)
    make_console().print(f"{n} rows -> {path}")


def main() -> None:
    """Console-script entry: user errors print one line and exit 1 (tracebacks with --debug)."""
    import click

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        rc = app(standalone_mode=False)
    except MmbenchError as exc:
        if _STATE["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
