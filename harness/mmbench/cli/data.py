"""`mmbench data build-mini | build-text | download`: build or fetch the datasets runs read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mmbench.cli.params import split_values
from mmbench.errors import MmbenchError


def build_mini(
    out: Annotated[Optional[Path], typer.Option("--out", metavar="DIR", help="Where to write it (default: the cache's data/mbeir-mini).")] = None,
    stamps_root: Annotated[Path, typer.Option("--stamps-root", metavar="DIR", help="tuxpaint-stamps-default's stamp folder.")] = Path("/usr/share/tuxpaint/stamps"),
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


def build_text(
    tasks: Annotated[Optional[list[str]], typer.Option("--tasks", "-t", metavar="TASKS", help="Offline text tasks (default: all).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", metavar="DIR", help="Where to write them (default: the cache's data/mteb-text).")] = None,
) -> None:
    """Build the offline text tasks (tuxpaint cross-lingual captions, WordNet glosses) in mteb's format."""
    from mmbench.cli.console import make_console
    from mmbench.data.builders.text_tasks import TASKS, build_task, default_text_root

    console = make_console()
    names = split_values(tasks) or tuple(TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise MmbenchError(f"unknown offline task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    root = out or default_text_root()
    for name in names:
        manifest = build_task(name, root / name)
        console.print(f"{name}: {manifest['counts']} -> {root / name}")


def download(
    tasks: Annotated[list[str], typer.Option("--tasks", "-t", metavar="TASKS", help="mteb task names, comma-separated or repeated.")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder to pass later as --data-root.")] = Path("mteb-data"),
) -> None:
    """Download mteb tasks' datasets (at mteb's pinned revisions) for offline runs with --data-root."""
    from mmbench.cli.console import make_console
    from mmbench.data.builders.download import download_tasks

    console = make_console()
    folders = download_tasks(list(split_values(tasks)), out, message=console.print)
    console.print(f"{len(folders)} task(s) in {out}; run with --data-root {out}")


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Build or inspect datasets.")
    data_app.command("build-mini", short_help="Build the embedded suite mbeir-mini.")(build_mini)
    data_app.command("build-text", short_help="Build the offline text tasks (mteb's format).")(build_text)
    data_app.command("download", short_help="Download mteb tasks' datasets for offline runs.", epilog="Example:\n\n\b\n  mmbench data download --tasks SciFact --out mteb-data")(download)
    app.add_typer(data_app, name="data")
