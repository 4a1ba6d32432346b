"""The efficiency report of a task record (``efficiency``): what the run cost, beside what it scored.

Every figure here is a measurement of this process on this machine: it changes from run to run and
is never compared across runs (the golden, reuse and regression checks read scores, never this key).

* **encode**: per role (``queries``, ``candidates``) and per modality, the items encoded now, their
  wall time and items/s (:func:`mmbench.models.progress.metered` times each encode call; a call whose
  items mix modalities counts under ``"mixed"``); items taken from the embedding cache are counted
  as ``cached`` and never enter a throughput. ``device`` is where the model ran. A pool is encoded
  once per run: every task that searches it reports the same candidate figures (``pool`` names it).
* **search**: the batch search of all queries (``seconds``, ``queries_per_s``), and the latency of a
  single-query search, p50/p95/mean over a sample (:func:`sample_latency`): up to
  :data:`LATENCY_SAMPLES` queries spread evenly over the query file, each searched alone through
  the same backend; sampling stops once it has spent ``max(LATENCY_MIN_BUDGET_S,
  LATENCY_BUDGET_SHARE * batch seconds)`` (the sample that crosses the limit finishes).
  Percentiles are numpy's linear interpolation between the sorted samples.
* **memory**: ``pool_bytes``, the candidate embeddings as held for search (float32, or float16 with
  ``--embed-dtype float16``); ``index_bytes``, a flat float32 index of the pool (rows x dim x 4: what
  a FAISS ``IndexFlatIP`` or a GPU copy holds, the figure papers report as index size; mmbench's exact
  backends search the pool itself, cast block by block); ``peak_rss_bytes``, the process's peak
  resident memory so far (``getrusage``; a process that runs several tasks reports its peak up to
  this one); ``peak_gpu_bytes``, torch's peak allocated CUDA memory over the visible devices when
  torch was already imported and CUDA initialised, else null (faiss's own GPU memory is not in it).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from mmbench.models.progress import MIXED

LATENCY_SAMPLES = 32          # single-query searches timed at most
LATENCY_MIN_BUDGET_S = 0.25   # the sampling may always spend this much ...
LATENCY_BUDGET_SHARE = 0.05   # ... or this share of the batch search's time, whichever is more


def sample_latency(search_one: Callable[[int], object], n_queries: int, batch_seconds: float, *,
                   max_samples: int = LATENCY_SAMPLES, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Time ``search_one(i)`` for up to ``max_samples`` query rows ``i`` spread evenly over
    ``0..n_queries-1`` (the first and last included), within the budget of the module docstring.
    Returns ``{"p50_ms", "p95_ms", "mean_ms", "samples"}`` (``samples`` 0 and the rest null when
    there are no queries)."""
    rows = np.unique(np.linspace(0, n_queries - 1, min(max_samples, n_queries)).round().astype(np.int64)) \
        if n_queries > 0 else np.zeros(0, np.int64)
    budget = max(LATENCY_MIN_BUDGET_S, LATENCY_BUDGET_SHARE * batch_seconds)
    times: list[float] = []
    spent = 0.0
    for i in rows:
        start = clock()
        search_one(int(i))
        elapsed = clock() - start
        times.append(elapsed)
        spent += elapsed
        if spent >= budget:
            break
    return latency_summary(times)


def latency_summary(seconds: Sequence[float]) -> dict:
    """p50, p95 and mean in milliseconds (rounded to 3 decimals) of ``seconds``, and their count."""
    if not len(seconds):
        return {"p50_ms": None, "p95_ms": None, "mean_ms": None, "samples": 0}
    ms = 1000 * np.asarray(seconds, dtype=np.float64)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "mean_ms": round(float(ms.mean()), 3), "samples": int(ms.size)}


def _rate(items: int, seconds: float) -> float | None:
    return round(items / seconds, 3) if items > 0 and seconds > 0 else None


