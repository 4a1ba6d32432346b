"""`mmbench list`: tasks (with filters), suites, models or search backends. Loads no weights and no data."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer


class Kind(str, Enum):
    tasks = "tasks"
    suites = "suites"
    models = "models"
    backends = "backends"


def _modality(value: str | None) -> str | None:
    """A modality filter checked before any listing (a usage error if unknown)."""
    from mmbench.data.types import canonical_modality

    if value is not None:
        try:
            canonical_modality(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def list_(
    kind: Annotated[Kind, typer.Argument(metavar="KIND", help="tasks, suites, models or backends (search backends).")],
    query_modality: Annotated[Optional[str], typer.Option("--query-modality", metavar="MODALITY", callback=_modality, help="Tasks whose queries are text, image or image,text.")] = None,
    candidate_modality: Annotated[Optional[str], typer.Option("--candidate-modality", metavar="MODALITY", callback=_modality, help="Tasks whose candidates are text, image or image,text.")] = None,
    domain: Annotated[Optional[str], typer.Option("--domain", metavar="DOMAIN", help="Tasks of this domain.")] = None,
    source: Annotated[Optional[str], typer.Option("--source", metavar="SOURCE", help="Tasks of this source: mbeir, mbeir-mini, ...")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the entries as JSON (every field) instead of a table.")] = False,
) -> None:
    """List tasks (with filters), suites, models or search backends. Loads no weights and no data."""
    from rich.table import Column, Table

    from mmbench import api
    from mmbench.cli.console import make_console

    if kind is Kind.backends:
        entries = _backends()
        if as_json:
            import json

            typer.echo(json.dumps(entries, indent=1, default=str))
            return
        table = Table(Column("backend", no_wrap=True), Column("exact", no_wrap=True), "available here")
        for b in entries:
            table.add_row(b["name"], "yes" if b["exact"] else "no",
                          "; ".join(f"{device}: yes" if ok is True else f"{device}: no ({ok})"
                                    for device, ok in b["available"].items()))
        table.caption = "--search-backend auto (the default) picks the best exact backend available."
        make_console().print(table)
        return
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


def _backends() -> list[dict]:
    """The registered search backends: name, exact, and per device True (usable here) or why not."""
    from mmbench.search import backend_names, get_backend

    out = []
    for name in backend_names():
        if name == "auto":
            continue
        backend = get_backend(name)
        out.append({"name": name, "exact": bool(backend.exact),
                    "available": {device: backend.available(device) for device in backend.devices}})
    return out


def _plain(spec) -> dict:
    """A spec dataclass as JSON-ready fields."""
    import dataclasses

    return dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else dict(vars(spec))


def _num(v) -> str:
    return "-" if v is None else f"{v:,}"


def register(app: typer.Typer) -> None:
    app.command("list", short_help="List tasks, suites, models or search backends.", epilog="Examples:\n\n\b\n  mmbench list models\n  mmbench list tasks --query-modality image\n"
                                "  mmbench list backends")(list_)
