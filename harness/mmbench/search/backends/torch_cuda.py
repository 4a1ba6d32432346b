"""Backend ``torch``: float32 ``torch.mm`` + ``torch.topk`` per block with a margin, merged by the
rule, then the cut-off tie fix (:mod:`mmbench.search.blocks`). TF32 is switched off for the call
(restored afterwards); query chunks are sized to bound the score matrix. Runs on CUDA GPUs (the
``auto`` choice where faiss has no GPU support) and on the CPU. Exact.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from mmbench.search.backends import faiss_version, gpu_number, torch_cuda_count
from mmbench.search.base import Pool, Progress
from mmbench.search.blocks import Tuning, margin_search


@dataclass(frozen=True)
class TorchBackend:
    name: str = "torch"
    exact: bool = True
    devices: tuple[str, ...] = ("cuda", "cpu")
    tuning: Tuning = field(default_factory=Tuning)
    score_bytes: int = 1 << 30      # largest score matrix of one query chunk

    def available(self, device: str) -> bool | str:
        try:
            import torch  # noqa: F401
        except ImportError:
            return "torch is not installed"
        if device == "cpu":
            return True
        return True if torch_cuda_count() > gpu_number(device) else f"torch sees no GPU {device}"

    def describe(self, device: str) -> dict:
        import torch

        return {"library": "torch", "device": device, "faiss_version": faiss_version(),
                "version": torch.__version__, "gpus": torch_cuda_count()}

    def prepare(self, pool: Pool) -> _Index:
        return _Index(self, pool)


@dataclass(frozen=True)
class _Index:
    backend: TorchBackend
    pool: Pool

    def search(self, queries: np.ndarray, k: int, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        import torch

        device = self.pool.device
        saved = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        q = torch.from_numpy(queries).to(device)

        def topk(rows: np.ndarray, kb: int) -> tuple[np.ndarray, np.ndarray]:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                block = torch.from_numpy(rows).to(device)
            chunk = max(1, self.backend.score_bytes // (4 * rows.shape[0]))
            out_s = np.empty((q.shape[0], kb), np.float32)
            out_i = np.empty((q.shape[0], kb), np.int64)
            for start in range(0, q.shape[0], chunk):
                values, indices = torch.topk(q[start:start + chunk] @ block.T, kb, dim=1)
                out_s[start:start + chunk] = values.cpu().numpy()
                out_i[start:start + chunk] = indices.cpu().numpy()
            return out_s, out_i

        try:
            return margin_search(queries, self.pool, min(k, self.pool.total), topk, self.backend.tuning, progress)
        finally:
            torch.set_float32_matmul_precision(saved)


BACKEND = TorchBackend()
