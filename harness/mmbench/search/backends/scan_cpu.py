"""Backend ``scan-cpu``: mmbench's threshold-scan kernel (:mod:`mmbench.search.scan_topk`, C code in
``mmbench/native/_native.c``), where it was built at install. Exact by construction (every
candidate at or above the k-th score is kept, ties at the cut-off included): no margin, no tie fix.

Blocks are passed as stored (float16 too): the kernel casts a tile at a time, so no thread ever
holds a float32 copy of a whole block (one per core would multiply ``--memory-budget-gb``). The
kernel holds ids and keys in 32 bits: a pool whose keys do not fit (:func:`usable_keys`) is
answered by ``faiss-cpu`` instead, with the same result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mmbench.search import scan_topk
from mmbench.search.backends import faiss_gpus, faiss_version, numpy_blas
from mmbench.search.base import Pool, Progress, every_nth_row


@dataclass(frozen=True)
class ScanCpuBackend:
    name: str = "scan-cpu"
    exact: bool = True
    devices: tuple[str, ...] = ("cpu",)
    settings: scan_topk.ScanSettings = field(default_factory=scan_topk.ScanSettings)

    def available(self, device: str) -> bool | str:
        if device != "cpu":
            return "scan-cpu runs on the CPU only"
        if scan_topk.kernel() is None:
            return "mmbench's C kernel was not built (reinstall mmbench where a C compiler is found)"
        return True

    def describe(self, device: str) -> dict:
        return {"library": "mmbench-scan", "device": "cpu", "faiss_version": faiss_version(),
                "version": scan_topk.KERNEL_VERSION, "gpus": faiss_gpus(), "blas": numpy_blas()}

    def prepare(self, pool: Pool) -> _Index:
        return _Index(self, pool)


@dataclass(frozen=True)
class _Index:
    backend: ScanCpuBackend
    pool: Pool

    def search(self, queries: np.ndarray, k: int, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        pool, n = self.pool, min(k, self.pool.total)
        if not scan_topk.usable_keys(pool.tiebreak, pool.total):
            from mmbench.search.backends.faiss_cpu import BACKEND as FAISS_CPU
            from mmbench.search.backends.torch_cuda import BACKEND as TORCH

            other = FAISS_CPU if FAISS_CPU.available("cpu") is True else TORCH
            return other.prepare(pool).search(queries, k, progress)
        return scan_topk.scan_topk(
            queries, lambda: ((b.offset, b.rows) for b in pool.blocks()), pool.total, n, pool.tiebreak,
            sample=lambda stride: every_nth_row(pool.parts, stride), progress=progress,
            settings=self.backend.settings)

    def gather_above(self, queries: np.ndarray, n: int, delta: np.ndarray, progress: Progress | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The re-score's gather in the kernel (mmbench.search.rescore.gather_and_rescore), or None where it cannot."""
        pool = self.pool
        if not scan_topk.can_scan_above(pool.total):
            return None
        return scan_topk.scan_above(
            queries, lambda: ((b.offset, b.rows) for b in pool.blocks()), pool.total, n, delta,
            sample=lambda stride: every_nth_row(pool.parts, stride), progress=progress,
            settings=self.backend.settings)


BACKEND = ScanCpuBackend()
