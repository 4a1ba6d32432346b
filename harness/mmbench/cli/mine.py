"""`mmbench mine`: hard negatives from a finished run (:mod:`mmbench.analysis.mine`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def _window(text: str) -> tuple[int, int]:
    from mmbench.analysis.mine import parse_window

    try:
        return parse_window(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def mine(
    results: Annotated[Path, typer.Argument(metavar="RESULTS", help="Run folder <output>/<model>/<revision>/<suite> holding the task (or its <task>.json).")],
    task: Annotated[str, typer.Option("--task", "-t", metavar="TASK", help="The task whose run is mined.")] = ...,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Folder for <task>.hard_negatives.jsonl and <task>.recipe.json.")] = ...,
    skip_top: Annotated[int, typer.Option("--skip-top", metavar="N", min=0, help="Never take ranks 1..N (false negatives hide there).")] = 45,
    window: Annotated[str, typer.Option("--window", metavar="A:B", help="Ranks to sample from, 1-based, both included.")] = "1:50",
    per_query: Annotated[int, typer.Option("--per-query", metavar="K", min=1, help="Negatives per query (fewer when fewer are eligible).")] = 1,
    seed: Annotated[int, typer.Option("--seed", metavar="S", min=0, help="Seed of the per-query draw (with each query id's hash).")] = 0,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", metavar="DIR", help="M-BEIR's root folder, where it is not the run's.")] = None,
) -> None:
    """Hard negatives from a run: M-BEIR training format (neg_cand_list) or BEIR-style JSONL, with the recipe."""
    from mmbench.analysis.mine import MiningRecipe, mine as run_mine
    from mmbench.cli.console import make_console

    from mmbench.errors import MmbenchError

    try:
        recipe = MiningRecipe(skip_top=skip_top, window=_window(window), per_query=per_query, seed=seed)
    except MmbenchError as exc:                 # a combination of options that selects no rank
        raise typer.BadParameter(str(exc).removeprefix("mining recipe: ")) from None
    result = run_mine(results, task, out, recipe, data_root=data_root)
    console = make_console()
    console.print(f"{result.task}: {result.negatives:,} negatives for {result.queries_with_negatives:,} of "
                  f"{result.queries:,} queries (ranks {recipe.first_rank}-{recipe.last_rank}, {recipe.per_query} per query; "
                  f"{result.short_queries:,} queries got fewer)", markup=False, highlight=False)
    console.print(f"wrote {result.output}", markup=False, highlight=False)
    console.print(f"wrote {result.recipe_path}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("mine", short_help="Hard negatives from a run, in M-BEIR's training format.",
                epilog="Example:\n\n\b\n  mmbench mine results/MODEL/REV/mbeir-global --task mscoco_task0 \\\n"
                       "      --out negatives/ --skip-top 45 --window 1:50 --per-query 3")(mine)
