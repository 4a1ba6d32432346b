"""A run's cost in a few numbers, from its task records' ``efficiency`` (docs/results.md, "The efficiency
report"): the leaderboard's optional columns (``mmbench leaderboard build --efficiency``), so that a
model's quality can be weighed against what it costs.

Over the run's tasks that carry a report (a record written before the report existed has none):

* ``encode_items_s``: items encoded per second, sum of items encoded / sum of their seconds over the
  tables the run encoded, each pool once (``candidates.pool`` names it: a pool shared by several
  tasks is reported by each) and each task's queries; NaN when every item came from the cache;
* ``search_qps``: the batch searches' queries per second (sum of queries / sum of seconds);
* ``latency_p50_ms``, ``latency_p95_ms``: the median over tasks of each task's single-query p50 / p95;
* ``index_mib``, ``peak_rss_mib``, ``peak_gpu_mib``: the largest over tasks (MiB = 2^20 bytes); the GPU
  column is NaN when no task read a GPU peak.

Every column is NaN for a run none of whose tasks has a report, and for published rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

EFFICIENCY_COLUMNS = {"encode_items_s": "encode items/s", "search_qps": "search q/s",
                      "latency_p50_ms": "latency p50 ms", "latency_p95_ms": "latency p95 ms",
                      "index_mib": "index MiB", "peak_rss_mib": "peak RSS MiB", "peak_gpu_mib": "peak GPU MiB"}
"""Column key -> header text."""

MIB = 1 << 20


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _get(obj, *path):
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def efficiency_columns(reports: Mapping[str, Mapping], tasks: Sequence[str]) -> dict[str, float]:
    """The columns of :data:`EFFICIENCY_COLUMNS` from ``reports`` (task -> the record's ``efficiency``),
    over ``tasks`` (module docstring). A value that is not a finite number counts as absent."""
    have = [reports[t] for t in tasks if isinstance(reports.get(t), Mapping)]
    out = dict.fromkeys(EFFICIENCY_COLUMNS, math.nan)
    if not have:
        return out
    encoded = seconds = 0.0
    pools: set = set()
    for rep in have:
        tables = [_get(rep, "encode", "queries")]
        pool = _get(rep, "encode", "candidates", "pool")
        if pool not in pools:
            pools.add(pool)
            tables.append(_get(rep, "encode", "candidates"))
        for fig in tables:
            n, s = _num(_get(fig, "encoded")), _num(_get(fig, "seconds"))
            if n and s:
                encoded, seconds = encoded + n, seconds + s
    if encoded and seconds:
        out["encode_items_s"] = encoded / seconds
    queries = [(_num(_get(r, "search", "queries")), _num(_get(r, "search", "seconds"))) for r in have]
    queries = [(n, s) for n, s in queries if n is not None and s]
    if queries:
        out["search_qps"] = sum(n for n, _ in queries) / sum(s for _, s in queries)
    for col, key in (("latency_p50_ms", "p50_ms"), ("latency_p95_ms", "p95_ms")):
        values = [v for v in (_num(_get(r, "search", "latency", key)) for r in have) if v is not None]
        if values:
            out[col] = float(np.median(values))
    for col, key in (("index_mib", "index_bytes"), ("peak_rss_mib", "peak_rss_bytes"), ("peak_gpu_mib", "peak_gpu_bytes")):
        values = [v for v in (_num(_get(r, "memory", key)) for r in have) if v is not None]
        if values:
            out[col] = max(values) / MIB
    return out


__all__ = ["EFFICIENCY_COLUMNS", "efficiency_columns"]
