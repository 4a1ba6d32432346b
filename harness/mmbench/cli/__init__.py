"""The ``mmbench`` command line: a thin typer shell over the library (:mod:`mmbench.api`).

One module per command group (:mod:`~mmbench.cli.run`, :mod:`~mmbench.cli.list`, :mod:`~mmbench.cli.show`,
:mod:`~mmbench.cli.data`, :mod:`~mmbench.cli.analysis`), each with a ``register(app)``; the rendering is in
:mod:`~mmbench.cli.console`. The CLI is the only part of mmbench that prints. This module holds the app,
its global options (``--version``, ``--debug``) and :func:`main`, which turns every error into a short
message and an exit status, as click tools do:

* 0: done; 1: a user error (:class:`~mmbench.errors.MmbenchError`: one line, ``error: ...``) or a command
  that reports a failure (``regress``);
* 2: a usage error (unknown option or command, bad value, missing argument, no command): the usage,
  a "Try ... --help" line and one ``Error: ...`` line; no traceback;
* 130: interrupted (Ctrl-C), 143: terminated (SIGTERM): one line, ``interrupted: ... (rerun to resume)``.
  SIGTERM is raised as :class:`Terminated` in the main thread, as Ctrl-C raises KeyboardInterrupt, so
  every ``finally`` and ``with`` block runs: the background writer finishes the files it was given
  (each atomic), temporary files are removed and locks released; a rerun reuses every finished task
  and cached chunk.

``--debug`` (before the command) shows the traceback of a user error instead.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

import mmbench
from mmbench.cli import analysis, data, inspect as inspect_command, list as list_command, mine, plan as plan_command
from mmbench.cli import run as run_command, show
from mmbench.errors import MmbenchError

# Help is click's plain layout (rich_markup_mode=None): it wraps at the terminal's width and never cuts
# an option's help with "…", and flags show no metavar.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Evaluate retrieval models on M-BEIR (and MTEB retrieval), reproducibly and fast.")

_STATE = {"debug": False}

# Newer typer raises its own copy of click's exception classes (typer._click.exceptions), older typer
# raises click's. typer.BadParameter is defined in whichever module is in use: catch that module's classes.
_click_exceptions = importlib.import_module(typer.BadParameter.__module__)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"mmbench {mmbench.__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print mmbench's version and exit.")] = False,
) -> None:
    _STATE["debug"] = debug


# (importing the submodule `list` binds the name `list` in this module: the builtin is not used here)
for _commands in (run_command, plan_command, list_command, show, data, analysis, inspect_command, mine):
    _commands.register(app)
del _commands


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt (a BaseException: no ``except
    Exception`` swallows it)."""


class Interrupted(BaseException):
    """Ctrl-C (SIGINT) as :func:`main` raises it: not a KeyboardInterrupt, which typer turns into a
    silent exit status 130 before :func:`_invoke` could say a word."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated() if signum == signal.SIGTERM else Interrupted()


def main() -> None:
    """Console-script entry (``mmbench``, ``python -m mmbench``): exit statuses as in the module docstring."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        signal.signal(signal.SIGTERM, _raise_terminated)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:   # not when SIGINT is ignored
            signal.signal(signal.SIGINT, _raise_terminated)
    except (ValueError, OSError):          # not the main thread of the main interpreter
        pass
    sys.exit(_invoke(sys.argv[1:]))


_INTERRUPTED = "interrupted: stopped by {}; finished tasks and cached embeddings are kept (rerun to resume)"


def _invoke(args: Sequence[str]) -> int:
    try:
        rc = app(args=args, prog_name="mmbench", standalone_mode=False)
    except MmbenchError as exc:
        if _STATE["debug"]:
            raise
        typer.echo(f"error{_rank_tag()}: {exc}", err=True)
        return 1
    except _click_exceptions.UsageError as exc:
        _show_usage_error(exc, args)
        return exc.exit_code
    except _click_exceptions.ClickException as exc:     # click's others (a file it could not open)
        if _STATE["debug"]:
            raise
        exc.show()
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt, Interrupted, *_aborts()):
        _say_interrupted("Ctrl-C")
        return 130
    except Terminated:
        _say_interrupted("SIGTERM")
        return 143
    if rc == 130:                            # a KeyboardInterrupt that typer turned into its exit status
        _say_interrupted("Ctrl-C")
    return rc if isinstance(rc, int) else 0


def _rank_tag() -> str:
    """" (rank N)" in a process of a torchrun launch with several ranks (each rank may fail), else ""."""
    world, rank = os.environ.get("WORLD_SIZE", ""), os.environ.get("RANK", "")
    return f" (rank {rank})" if world.isdigit() and int(world) > 1 and rank else ""


def _say_interrupted(what: str) -> None:
    """The one line of an interrupted command."""
    try:
        typer.echo(_INTERRUPTED.format(what), err=True)
    except OSError:                         # stderr closed (a pipe gone)
        pass


def _show_usage_error(exc, args: Sequence[str]) -> None:
    """The usage, a "Try ... --help" line and the error on one line (to stderr). With no command at all
    (bare ``mmbench``, ``mmbench data``), the group's help."""
    if isinstance(exc, getattr(_click_exceptions, "NoArgsIsHelpError", ())):     # click >= 8.2
        exc.show()
        return
    ctx = exc.ctx or _context_for(args)       # click's parser raises some errors without a context
    message = " ".join(exc.format_message().replace("Value error, ", "").split())
    help_hint = f"Try '{ctx.command_path} --help' for help."
    typer.echo(f"{ctx.get_usage()}\n{help_hint}\n\nError: {message}", err=True)


def _context_for(args: Sequence[str]):
    """A context for the deepest (sub)command that ``args`` name, for its usage line."""
    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="mmbench")
    for arg in args:
        if not hasattr(command, "get_command"):           # a command, not a group: its usage it is
            break
        sub = command.get_command(ctx, arg)
        if sub is None:
            if arg.startswith("-"):                         # a group's own option (--debug)
                continue
            break
        command = sub
        ctx = command.context_class(command, info_name=arg, parent=ctx)
    return ctx


def _aborts() -> tuple[type[BaseException], ...]:
    """click's own Abort where typer's differs from it (newer typer)."""
    abort = getattr(_click_exceptions, "Abort", None)
    return (abort,) if isinstance(abort, type) and abort is not typer.Abort else ()


if __name__ == "__main__":
    main()
