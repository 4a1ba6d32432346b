"""Backends ``sharded`` (torch) and ``sharded-faiss`` (faiss-gpu): the pool split into contiguous
shards, one per device, searched in ONE process; the shards' candidates merged by the rule.

The plan (device-agnostic, :func:`plan_shards`)
-----------------------------------------------
The pool's rows are cut into ``len(devices)`` contiguous shards of near-equal size (the first
``total % S`` shards one row longer). Each shard is kept on its device in one of three ways, chosen
by the memory budget (``--memory-budget-gb``: here the device memory a shard may occupy):

* ``float32``: resident, when the shard's rows as float32 fit the budget;
* ``float16``: resident, when they do not but every part of the shard is stored as float16 on the
  host (``--embed-dtype float16``) and fits as float16. A float32 pool is never narrowed: that would
  change its scores, and this backend is exact;
* ``streamed``: neither fits: the shard's blocks (``budget / 2`` bytes of float32 rows each, as
  stored: float16 stays float16) are copied from the host (a memory map of the cache) for every
  query batch; on a GPU through pinned memory on a side CUDA stream, block ``i + 1``'s copy
  overlapping block ``i``'s product (double buffering: at most two blocks on the device).

The search (:func:`shard_topk`, then :func:`finish`)
----------------------------------------------------
Each device computes, for every query, its shard's top ``kb = n + max(tie_margin, n *
margin_fraction)`` by float32 inner product (no TF32; float16 rows are cast to float32 on the
device, which is exact): a product of at most ``score_bytes`` per step, NaN scores mapped to -inf,
``torch.topk`` (or faiss's GPU k-selection), merged into a running top-kb. What a shard leaves out
scores at most its kb-th value ``last``. On the host the shards' lists are merged by the rule
(:func:`mmbench.search.ties.select`) to the first n; let ``T`` be the n-th score of a row:

* a shard with ``last < T`` for that row can hide no candidate of the first n (they all score >= T);
* a shard with ``last >= T`` (a tie group or near-ties wider than the margin at the cut-off) is
  ranked for that row exactly on the host from its full score rows
  (:func:`mmbench.search.blocks.exact_block_topk`), and the row re-selected. That only raises T,
  so the other shards stay safe;
* a row whose n-th score is -inf (fewer than n numbers: NaN rows), or whose faiss hits held NaN, is
  ranked from its full score rows by the rule (NaN last; :func:`mmbench.search.blocks.full_rows`).

So the index's answer is the rule's first n over float32 scores, ties at the cut-off included:
exact, as :mod:`mmbench.search.base` asks, and (through :mod:`mmbench.search.rescore`) the run
files are the same bytes as any other exact backend's.

Only :func:`_cuda_blocks` (streams, events, pinned memory) and the faiss call are GPU-only; the
plan, the per-shard loop, the merge and the fix are the code the tests run on CPU tensors with
several ``"cpu"`` devices.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from mmbench.search import ties
from mmbench.search.backends import faiss_gpus, faiss_version, gpu_number, torch_cuda_count
from mmbench.search.base import Block, Pool, Progress, even_ranges, iter_blocks, parse_device, slice_parts
from mmbench.search.blocks import Tuning, exact_block_topk, full_rows

__all__ = ["STORAGES", "Shard", "ShardSettings", "ShardedBackend", "finish", "plan_shards", "shard_devices",
           "shard_topk"]

STORAGES = ("float32", "float16", "streamed")


@dataclass(frozen=True)
class ShardSettings:
    """Cost knobs (none changes a result)."""

    tuning: Tuning = field(default_factory=Tuning)      # the margin (tie_margin, margin_fraction)
    score_bytes: int = 1 << 30          # largest float32 (queries x rows) product per step on the CPU ...
    score_bytes_cuda: int = 4 << 30     # ... and on a GPU
    min_step_rows: int = 4096           # rows per step at least (query batches shrink instead)


@dataclass(frozen=True)
class Shard:
    """Rows ``[offset, offset + rows)`` of the pool on ``device``, kept as ``storage``; ``blocks``
    are the host views of those rows (global offsets), at most the streaming block size each."""

    device: str
    offset: int
    rows: int
    storage: str
    blocks: tuple[Block, ...]


def shard_devices(device: str, devices: Sequence[str] = ()) -> tuple[str, ...]:
    """The devices a search shards over: ``devices`` when given; else every GPU torch sees for
    ``cuda`` (or ``auto`` where one is seen), ``cuda:N`` alone, or the CPU."""
    if devices:
        return tuple(devices)
    kind, number = parse_device(device)
    if kind == "cuda" and number is not None:
        return (device,)
    count = torch_cuda_count() if kind in ("cuda", "auto") else 0
    return tuple(f"cuda:{i}" for i in range(count)) if count else ("cpu",)


def plan_shards(pool: Pool, devices: Sequence[str]) -> list[Shard]:
    """Contiguous near-equal shards, one per device (none empty: at most ``total`` shards), each
    with its storage chosen by ``pool.memory_budget_bytes`` (module docstring)."""
    devices = list(devices)[:max(1, pool.total)]
    block_rows = max(1, pool.max_rows // 2)            # two streamed blocks in flight: one budget
    shards = []
    for device, (offset, end) in zip(devices, even_ranges(pool.total, len(devices))):
        size = end - offset
        views = slice_parts(pool.parts, offset, end)
        dtypes = {np.dtype(v.dtype) for v in views}
        blocks = tuple(Block(b.offset + offset, b.rows) for b in iter_blocks(views, block_rows))
        cells = size * pool.dim
        if cells * 4 <= pool.memory_budget_bytes:
            storage = "float32"
        elif dtypes == {np.dtype(np.float16)} and cells * 2 <= pool.memory_budget_bytes:
            storage = "float16"
        else:
            storage = "streamed"
        shards.append(Shard(device, offset, size, storage, blocks))
    return shards


@dataclass(frozen=True)
class ShardedBackend:
    name: str = "sharded"
    exact: bool = True
    devices: tuple[str, ...] = ("cuda", "cpu")
    library: str = "torch"                      # "torch" or "faiss" (faiss-gpu's k-selection, GPUs only)
    settings: ShardSettings = field(default_factory=ShardSettings)

    def available(self, device: str) -> bool | str:
        try:
            import torch  # noqa: F401
        except ImportError:
            return "torch is not installed"
        if self.library == "faiss":
            if not device.startswith("cuda"):
                return f"{self.name} runs on CUDA GPUs only"
            if faiss_version() is None:
                return "faiss is not installed"
            if faiss_gpus() <= gpu_number(device):
                return f"faiss sees no GPU {device}"
        if device.startswith("cuda") and torch_cuda_count() <= gpu_number(device):
            return f"torch sees no GPU {device}"
        return True

    def describe(self, device: str) -> dict:
        import torch

        return {"library": self.library, "device": device, "version": (faiss_version() if self.library == "faiss"
                                                                       else torch.__version__),
                "faiss_version": faiss_version(), "torch_version": torch.__version__, "gpus": torch_cuda_count(),
                "devices": list(shard_devices(device)),
                "storage": "per device by --memory-budget-gb: float32, float16 (float16 pools) or streamed"}

    def prepare(self, pool: Pool) -> _Index:
        shards = plan_shards(pool, shard_devices(pool.device, pool.devices))
        return _Index(self, pool, shards, [_DeviceShard.build(s, self) for s in shards])

    @property
    def max_gather(self) -> int:
        """faiss's GPU k-selection takes k <= 2048 (the gather adds its margin); torch has no such cap."""
        return 1600 if self.library == "faiss" else 8192


