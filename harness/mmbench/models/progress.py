"""Progress inside one ``encode`` call: the adapters say when a batch is done, the cache reports it.

:func:`mmbench.embeddings.embed_table` calls an encoder once per cached chunk (``--chunk-size`` items);
a bar that moved only then would sit still for minutes on a slow model. Within
:func:`tracking` (around one ``encode`` call), an adapter calls :func:`batch_done` with the number
of rows of each batch it finished (:class:`~mmbench.models.batching.OomGuard` does for every adapter
that uses it) and, when its rows are not the call's items (a fusion model encodes an item's text and
its image), :func:`expect` with the number of rows it will encode; the callback then receives the
items done so far, ``items * rows_done / rows_expected`` rounded down and capped at ``items`` (the
cache reports the whole chunk once it is encoded). Outside :func:`tracking` both are no-ops.

:func:`metered` times one ``encode`` call for the efficiency report (encode items/s per modality,
:mod:`mmbench.pipeline.efficiency`): a call whose items share one modality is added to that
modality's figures, any other to ``"mixed"``; items taken from the cache never pass through it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from mmbench.data.types import canonical_modality


class _Tracker:
    def __init__(self, items: int, callback: Callable[[int], None]):
        self.items, self.callback = items, callback
        self.expected, self.rows = items, 0

    def add(self, rows: int) -> None:
        self.rows += rows
        self.callback(min(self.items, self.items * self.rows // max(self.expected, 1)))


_current: ContextVar[_Tracker | None] = ContextVar("mmbench_encode_progress", default=None)


@contextmanager
def tracking(items: int, callback: Callable[[int], None]) -> Iterator[None]:
    """Within the block, :func:`batch_done` reports to ``callback(items_done)`` for an encode of ``items``."""
    token = _current.set(_Tracker(items, callback))
    try:
        yield
    finally:
        _current.reset(token)


def expect(rows: int) -> None:
    """The number of rows the current encode call will pass to :func:`batch_done` in all."""
    tracker = _current.get()
    if tracker is not None:
        tracker.expected, tracker.rows = rows, 0


def batch_done(rows: int) -> None:
    """A batch of ``rows`` rows is encoded."""
    tracker = _current.get()
    if tracker is not None:
        tracker.add(rows)


MIXED = "mixed"
"""The key of :func:`metered` for an encode call whose items are of several modalities."""


@contextmanager
def metered(ledger: MutableMapping[str, tuple[int, float]], items: Sequence) -> Iterator[None]:
    """Add the block's wall time and ``len(items)`` to ``ledger[modality]`` (``(items, seconds)``):
    the items' modality (``"text"``, ``"image"``, ``"image,text"``) when they share one, else
    :data:`MIXED`. Nothing is added when the block raises (no item was encoded)."""
    kinds = {canonical_modality(it.modality) for it in items}
    key = kinds.pop() if len(kinds) == 1 else MIXED
    start = time.perf_counter()
    yield
    n, seconds = ledger.get(key, (0, 0.0))
    ledger[key] = (n + len(items), seconds + time.perf_counter() - start)


__all__ = ["MIXED", "batch_done", "expect", "metered", "tracking"]
