"""Backend ``faiss-gpu``: ``faiss.knn_gpu`` (the ``GpuIndexFlatIP`` brute-force kernel) on
``StandardGpuResources`` per block with a margin, merged by the rule, then the cut-off tie fix
(:mod:`mmbench.search.blocks`, the fix on the CPU). Exact.

float32 storage is used: faiss's float16 option needs the queries in float16 too, which would
change the ranking.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mmbench.search.backends import faiss_gpus, faiss_version, gpu_number
from mmbench.search.base import Pool, Progress
from mmbench.search.blocks import Tuning, margin_search


@dataclass(frozen=True)
class FaissGpuBackend:
    name: str = "faiss-gpu"
    exact: bool = True
    devices: tuple[str, ...] = ("cuda",)
    tuning: Tuning = field(default_factory=Tuning)

    def available(self, device: str) -> bool | str:
        if not device.startswith("cuda"):
            return "faiss-gpu runs on CUDA GPUs only"
        if faiss_version() is None:
            return "faiss is not installed"
        return True if faiss_gpus() > gpu_number(device) else f"faiss sees no GPU {device}"

    def describe(self, device: str) -> dict:
        return {"library": "faiss", "device": device, "faiss_version": faiss_version(),
                "version": faiss_version(), "gpus": faiss_gpus()}

    def prepare(self, pool: Pool) -> _Index:
        return _Index(self, pool)


@dataclass(frozen=True)
class _Index:
    backend: FaissGpuBackend
    pool: Pool
    max_gather: int = 1600      # faiss's GPU k-selection takes k <= 2048, and each block adds its margin

    def search(self, queries: np.ndarray, k: int, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        res = faiss.StandardGpuResources()
        gpu = int(self.pool.device.partition(":")[2] or -1)   # -1: the current CUDA device

        def topk(rows: np.ndarray, kb: int) -> tuple[np.ndarray, np.ndarray]:
            return faiss.knn_gpu(res, queries, rows, kb, metric=faiss.METRIC_INNER_PRODUCT, device=gpu)

        return margin_search(queries, self.pool, min(k, self.pool.total), topk, self.backend.tuning, progress)


BACKEND = FaissGpuBackend()
