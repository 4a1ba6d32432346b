"""`mmbench show task NAME`: a task's spec, the files it expects, and their sizes when the data is present."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class ShowKind(str, Enum):
    task = "task"


def show(
    kind: Annotated[ShowKind, typer.Argument(metavar="KIND", help="What to show: task.")],
    name: Annotated[str, typer.Argument(metavar="NAME", help="Task name, e.g. mscoco_task0.")],
    data_root: Annotated[Optional[Path], typer.Option("--data-root", metavar="DIR", help="M-BEIR root: show which files exist and their sizes.")] = None,
) -> None:
    """Show a task's spec, the files it expects, and their sizes when the data is present."""
    from mmbench import api
    from mmbench.cli.console import make_console

    info = api.describe_task(name, data_root=data_root)
    console = make_console()
    for key, value in info["spec"].items():
        console.print(f"[bold]{key}[/bold]: {value}")
    console.print(f"[bold]data root[/bold]: {info['data_root'] or '(not given: pass --data-root)'}")
    for role, f in info["files"].items():
        state = f"{f['bytes']:,} bytes, {f['lines']:,} lines" if f["exists"] else ("missing" if f["exists"] is False else "")
        console.print(f"  {role:13s} {f['path']}  {state}")


def register(app: typer.Typer) -> None:
    app.command("show", short_help="Show a task's spec and the files it expects.", epilog="Example:\n\n\b\n  mmbench show task mscoco_task0 --data-root /data/M-BEIR")(show)
