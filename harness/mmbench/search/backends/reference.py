"""Backend ``numpy``: the reference itself (:func:`mmbench.search.reference.exact_search_numpy`'s ranking).

It holds the whole (Q, N) float32 score matrix: for tests and small pools. Exact by definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmbench.search.backends import numpy_blas
from mmbench.search.base import Pool, Progress, as_f32
from mmbench.search.reference import rule_top


@dataclass(frozen=True)
class NumpyBackend:
    name: str = "numpy"
    exact: bool = True
    devices: tuple[str, ...] = ("cpu",)

    def available(self, device: str) -> bool | str:
        return True if device == "cpu" else "the numpy reference runs on the CPU only"

    def describe(self, device: str) -> dict:
        return {"library": "numpy", "device": "cpu", "version": np.__version__, "blas": numpy_blas()}

    def prepare(self, pool: Pool) -> _Index:
        return _Index(pool)


@dataclass(frozen=True)
class _Index:
    pool: Pool

    def search(self, queries: np.ndarray, k: int, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        matrix = np.concatenate([as_f32(p) for p in self.pool.parts])
        out = rule_top(queries, matrix, min(k, self.pool.total), self.pool.tiebreak)
        if progress is not None:
            progress(self.pool.total, self.pool.total)
        return out


BACKEND = NumpyBackend()
