"""`mmbench plan` (= `mmbench run --dry-run`): check the files a run needs and print its work, memory,
disk and time (:func:`mmbench.pipeline.estimate.estimate`), with the same options as `run`."""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing

import typer

EPILOG = ("Examples:\n\n\b\n  mmbench plan\n"
          "  mmbench plan --model mm-embed --suite mbeir-global \\\n"
          "      --data-root /data/M-BEIR --embed-dtype float16 \\\n"
          "      --devices cuda:0,cuda:1 --ranks 8\n"
          "  mmbench plan --suite mbeir-global --tasks mscoco_task0 \\\n"
          "      --data-root /data/M-BEIR --json")


def show_plan(config, default_run: bool = False, *, as_json: bool = False, ranks: int | None = None) -> None:
    """Estimate ``config``'s run (and, for the default run, its extra default suites) and print it."""
    from mmbench.catalog import DEFAULT_EXTRA_SUITES
    from mmbench.pipeline.estimate import estimate

    configs = [config] + ([dataclasses.replace(config, suite=s) for s in DEFAULT_EXTRA_SUITES] if default_run else [])
    plans = [estimate(c, ranks=ranks) for c in configs]
    if as_json:
        typer.echo(json.dumps({"plans": [p.to_dict() for p in plans]}, indent=2))
        return
    from mmbench.cli.console import make_console

    console = make_console()
    for p in plans:
        _print_plan(console, p)


def _gib(n: int | None) -> str:
    if n is None:
        return "unknown"
    return f"{n / 1024**3:,.2f} GiB" if n >= 1024**3 / 100 else f"{n / 1024**2:,.1f} MiB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:,.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds / 3600:,.1f} h"


def _print_plan(console, p) -> None:
    from rich.table import Table

    console.print(f"[bold]mmbench plan[/bold] model={p.model} ({p.revision}) suite={p.suite} pool={p.pool_mode} "
                  f"tasks={','.join(p.tasks)}")
    table = Table(title="work: every table the run embeds (files checked; images: a sample)", title_justify="left")
    for col in ("table", "items", "text", "image", "image,text", "text tokens", "image tokens", "images checked",
                "cached chunks"):
        table.add_column(col, justify="left" if col == "table" else "right")
    for t in p.tables:
        table.add_row(t.name, f"{t.items:,}", *(f"{t.by_modality.get(m, 0):,}" for m in ("text", "image", "image,text")),
                      f"{t.text_tokens:,}", "n/a" if t.image_tokens is None else f"{t.image_tokens:,}",
                      f"{t.images_checked:,} of {t.images:,}", f"{t.chunks_cached:,} of {t.chunks:,}")
    console.print(table)
    dim = p.embed_dim if p.embed_dim is not None else "?"
    console.print(f"pool searched: {p.pool_rows:,} x {dim}: " + ", ".join(f"{d} {_gib(b)}" for d, b in p.pool_bytes.items()))
    console.print(f"GPU memory per device ({p.devices} device{'s' if p.devices > 1 else ''}, pool in {p.cache_dtype}, "
                  f"{p.query_rows:,} queries at top {p.top_k}): at least {_gib(p.gpu_bytes_per_device)}")
    console.print(f"host RAM: about {_gib(p.host_ram_bytes)}")
    console.print(f"cache disk ({p.cache_dtype}): {_gib(p.cache_bytes)}, already cached {_gib(p.cache_bytes_present)}")
    left = ", ".join(f"{n:,} {m}" for m, n in p.items_to_encode.items()) or "nothing (all cached)"
    rates = ", ".join(f"{m} {r:,.1f}/s" for m, r in p.throughput.items_per_s.items()) or "unknown"
    console.print(f"to encode: {left}; throughput {rates} ({p.throughput.source})")
    console.print(f"estimated encode time ({p.ranks} rank{'s' if p.ranks > 1 else ''}): {_duration(p.encode_seconds)}")
    for note in p.notes:
        console.print(f"note: {note}")
    console.print(f"results: {p.results}")


def _plan_command(run):
    """``run``'s command function with its options (less ``--dry-run``), always planning."""
    hints = typing.get_type_hints(run, include_extras=True)
    params = [param.replace(annotation=hints[name]) for name, param in inspect.signature(run).parameters.items()
              if name != "dry_run"]

    def plan(**options) -> None:
        """Check every file a run needs (images: a sample) and print its work, memory, disk and time;
        the same options as run."""
        run(**options, dry_run=True)

    plan.__signature__ = inspect.Signature(params)
    plan.__annotations__ = {p.name: p.annotation for p in params}
    return plan


def register(app: typer.Typer) -> None:
    """Register ``plan`` with the options of the ``run`` command already registered on ``app`` (taken
    from the app, not imported: `run --dry-run` calls :func:`show_plan` here)."""
    (run,) = [c.callback for c in app.registered_commands if c.name == "run"]
    app.command("plan", epilog=EPILOG, short_help="Check a run's files and print its work, memory, disk and time.")(
        _plan_command(run))
