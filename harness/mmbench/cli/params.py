"""Small helpers shared by the command modules (no command lives here)."""

from __future__ import annotations


def split_values(values: list[str] | None) -> tuple[str, ...]:
    """Values of a repeatable option whose items may also be comma-separated: ``-t a,b -t c`` -> (a, b, c)."""
    return tuple(v.strip() for raw in values or [] for v in raw.split(",") if v.strip())
