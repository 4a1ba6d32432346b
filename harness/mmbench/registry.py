"""Name -> object registries with lazy ``"module:attr"`` targets, entry-point plugins and did-you-mean errors.

A registry never imports what it names until that name is asked for, so listing models or tasks
imports neither torch nor transformers. Third-party packages add entries through the entry-point
group given to the registry (``mmbench.models``, ``mmbench.tasks``): each entry point resolves to
a callable that receives the registry and registers into it.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mmbench.errors import UnknownNameError

T = TypeVar("T")


def import_target(target: str):
    """Resolve ``"package.module:attribute"`` to the object it names."""
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"registry target {target!r} must look like 'module:attr'")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def closest(name: str, names: list[str], n: int = 3) -> list[str]:
    """The known names nearest to ``name`` (case-insensitive), best first."""
    lowered = {k.lower(): k for k in names}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    if not hits:
        hits = [k for k in lowered if name.lower() in k][:n]
    return [lowered[h] for h in hits]


class Registry(Generic[T]):
    """A thread-safe mapping of names to objects, filled lazily.

    ``populate`` is called once, on first use, to register the built-in entries (usually metadata
    only); entry points of ``entry_point_group`` are loaded right after it.
    """

    def __init__(self, kind: str, *, populate: Callable[[Registry[T]], None] | None = None,
                 entry_point_group: str | None = None):
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._populate = populate
        self._group = entry_point_group
        self._ready = False
        self._lock = threading.RLock()

    # -- registration -------------------------------------------------------------------------
    def register(self, name: str, obj: T | str, *, replace: bool = False) -> None:
        with self._lock:
            if name in self._entries and not replace:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj

    def decorator(self, name: str) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            self.register(name, obj)
            return obj
        return wrap

    # -- lookup -------------------------------------------------------------------------------
    def _ensure(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            self._ready = True
            if self._populate is not None:
                self._populate(self)
            if self._group:
                from importlib.metadata import entry_points
                for ep in entry_points(group=self._group):
                    ep.load()(self)

    def names(self) -> list[str]:
        self._ensure()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._ensure()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        self._ensure()
        try:
            obj = self._entries[name]
        except KeyError:
            near = closest(name, list(self._entries))
            hint = f" Did you mean: {', '.join(near)}?" if near else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} (`mmbench list {self.kind}s` lists them all)"
            ) from None
        if isinstance(obj, str):
            obj = import_target(obj)
            with self._lock:
                self._entries[name] = obj
        return obj