@dataclass
class _DeviceShard:
    """A shard on its device: resident tensor (float32 or float16) or nothing (streamed)."""

    shard: Shard
    resident: object | None          # torch.Tensor on the device
    faiss_res: object | None         # faiss.StandardGpuResources for this device

    @classmethod
    def build(cls, shard: Shard, backend: ShardedBackend) -> _DeviceShard:
        import torch

        resident = None
        if shard.storage != "streamed":
            dtype = torch.float16 if shard.storage == "float16" else torch.float32
            resident = torch.empty((shard.rows, shard.blocks[0].rows.shape[1] if shard.blocks else 0),
                                   dtype=dtype, device=shard.device)
            for block in shard.blocks:
                start = block.offset - shard.offset
                resident[start:start + block.rows.shape[0]].copy_(_host_tensor(block.rows, torch).to(dtype))
        res = None
        if backend.library == "faiss":
            import faiss

            res = faiss.StandardGpuResources()
        return cls(shard, resident, res)

    def device_blocks(self) -> Iterator[tuple[int, object]]:
        """(global offset, rows on the device) covering the shard."""
        import torch

        if self.resident is not None:
            yield self.shard.offset, self.resident
        elif self.shard.device.startswith("cuda"):
            yield from _cuda_blocks(self.shard.blocks, torch.device(self.shard.device), torch)
        else:
            for block in self.shard.blocks:
                yield block.offset, _host_tensor(block.rows, torch)


