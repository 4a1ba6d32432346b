"""`mmbench run`: evaluate a model on a suite or tasks (the default: the default model on mbeir-mini and mteb-mini)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mmbench.cli.params import split_values
from mmbench.errors import MmbenchError

EPILOG = ("Examples:\n\n\b\n  mmbench run\n"
          "  mmbench run --model clip-vit-l-14 --suite mbeir-local \\\n"
          "      --data-root /data/M-BEIR\n"
          "  mmbench run --model clip-vit-l-14 --suite mbeir-global \\\n"
          "      --tasks mscoco_task0,cirr_task7 --data-root /data/M-BEIR")


class Policy(str, Enum):
    first = "first"
    random = "random"
    none = "none"


class EmbedDtype(str, Enum):
    float32 = "float32"
    float16 = "float16"


class RunFormat(str, Enum):
    gz = "trec.gz"
    plain = "trec"


def search_backend_option(value: str) -> str:
    """Check a ``--search-backend`` name against the registered backends (a usage error if unknown)."""
    from mmbench.search import backend_names

    known = backend_names()
    if value not in known:
        import difflib

        close = difflib.get_close_matches(value, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise typer.BadParameter(f"unknown search backend {value!r}; known: {', '.join(known)}.{hint}")
    return value


def memory_budget_option(value: float) -> float:
    """``--memory-budget-gb``: a finite number of GB above 0 (nan, inf, 0 and negatives are usage errors)."""
    import math

    if not math.isfinite(value) or value <= 0:
        raise typer.BadParameter(f"expected a finite number of GB above 0, got {value}")
    if value * 1024**3 < 4:
        raise typer.BadParameter(f"{value} GB is less than one float32; expected e.g. 0.5 or 2")
    return value


def device_option(value: str) -> str:
    """``--device``: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N`` (anything else is a usage error)."""
    import re

    if not re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", value):
        raise typer.BadParameter(f"expected auto, cpu, mps, cuda or cuda:N, got {value!r}")
    return value


def devices_option(value: str | None) -> str | None:
    """``--devices``: comma-separated ``cpu``, ``cuda`` or ``cuda:N`` (anything else is a usage error)."""
    import re

    for dev in split_values([value] if value else []):
        if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", dev):
            raise typer.BadParameter(f"expected devices like cuda:0,cuda:1 (cpu, cuda or cuda:N), got {dev!r}")
    return value


def run_depth_option(value: str) -> int | None:
    """``--run-depth``: a number of hits per query >= 1, or ``all`` (the top k) -> None."""
    if value.strip().lower() == "all":
        return None
    try:
        depth = int(value)
    except ValueError:
        raise typer.BadParameter(f"expected a number of hits >= 1 or 'all', got {value!r}") from None
    if depth < 1:
        raise typer.BadParameter(f"expected a number of hits >= 1 or 'all', got {value!r}")
    return depth


def _model_options(pairs: list[str] | None) -> tuple:
    from mmbench.config import parse_model_options

    try:
        return parse_model_options(pairs or [])
    except ValueError as exc:
        raise MmbenchError(str(exc)) from None


def run(
    model: Annotated[Optional[str], typer.Option("--model", "-m", metavar="NAME", help="Registered model name, or clip:<hub-id-or-folder>.")] = None,
    suite: Annotated[Optional[str], typer.Option("--suite", "-s", metavar="NAME", help="Suite name (mbeir-mini, mbeir-local, mbeir-global, ...).")] = None,
    tasks: Annotated[Optional[list[str]], typer.Option("--tasks", "-t", metavar="TASKS", help="Task names, comma-separated or repeated (a subset of --suite when both are given).")] = None,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", metavar="DIR", help="M-BEIR's root folder (default $MMBENCH_MBEIR_ROOT).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", metavar="DIR", help="Results folder.")] = Path("results"),
    instructions: Annotated[Policy, typer.Option("--instructions", help="Query instruction per query: first prompt, seeded random draw, or none.")] = Policy.first,
    seed: Annotated[int, typer.Option("--seed", metavar="INT", help="Seed for --instructions random (UniIR used 2023).")] = 2023,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", metavar="N", min=1, help="Encoding batch size.")] = 32,
    top_k: Annotated[Optional[int], typer.Option("--top-k", metavar="K", min=1, max=1000, help="Hits kept per query (default: the task's, 100).")] = None,
    run_depth: Annotated[str, typer.Option("--run-depth", metavar="N|all", help="Hits per query written to the run file (scores use the full top-k); all: the top-k.")] = "100",
    run_format: Annotated[RunFormat, typer.Option("--run-format", help="Run files gzip-compressed (<task>.trec.gz) or plain text (<task>.trec).")] = RunFormat.gz,
    device: Annotated[str, typer.Option("--device", metavar="DEVICE", callback=device_option, help="auto, cpu or cuda[:N].")] = "auto",
    search_backend: Annotated[str, typer.Option("--search-backend", metavar="NAME", callback=search_backend_option, help="Search backend (`mmbench list backends`); auto: the best exact one available.")] = "auto",
    devices: Annotated[Optional[str], typer.Option("--devices", metavar="DEVICES", callback=devices_option, help="Shard the search over these devices in this process, comma-separated (e.g. cuda:0,cuda:1; backend sharded).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Recompute embeddings and results even when cached.")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", metavar="DIR", help="Where mmbench stores everything: embedding cache, built datasets, model assets (default $MMBENCH_HOME or ~/.cache/mmbench).")] = None,
    memory_budget_gb: Annotated[float, typer.Option("--memory-budget-gb", metavar="GB", callback=memory_budget_option, help="Largest float32 pool block searched at once.")] = 2.0,
    embed_dtype: Annotated[EmbedDtype, typer.Option("--embed-dtype", help="dtype of cached embeddings.")] = EmbedDtype.float32,
    chunk_size: Annotated[int, typer.Option("--chunk-size", metavar="N", min=1, help="Items per cached embedding chunk (the unit of resume).")] = 4096,
    verify_data: Annotated[bool, typer.Option("--verify-data", help="Hash every image's bytes (recorded in provenance); cached embeddings not encoded from exactly these bytes are encoded again.")] = False,
    rerank: Annotated[Optional[str], typer.Option("--rerank", metavar="RERANKER", help="Rerank the first stage's top-k: rescore:<model>, cross-encoder:<folder-or-hub-id>, mllm-rerank:<folder-or-hub-id>.")] = None,
    rerank_top_k: Annotated[int, typer.Option("--rerank-top-k", metavar="K", min=1, max=1000, help="Hits reranked per query (with --rerank).")] = 10,
    model_option: Annotated[Optional[list[str]], typer.Option("--model-option", metavar="KEY=VALUE", help="Passed to the model's loader over the catalog's options (repeatable), e.g. path=/models/clip_sf_large.pth, num_workers=8, dtype=bf16.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the files and print the plan (work, memory, disk, time) instead of running: `mmbench plan`.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="With --dry-run: the plan as JSON.")] = False,
    ranks: Annotated[Optional[int], typer.Option("--ranks", metavar="N", min=1, help="With --dry-run: processes encoding together (default $WORLD_SIZE or 1).")] = None,
) -> None:
    """Evaluate a model on a suite or tasks; with no arguments, the default model on mbeir-mini and mteb-mini."""
    from mmbench import api

    task_names = split_values(tasks)
    depth = run_depth_option(run_depth)
    if cache_dir is not None:                        # one setting moves everything mmbench stores
        import os

        os.environ["MMBENCH_HOME"] = str(cache_dir.expanduser().absolute())
    default_run = suite is None and not task_names
    if default_run:
        suite = api.DEFAULT_SUITE
    config = api.RunConfig(
        model=model or api.DEFAULT_MODEL, suite=suite, tasks=task_names, data_root=data_root,
        output=output, instructions=instructions.value, seed=seed, batch_size=batch_size, top_k=top_k, run_depth=depth,
        run_format=run_format.value,
        device=device, overwrite=overwrite, memory_budget_gb=memory_budget_gb, embed_dtype=embed_dtype.value,
        chunk_size=chunk_size, verify_data=verify_data, rerank=rerank, rerank_top_k=rerank_top_k,
        model_options=_model_options(model_option), search_backend=search_backend, devices=split_values([devices] if devices else []),
        **({"cache_dir": cache_dir} if cache_dir else {}))
    if dry_run or json_output or ranks:
        from mmbench.cli.plan import show_plan

        if not dry_run:
            raise typer.BadParameter("goes with --dry-run (or `mmbench plan`)",
                                     param_hint="'--json'" if json_output else "'--ranks'")
        show_plan(config, default_run, as_json=json_output, ranks=ranks)
        return
    from mmbench.distributed import process_group

    # under torchrun every rank runs (the group encodes); rank 0 alone evaluates and prints
    with process_group(config.device) as group:
        _run_and_report(config, default_run, quiet=group is not None and not group.lead)


def _run_and_report(config, default_run: bool, *, quiet: bool) -> None:
    """Run ``config`` (the default run: also the extra default suites) and print the tables;
    ``quiet``: print nothing (a rank other than 0 of a group)."""
    import contextlib

    from rich.console import Console

    from mmbench import api
    from mmbench.cli.console import RichReporter, make_console, summary_table, where_table
    from mmbench.pipeline.types import Reporter

    task_names, search_backend, rerank = list(config.tasks), config.search_backend, config.rerank
    console = Console(quiet=True) if quiet else make_console()

    def reporting():
        return contextlib.nullcontext(Reporter()) if quiet else RichReporter(console)

    console.print(f"[bold]mmbench run[/bold] model={config.model} suite={config.suite or '-'} "
                  f"tasks={','.join(task_names) or 'all'} instructions={config.instructions} "
                  f"top_k={config.top_k or 'task default'} device={config.device}"
                  + (f" search_backend={search_backend}" if search_backend != "auto" else ""))
    encoders: dict = {}                              # one model load for every suite of this invocation
    with reporting() as reporter:
        outcome = api.run(config, reporter, encoders=encoders)
    console.print(summary_table(outcome))
    outcomes = [outcome]
    if default_run and not rerank:                   # the embedded default also covers the offline text tasks
        import dataclasses

        from mmbench.catalog import DEFAULT_EXTRA_SUITES

        for extra in DEFAULT_EXTRA_SUITES:
            with reporting() as reporter:
                extra_outcome = api.run(dataclasses.replace(config, suite=extra), reporter, encoders=encoders)
            console.print(summary_table(extra_outcome))
            outcomes.append(extra_outcome)
    if outcome.experiment is not None:
        from mmbench.cli.console import rerank_table

        console.print(rerank_table(outcome, outcome.experiment))
    console.print(where_table(config, outcomes))


def register(app: typer.Typer) -> None:
    app.command("run", epilog=EPILOG, short_help="Evaluate a model on a suite or tasks.")(run)
