"""Small text helpers shared across packages (no heavy imports)."""

from __future__ import annotations

__all__ = ["slug"]


def slug(name: str) -> str:
    """A file-system-safe version of a model or revision name: every character other than a letter,
    a digit or one of ``-_.=+`` becomes ``_``, then leading and trailing ``.`` and ``_`` are dropped
    (``"_"`` when nothing is left). Cache folders and result folders are named with it, so its
    output for a given name must never change."""
    keep = "".join(c if c.isalnum() or c in "-_.=+" else "_" for c in name)
    return keep.strip("._") or "_"
