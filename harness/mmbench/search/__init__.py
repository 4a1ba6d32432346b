"""Exact maximum-inner-product top-k search: the :func:`search` entry point and its backends.

Inputs are L2-normalised by the caller, so search does plain inner products in float32. faiss and
torch are imported inside functions, never when this package is imported.

The cut
-------
* :mod:`mmbench.search.ties` is THE tie rule (score descending, then candidate-id rank descending:
  trec_eval's). Every ordering in mmbench calls it, the metrics and the rerank stage included.
* :mod:`mmbench.search.base` is the contract: a :class:`~mmbench.search.base.SearchBackend` says
  whether it is exact, where it runs and what to record, and ``prepare(pool)`` returns an index
  that answers query batches. The index-owning shape is there so that a backend that builds once
  and queries many (a GPU copy, shards over devices or ranks) fits without another seam.
* :mod:`mmbench.search.reference` is the numpy oracle every backend is tested against.
* :mod:`mmbench.search.blocks` holds what the "top-kb of a block" backends share (margin, merge,
  cut-off tie fix); :mod:`mmbench.search.scan_topk` drives the C kernel.
* :mod:`mmbench.search.backends` has one module per backend, registered by name (lazily) in
  :func:`backends_registry`; plugins add theirs through the entry-point group
  ``mmbench.search_backends``.

Choosing a backend: ``backend="auto"`` (the default) takes the best exact one for the device:
on the CPU ``scan-cpu`` where the kernel is built, else ``faiss-cpu`` where faiss is installed, else
``torch``; on a CUDA device
``faiss-gpu`` where faiss has GPU support, else ``torch``. ``device="auto"`` is a CUDA GPU where
faiss or torch sees one, else the CPU. A named backend runs on the device asked for (with
``device="auto"``: its first listed device that is usable here) or is refused with the reason.

What :func:`search` returns is not a backend's own float32 scores but the re-scored values of
:mod:`mmbench.search.rescore` over the candidates the backend gathered (issue #23): the same bytes
whatever backend, BLAS or machine found them.

Pools larger than ``memory_budget_bytes`` (as float32) are searched block by block; float16
blocks (or memory maps) are cast to float32 a block (or, in the kernel, a tile) at a time.

Several devices in one process: ``search(..., devices=["cuda:0", "cuda:1"])`` (``--devices``) shards
the pool over them (:mod:`mmbench.search.backends.sharded`: ``sharded`` with torch, ``sharded-faiss``
with faiss-gpu); ``backend="auto"`` is then ``sharded``. Several ranks of a torchrun group: each
searches a share of the pool with the run's backend on its own device
(:mod:`mmbench.distributed.search`, through ``search(..., prepare=...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

import numpy as np

from mmbench.errors import MmbenchError
from mmbench.registry import Registry
from mmbench.search.base import (MAX_K, Pool, Progress, SearchBackend, SearchIndex, as_queries, check_k,
                                 check_tiebreak, parse_device, pool_parts)
from mmbench.search.reference import exact_search_numpy
from mmbench.search.rescore import gather_and_rescore, row_norm_bound
from mmbench.search.ties import RULE

__all__ = ["MAX_K", "RULE", "Pool", "SearchBackend", "SearchIndex", "backend_names", "backends_registry",
           "describe_backend", "exact_search_numpy", "get_backend", "pool_norm_bound", "resolve", "search"]


def _populate(reg: Registry) -> None:
    from mmbench.search.backends import BUILTIN

    for name, target in BUILTIN.items():
        reg.register(name, target)


@cache
def backends_registry() -> Registry[SearchBackend]:
    """Name -> backend; built-ins lazily, plugins from the entry-point group ``mmbench.search_backends``."""
    return Registry("search backend", populate=_populate, entry_point_group="mmbench.search_backends")


def backend_names() -> list[str]:
    """Every name ``search(backend=...)`` and ``--search-backend`` accept: ``auto`` and the registered ones."""
    return ["auto", *backends_registry().names()]


def get_backend(name: str) -> SearchBackend:
    """The registered backend ``name``; UnknownNameError (with the closest names) for an unknown one."""
    return backends_registry().get(name)


def resolve(backend: str = "auto", device: str = "auto", devices: Sequence[str] = ()) -> tuple[SearchBackend, str]:
    """(backend, device) that ``search(backend=..., device=..., devices=...)`` uses.

    ValueError for a malformed device or a CUDA device nothing can see (with ``auto``);
    UnknownNameError for an unknown backend; MmbenchError for a named backend that cannot run here.
    With ``devices`` (a sharded search), ``auto`` is ``sharded``, every device must be usable by the
    backend, and the device is the first of them.
    """
    if devices:
        return _resolve_devices(backend, tuple(devices))
    kind, number = parse_device(device)
    if backend == "auto":
        return _resolve_auto(device, kind, number)
    chosen = get_backend(backend)
    if kind == "auto":
        usable = [d for d in chosen.devices if chosen.available(d) is True]
        dev = usable[0] if usable else chosen.devices[0]
    else:
        dev = device
    reason = chosen.available(dev)
    if reason is not True:
        raise MmbenchError(f"search backend {backend!r} cannot run on {dev}: {reason}")
    return chosen, dev


def _resolve_devices(backend: str, devices: tuple[str, ...]) -> tuple[SearchBackend, str]:
    """(backend, first device) for a search sharded over ``devices``."""
    chosen = get_backend("sharded" if backend == "auto" else backend)
    for dev in devices:
        if parse_device(dev)[0] == "auto":
            raise ValueError(f"devices must name each device (cpu, cuda, cuda:N), got {dev!r}")
        reason = chosen.available(dev)
        if reason is not True:
            raise MmbenchError(f"search backend {chosen.name!r} cannot run on {dev}: {reason}")
    return chosen, devices[0]


def _resolve_auto(device: str, kind: str, number: int | None) -> tuple[SearchBackend, str]:
    """The best exact backend for a device request (see the module docstring)."""
    if kind == "cpu":
        return _best_cpu(), "cpu"
    from mmbench.search.backends import faiss_gpus, torch_cuda_count

    wanted = number or 0
    dev = "cuda" if kind == "auto" else device
    if faiss_gpus() > wanted:
        return get_backend("faiss-gpu"), dev
    if torch_cuda_count() > wanted:
        return get_backend("torch"), dev
    if kind != "auto":
        raise ValueError(f"device={device!r} requested but neither faiss nor torch can see that CUDA GPU")
    return _best_cpu(), "cpu"


def _best_cpu() -> SearchBackend:
    """scan-cpu where the kernel is built, else faiss-cpu where faiss is installed, else torch."""
    for name in ("scan-cpu", "faiss-cpu"):
        if get_backend(name).available("cpu") is True:
            return get_backend(name)
    return get_backend("torch")


def describe_backend(backend: str = "auto", device: str = "auto", devices: Sequence[str] = ()) -> dict:
    """Provenance of what ``search(..., backend=backend, device=device, devices=devices)`` uses: the
    backend's own keys (library, device, version, faiss_version, gpus, blas where they apply) plus
    ``name``, ``exact`` and (when given) ``devices``."""
    chosen, dev = resolve(backend, device, devices)
    return {**chosen.describe(dev), "name": chosen.name, "exact": bool(chosen.exact),
            **({"devices": list(devices)} if devices else {})}


def search(queries: np.ndarray, pool: np.ndarray | Sequence[np.ndarray], k: int, *,
           tiebreak: np.ndarray | None = None, backend: str = "auto", device: str = "auto",
           memory_budget_bytes: int = 2 * 1024**3, devices: Sequence[str] = (),
           progress: Progress | None = None,
           prepare: Callable[[SearchBackend, Pool], SearchIndex] | None = None,
           norm_bound: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by maximum inner product. Returns (indices int64 (Q, min(k, N)), scores float32 (Q, min(k, N))).

    ``pool`` is one (N, d) float array (possibly a memmap) or a sequence of blocks whose rows are
    numbered consecutively across the blocks. The backend gathers each query's candidates with a
    margin that provably holds the top k; they are then re-scored by one deterministic routine
    and ordered by the rule of :mod:`mmbench.search.ties` with ``tiebreak`` as keys (the row number
    when None): :mod:`mmbench.search.rescore`. So the answer depends on the embeddings alone, never on
    the backend, the BLAS or the machine (for an exact backend), and identical rows tie exactly.
    Where every inner product is exact in float32 it is :func:`exact_search_numpy`'s answer.
    ``progress(done_rows, total_rows)`` is called as blocks are searched. ``devices``: shard the pool
    over these devices in this process (``sharded``, ``sharded-faiss``; :func:`resolve`).
    ``prepare(backend, pool)``: how the backend's index is made (default ``backend.prepare``); a
    run sharded over the ranks of a torchrun group passes
    :meth:`mmbench.distributed.search.LeadShards.preparer`'s. ``norm_bound``: the pool's
    :func:`pool_norm_bound`, when the caller searches the same pool many times (the re-score's
    margin needs it, and computing it reads every row); None computes it for this call.
    """
    k = check_k(k)
    chosen, dev = resolve(backend, device, devices)
    queries = as_queries(queries)
    parts = pool_parts(pool, queries.shape[1])
    total = sum(p.shape[0] for p in parts)
    tiebreak = check_tiebreak(tiebreak, total)
    n = min(k, total)
    if n == 0 or queries.shape[0] == 0:
        return np.empty((queries.shape[0], n), np.int64), np.empty((queries.shape[0], n), np.float32)
    prepared_pool = Pool(tuple(parts), total, queries.shape[1], tiebreak, dev, memory_budget_bytes, tuple(devices))
    index = chosen.prepare(prepared_pool) if prepare is None else prepare(chosen, prepared_pool)
    return gather_and_rescore(index, queries, prepared_pool, n, progress=progress, norm_bound=norm_bound)


def pool_norm_bound(pool: np.ndarray | Sequence[np.ndarray], memory_budget_bytes: int = 2 * 1024**3) -> float:
    """An upper bound on the norm of every row of ``pool`` (one array or blocks, as :func:`search`
    takes it): :func:`mmbench.search.rescore.row_norm_bound`, for ``search(..., norm_bound=...)``.
    It reads every row once."""
    parts = [pool] if isinstance(pool, np.ndarray) else list(pool)
    if not parts:
        return 0.0
    dim = parts[0].shape[1]
    parts = pool_parts(parts, dim)
    return row_norm_bound(Pool(tuple(parts), sum(p.shape[0] for p in parts), dim, None, "cpu", memory_budget_bytes))
