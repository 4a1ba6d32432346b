"""Optional dependencies: import one, or fail with one line that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from mmbench.errors import MmbenchError


class MissingExtraError(MmbenchError):
    """An optional package is not installed; the message names the pip extra that brings it."""


def import_optional(module: str, *, extra: str, purpose: str) -> ModuleType:
    """``import module``, or :class:`MissingExtraError` saying ``pip install "mmbench[extra]"``.

    Only a missing ``module`` itself becomes the one-line error; an ImportError raised inside an
    installed package (a broken install) propagates unchanged."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module.split(".")[0] and exc.name != module:
            raise
        raise MissingExtraError(f"{purpose} needs the package {module.split('.')[0]!r}, which is not installed: "
                                f'pip install "mmbench[{extra}]"') from None
