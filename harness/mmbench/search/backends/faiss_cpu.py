"""Backend ``faiss-cpu``: faiss ``knn`` (the ``IndexFlatIP`` kernel, BLAS sgemm + heaps) per block
with a margin, merged by the rule, then the cut-off tie fix (:mod:`mmbench.search.blocks`); a block
of at most ``rows_per_hit`` rows per hit is ranked from its full score rows instead (cheaper than
faiss's heaps there). Exact.

All queries go to faiss in ONE call per pool block, with faiss's BLAS threshold lowered so small
query batches never take its slow non-BLAS path, and its database tile raised from 1024 to
``database_tile`` rows (fewer thread barriers, which keeps it from collapsing when other processes
compete for the cores). Both settings are global in faiss; they are restored when the call returns.
On a shared machine, starting the process with ``OMP_WAIT_POLICY=PASSIVE`` helps further; it must
be set before faiss loads, so it is the caller's choice, not this module's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from mmbench.search.backends import faiss_gpus, faiss_version
from mmbench.search.base import Pool, Progress
from mmbench.search.blocks import TopK, Tuning, margin_search


@contextlib.contextmanager
def faiss_cpu_topk(queries: np.ndarray, database_tile: int) -> Iterator[TopK]:
    """faiss CPU kernel, BLAS path forced on, larger database tile (both restored afterwards)."""
    import faiss

    saved = (faiss.cvar.distance_compute_blas_threshold, faiss.cvar.distance_compute_blas_database_bs)
    faiss.cvar.distance_compute_blas_threshold = 0
    faiss.cvar.distance_compute_blas_database_bs = database_tile

    def topk(rows: np.ndarray, kb: int) -> tuple[np.ndarray, np.ndarray]:
        return faiss.knn(queries, rows, kb, metric=faiss.METRIC_INNER_PRODUCT)

    try:
        yield topk
    finally:
        faiss.cvar.distance_compute_blas_threshold, faiss.cvar.distance_compute_blas_database_bs = saved


@dataclass(frozen=True)
class FaissCpuBackend:
    name: str = "faiss-cpu"
    exact: bool = True
    devices: tuple[str, ...] = ("cpu",)
    tuning: Tuning = field(default_factory=lambda: Tuning(rows_per_hit=16))
    database_tile: int = 4096

    def available(self, device: str) -> bool | str:
        if device != "cpu":
            return "faiss-cpu runs on the CPU only"
        return True if faiss_version() is not None else "faiss is not installed"

    def describe(self, device: str) -> dict:
        return {"library": "faiss", "device": "cpu", "faiss_version": faiss_version(),
                "version": faiss_version(), "gpus": faiss_gpus()}

    def prepare(self, pool: Pool) -> _Index:
        return _Index(self, pool)


@dataclass(frozen=True)
class _Index:
    backend: FaissCpuBackend
    pool: Pool

    def search(self, queries: np.ndarray, k: int, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        n = min(k, self.pool.total)
        with faiss_cpu_topk(queries, self.backend.database_tile) as topk:
            return margin_search(queries, self.pool, n, topk, self.backend.tuning, progress)


BACKEND = FaissCpuBackend()