def encode_figures(stats: Sequence, modalities: Sequence[str]) -> dict:
    """The encode figures of one table: ``stats`` its :class:`~mmbench.embeddings.EncodeStats` (one
    per local pool for a union), ``modalities`` its items' modalities. Per modality: ``encoded``,
    ``seconds``, ``items_per_s`` (null when nothing was encoded) and ``cached`` (the modality's items
    not encoded now; absent where a mixed encode call makes the split unknown)."""
    from mmbench.data.types import canonical_modality

    ledger: dict[str, tuple[int, float]] = {}
    for s in stats:
        for key, (n, sec) in (getattr(s, "by_modality", None) or {}).items():
            m, t = ledger.get(key, (0, 0.0))
            ledger[key] = (m + n, t + sec)
    totals: dict[str, int] = {}
    for m in modalities:
        key = canonical_modality(m)
        totals[key] = totals.get(key, 0) + 1
    split_known = MIXED not in ledger
    by_modality = {}
    for key in sorted(set(totals) | set(ledger)):
        n, sec = ledger.get(key, (0, 0.0))
        entry = {"encoded": n, "seconds": round(sec, 3), "items_per_s": _rate(n, sec)}
        if split_known and key != MIXED:
            entry["cached"] = totals.get(key, 0) - n
        by_modality[key] = entry
    encoded = sum(n for n, _ in ledger.values())
    seconds = sum(sec for _, sec in ledger.values())
    return {"items": len(modalities), "encoded": encoded, "cached": sum(getattr(s, "cached", 0) for s in stats),
            "seconds": round(seconds, 3), "items_per_s": _rate(encoded, seconds), "by_modality": by_modality}


def encode_device(device: str) -> str:
    """Where the model ran: ``device``, with ``"auto"`` resolved as the model loader resolves it when
    torch is already imported; without torch no model ran on an accelerator, so ``"cpu"``."""
    if device != "auto":
        return device
    if "torch" not in sys.modules:
        return "cpu"
    from mmbench.models.loading import resolve_device

    return resolve_device(device)


def peak_rss_bytes() -> int | None:
    """The process's peak resident set size in bytes (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:                         # not on POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_gpu_bytes() -> int | None:
    """torch's peak allocated CUDA memory, summed over the visible devices, when torch is already
    imported and CUDA initialised (never imports torch, never initialises CUDA); else None."""
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_initialized():
            return None
        return int(sum(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count())))
    except Exception:                            # noqa: BLE001 - a broken CUDA state is no report
        return None


def pool_bytes(blocks: Sequence[np.ndarray]) -> int:
    """The bytes of the pool's embeddings as held (their own dtype)."""
    return int(sum(np.asarray(b).nbytes for b in blocks))


def flat_index_bytes(n_rows: int, blocks: Sequence[np.ndarray]) -> int:
    """A flat float32 index of ``n_rows`` rows of the blocks' width."""
    dim = next((int(b.shape[1]) for b in blocks if getattr(b, "ndim", 0) == 2), 0)
    return int(n_rows) * dim * 4


def efficiency_report(*, device: str, queries_stats, query_modalities: Sequence[str], pool, search: dict,
                      retrieved) -> dict:
    """The record's ``efficiency``: ``pool`` a :class:`~mmbench.pipeline.pools.Pool`, ``search`` the
    record's search description (backend name and device), ``retrieved`` a
    :class:`~mmbench.pipeline.retrieve.Retrieved`."""
    n_queries = len(query_modalities)
    search_seconds = float(getattr(retrieved, "search_seconds", retrieved.seconds))
    return {
        "encode": {"device": encode_device(device),
                   "queries": encode_figures([queries_stats], query_modalities),
                   "candidates": {"pool": pool.label,
                                  **encode_figures(pool.encode_stats, pool.table.modalities)}},
        "search": {"backend": search.get("name"), "device": search.get("device"), "queries": n_queries,
                   "seconds": round(search_seconds, 4), "queries_per_s": _rate(n_queries, search_seconds),
                   "latency": getattr(retrieved, "latency", None) or latency_summary([])},
        "memory": {"pool_bytes": pool_bytes(pool.blocks), "index_bytes": flat_index_bytes(len(pool.table), pool.blocks),
                   "peak_rss_bytes": peak_rss_bytes(), "peak_gpu_bytes": peak_gpu_bytes()},
    }


__all__ = ["LATENCY_BUDGET_SHARE", "LATENCY_MIN_BUDGET_S", "LATENCY_SAMPLES", "efficiency_report", "encode_device",
           "encode_figures", "flat_index_bytes", "latency_summary", "peak_gpu_bytes", "peak_rss_bytes",
           "pool_bytes", "sample_latency"]
