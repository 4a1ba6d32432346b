"""Batching shared by the transformer adapters: length-sorted text, images decoded in workers, OOM halving.

* :func:`length_order` puts texts longest first, so each batch pads to a similar length (less
  wasted compute) and an out-of-memory error, if any, comes from the first batch.
* :func:`image_batches` decodes :class:`~mmbench.data.types.ImageRef` files and runs the model's
  preprocessing in ``DataLoader`` worker processes, in item order.
* :class:`OomGuard` runs a batch and, when the accelerator runs out of memory, halves it and retries
  (recursively, down to one item); the smaller size is kept for the following batches.

Only this module and the adapters import torch; ``mmbench.models.builtin`` never imports it.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from mmbench.errors import DataError
from mmbench.models.progress import batch_done


def is_oom(exc: BaseException) -> bool:
    """CUDA (and other back-ends') out-of-memory errors."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class OomGuard:
    """``guard(fn, batch)`` = ``fn(batch)``, split in halves on out-of-memory until it fits.

    ``batch`` is anything with ``len`` and slicing (a list of texts, a tensor of pixels);
    ``fn`` returns a float32 array with one row per element. ``limit`` is the largest batch
    that is tried; it starts at the requested batch size and only shrinks.
    """

    def __init__(self, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, not {batch_size}")
        self.limit = batch_size
        self.halvings = 0

    def __call__(self, fn: Callable[[Any], np.ndarray], batch: Any) -> np.ndarray:
        n = len(batch)
        if n > self.limit:
            return np.concatenate([self(fn, batch[i:i + self.limit]) for i in range(0, n, self.limit)])
        failed = False
        try:
            out = np.asarray(fn(batch), dtype=np.float32)
            batch_done(n)                    # a progress bar moves per batch (mmbench.models.progress)
            return out
        except Exception as exc:
            if not is_oom(exc) or n == 1:
                raise
            failed = True        # leave the except block first, so the traceback's tensors are freed
        assert failed
        _free_memory()
        self.halvings += 1
        self.limit = max(1, n // 2)
        half = (n + 1) // 2
        return np.concatenate([self(fn, batch[:half]), self(fn, batch[half:])])


def length_order(lengths: Sequence[int]) -> np.ndarray:
    """Indices that sort items longest first (stable, so equal lengths keep their order)."""
    return np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")


def encode_in_length_order(texts: list[str], lengths: Sequence[int], fn: Callable[[list[str]], np.ndarray],
                           batch_size: int, guard: OomGuard) -> np.ndarray:
    """``fn`` over length-sorted batches of ``texts``; rows come back in the input order."""
    order = length_order(lengths)
    parts = [guard(fn, [texts[i] for i in order[s:s + batch_size]]) for s in range(0, len(texts), batch_size)]
    sorted_rows = np.concatenate(parts)
    out = np.empty_like(sorted_rows)
    out[order] = sorted_rows
    return out


def default_workers(n_images: int, batch_size: int) -> int:
    """Worker processes for image decoding: none for a single batch, else up to 4 (one core left free)."""
    if n_images <= batch_size:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class _DecodedImages(torch.utils.data.Dataset):
    """Item ``i`` = ``preprocess(refs[i].load())``; a decoding error travels back as a value."""

    def __init__(self, refs: Sequence, preprocess: Callable[[Any], torch.Tensor]):
        self.refs, self.preprocess = refs, preprocess

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int):
        try:
            return self.preprocess(self.refs[i].load())
        except DataError as exc:     # DataError does not survive the worker's re-raise: send its text
            return _Failure(str(exc))


class _Failure:
    def __init__(self, message: str):
        self.message = message


def _collate(samples: list) -> torch.Tensor | _Failure:
    for s in samples:
        if isinstance(s, _Failure):
            return s
    return torch.stack(samples)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)     # one process per core; no oversubscription


def image_batches(refs: Sequence, preprocess: Callable[[Any], torch.Tensor], batch_size: int, *,
                  num_workers: int | None = None, pin_memory: bool = False) -> Iterator[torch.Tensor]:
    """Batches of preprocessed pixel tensors for ``refs`` (``ImageRef``), decoded in worker processes, in order."""
    workers = default_workers(len(refs), batch_size) if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(
        _DecodedImages(refs, preprocess), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=_collate, pin_memory=pin_memory, worker_init_fn=_worker_init if workers else None,
    )
    for batch in loader:
        if isinstance(batch, _Failure):
            raise DataError("image", batch.message)
        yield batch