def _host_tensor(rows: np.ndarray, torch) -> object:
    """A CPU tensor over ``rows`` (a memory map's view too: read-only is fine, nothing writes it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(rows))


def _cuda_blocks(blocks: Sequence[Block], device, torch) -> Iterator[tuple[int, object]]:
    """Stream host blocks to ``device``, double-buffered: block i+1 is copied (pinned memory, side
    stream) while block i is used on the current stream. ``record_stream`` keeps the caching
    allocator from reusing a block's memory before the compute stream is done with it."""
    copier = torch.cuda.Stream(device)
    compute = torch.cuda.current_stream(device)

    def upload(block: Block) -> tuple[int, object, object, object]:
        host = _host_tensor(block.rows, torch).pin_memory()
        with torch.cuda.stream(copier):
            rows = host.to(device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(copier)
        return block.offset, rows, ready, host      # the pinned source is held until its copy was waited on

    pending = upload(blocks[0]) if blocks else None
    for i in range(len(blocks)):
        offset, rows, ready, _host = pending
        pending = upload(blocks[i + 1]) if i + 1 < len(blocks) else None
        compute.wait_event(ready)
        rows.record_stream(compute)
        yield offset, rows


def shard_topk(dev: _DeviceShard, queries: np.ndarray, kb: int, settings: ShardSettings,
               library: str = "torch") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shard's top ``kb`` (at most its rows) for every query by float32 inner product, values
    descending (NaN counted as -inf): (values float32 (Q, kb), global ids int64 (Q, kb), a NaN seen
    by faiss (Q,) bool). Anything left out scores at most the row's last value. The caller turns TF32
    off (:meth:`_Index.search`, once for every device's thread)."""
    import torch

    device = torch.device(dev.shard.device)
    kb = min(kb, dev.shard.rows)
    n_q = queries.shape[0]
    budget = settings.score_bytes_cuda if device.type == "cuda" else settings.score_bytes
    step = max(settings.min_step_rows, budget // (4 * n_q))
    q_step = max(1, budget // (4 * step))
    q = torch.from_numpy(queries).to(device)
    best: list = [None] * len(range(0, n_q, q_step))
    nan = torch.zeros(n_q, dtype=torch.bool, device=device)
    for offset, rows in dev.device_blocks():
        for r0 in range(0, rows.shape[0], step):
            sub = rows[r0:r0 + step].float()
            k_here = min(kb, sub.shape[0])
            for j, q0 in enumerate(range(0, n_q, q_step)):
                qs = q[q0:q0 + q_step]
                if library == "faiss":
                    import faiss
                    import faiss.contrib.torch_utils  # noqa: F401  (knn_gpu on torch tensors)

                    values, ids = faiss.knn_gpu(dev.faiss_res, qs, sub, k_here,
                                                metric=faiss.METRIC_INNER_PRODUCT, device=device.index or 0)
                    nan[q0:q0 + q_step] |= values.isnan().any(dim=1)
                    values = values.masked_fill(values.isnan(), float("-inf"))
                else:
                    scores = qs @ sub.T
                    inf = float("inf")
                    values, ids = torch.topk(torch.nan_to_num_(scores, nan=-inf, posinf=inf, neginf=-inf), k_here, dim=1)
                ids = ids + (offset + r0)
                if best[j] is not None:
                    values, ids = torch.cat((best[j][0], values), 1), torch.cat((best[j][1], ids), 1)
                    values, pos = torch.topk(values, min(kb, values.shape[1]), dim=1)
                    ids = ids.gather(1, pos)
                best[j] = (values, ids)
    out_v = torch.cat([b[0] for b in best]).cpu().numpy().astype(np.float32, copy=False)
    out_i = torch.cat([b[1] for b in best]).cpu().numpy().astype(np.int64, copy=False)
    return out_v, out_i, nan.cpu().numpy()


def finish(queries: np.ndarray, pool: Pool, n: int, shards: Sequence[Shard],
           found: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], tuning: Tuning
           ) -> tuple[np.ndarray, np.ndarray]:
    """The rule's first n of every query from the shards' top lists (module docstring: merge, then
    the exact fix of rows whose n-th score a shard's left-out rows may reach, then NaN rows)."""
    tiebreak = pool.tiebreak
    idx, scores = ties.select(np.hstack([f[0] for f in found]), np.hstack([f[1] for f in found]), tiebreak, n,
                              rows_per_thread=tuning.rows_per_thread)
    full = np.logical_or.reduce([f[2] for f in found]) | ~(scores[:, n - 1] > -np.inf)
    kth = scores[:, n - 1].copy()
    for shard, (values, _, _) in zip(shards, found):
        if values.shape[1] >= shard.rows:
            continue                                  # the whole shard was gathered
        rows = np.flatnonzero((values[:, -1] >= kth) & ~full)
        if rows.size == 0:
            continue
        inside = (idx[rows] >= shard.offset) & (idx[rows] < shard.offset + shard.rows)
        cand_s, cand_i = [np.where(inside, -np.inf, scores[rows]).astype(np.float32)], [idx[rows]]
        for block in shard.blocks:
            b_i, b_s = exact_block_topk(queries[rows], block, n, tiebreak, pool.memory_budget_bytes, tuning)
            full[rows] |= np.isnan(b_s).any(axis=1)
            cand_s.append(b_s)
            cand_i.append(b_i)
        idx[rows], scores[rows] = ties.select(np.hstack(cand_s), np.hstack(cand_i), tiebreak, n,
                                              rows_per_thread=tuning.rows_per_thread)
    full |= ~(scores[:, n - 1] > -np.inf)
    rows = np.flatnonzero(full)
    if rows.size:
        idx[rows], scores[rows] = full_rows(queries[rows], pool, n)
    return idx, scores


@dataclass
class _Index:
    backend: ShardedBackend
    pool: Pool
    shards: list[Shard]
    on_devices: list[_DeviceShard]

    @property
    def max_gather(self) -> int:
        return self.backend.max_gather

    def search(self, queries: np.ndarray, k: int, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        n = min(k, self.pool.total)
        tuning = self.backend.settings.tuning
        kb = n + max(tuning.tie_margin, int(n * tuning.margin_fraction))
        found: list = [None] * len(self.shards)
        done = [0]

        def one(i: int) -> None:
            found[i] = shard_topk(self.on_devices[i], queries, kb, self.backend.settings, self.backend.library)
            done[0] += self.shards[i].rows
            if progress is not None:
                progress(done[0], self.pool.total)

        def per_device(device: str) -> None:
            """This device's shards in turn (a CUDA device made current: faiss and streams use it)."""
            mine = [i for i, s in enumerate(self.shards) if s.device == device]
            if device.startswith("cuda"):
                import torch

                with torch.cuda.device(torch.device(device)):
                    for i in mine:
                        one(i)
            else:
                for i in mine:
                    one(i)

        import torch

        devices = list(dict.fromkeys(s.device for s in self.shards))
        gpus = [d for d in devices if d.startswith("cuda")]
        saved = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")      # no TF32: set once, for every device's thread
        try:
            if len(gpus) > 1:                               # one thread per GPU, all at once
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(len(gpus)) as workers:
                    list(workers.map(per_device, gpus))
                devices = [d for d in devices if d not in gpus]
            for device in devices:                          # the CPU's shards (or one GPU's) in turn
                per_device(device)
        finally:
            torch.set_float32_matmul_precision(saved)
        return finish(queries, self.pool, n, self.shards, found, tuning)


BACKEND = ShardedBackend()
FAISS_BACKEND = ShardedBackend(name="sharded-faiss", devices=("cuda",), library="faiss")
