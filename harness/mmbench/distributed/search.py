"""Search sharded over the ranks of a torchrun group: each rank searches a share of the pool for every
query on its own device; rank 0 merges the shares' lists (issue #26).

Who does what
-------------
After the group has encoded (:mod:`mmbench.distributed.encode`), the ranks agree whether the search
is sharded over them (:func:`agree`). It is when the group has more than one rank, the run does not
shard over ``--devices`` inside one process, and the run's search backend can run on every rank's
device (``cuda:LOCAL_RANK`` in an NCCL group, else the CPU). A rank that sees every chunk of the cache
(a shared file system) opens its pools from it; one that does not (a cache per node) is sent its
shares' rows by rank 0 (:attr:`RankSearch.sent`). Rank 0 then evaluates as
one process does, its searches going through :class:`LeadShards`; the other ranks run :func:`serve`,
answering rank 0's requests until it says it is done.

The requests (mmbench's gloo channel; arrays as CPU tensors)
-----------------------------------------------------------
* ``("pool", task, label, total, dim, budget)``: every rank opens ``task``'s pool from the cache (the rows rank 0
  searches), or receives its share's rows and keys from rank 0 (point to point, after the request),
  checks its size and width, and prepares its share: rows ``[lo_r, hi_r)`` of near-equal contiguous
  shares (:func:`mmbench.search.base.even_ranges`), with the run's backend on its device and rank 0's
  memory budget (``--memory-budget-gb``). A pool prepared under the same label is kept (a global
  suite's pool is prepared once for all its tasks), and rank 0 sends the request only when the label
  changes.
* ``("search", Q, d, m)`` and then the (Q, d) float32 queries broadcast from rank 0: every rank answers
  with its share's first ``min(m, hi_r - lo_r)`` by the rule (global row ids int64, float32 scores),
  sent to rank 0 point to point.
* ``("done",)``: the serving ranks return from :func:`serve`.

Why the merge is exact
----------------------
A share is prepared with the pool's tie-break keys of its rows (the global row number where the pool
has none), so its backend's answer is, by the backend contract (:mod:`mmbench.search.base`), its
share's first m by the rule over its float32 scores. A candidate among the pool's first m by the rule
is among its own share's first m (fewer candidates of its share precede it than of the whole pool),
so the rule's first m of the union of the shares' lists (:func:`mmbench.search.ties.select`) is the
pool's first m: the merged index is as exact as the shares' backend. Different shares' scores come
from different devices; each obeys the error bound of :mod:`mmbench.search.rescore`'s margin proof,
so the gathered candidates cover every query's top k and the run file is the same bytes as one
process's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mmbench.distributed.group import DistributedError, RankInfo, all_gather, broadcast, collective
from mmbench.search.base import (Pool, Progress, SearchBackend, SearchIndex, check_tiebreak, even_ranges, pool_parts,
                                 slice_parts)

__all__ = ["LeadShards", "RankSearch", "agree", "rank_device", "serve", "share_pool"]


@dataclass(frozen=True)
class RankSearch:
    """What the ranks agreed (:func:`agree`): the backend (``--search-backend``) every rank prepares its
    share with, on its own device (:func:`rank_device`); ``sent``: the ranks that do not see rank 0's
    cache, which rank 0 sends their shares' rows to."""

    backend: str
    sent: tuple[int, ...] = ()


def rank_device(info: RankInfo) -> str:
    """The device a rank searches its share on: its own GPU in an NCCL group, else the CPU."""
    return f"cuda:{info.local_rank}" if info.backend == "nccl" else "cpu"


def share_pool(pool: Pool, lo: int, hi: int, device: str) -> Pool:
    """Rows ``[lo, hi)`` of ``pool`` as a pool of their own on ``device``, with the pool's tie-break keys
    of those rows (their global row numbers where it has none), so that its first m by the rule are
    the rows the whole pool's rule puts first among them."""
    keys = pool.tiebreak[lo:hi] if pool.tiebreak is not None else np.arange(lo, hi, dtype=np.int64)
    return Pool(tuple(slice_parts(pool.parts, lo, hi)), hi - lo, pool.dim, keys, device, pool.memory_budget_bytes)


def agree(info: RankInfo, backend: str, *, sees_cache: bool,
          single_process_shards: bool) -> tuple[RankSearch | None, str]:
    """Every rank (a collective): whether the search is sharded over the ranks, and if not, why.

    ``sees_cache``: this rank finds every chunk of the run's tables in its cache (a rank that does not
    gets its shares' rows from rank 0: :attr:`RankSearch.sent`);
    ``single_process_shards``: the run shards over ``--devices`` in rank 0. (A ``sharded`` backend
    without ``--devices`` shards over the ranks like any other: each rank keeps its share resident on
    its one device.)"""
    from mmbench.search import resolve

    reason = ""
    try:
        resolve(backend, rank_device(info))
    except Exception as exc:              # the backend's own one-line reason on this rank
        reason = f"rank {info.rank}: {exc}"
    answers = all_gather(info, (reason, bool(sees_cache)), "whether every rank can search a share of the pool")
    if info.world_size == 1:
        return None, "one rank"
    if single_process_shards:
        return None, "the run shards the pool over --devices in rank 0"
    why = next((r for r, _ in answers if r), "")
    sent = tuple(r for r, (_, sees) in enumerate(answers) if not sees)
    return (None, why) if why else (RankSearch(backend, sent), "")


@dataclass
class _Prepared:
    label: str
    total: int
    dim: int
    lo: int
    hi: int
    index: SearchIndex | None          # None for an empty share

    def search(self, queries: np.ndarray, m: int, progress: Progress | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        if self.index is None:
            return np.empty((queries.shape[0], 0), np.int64), np.empty((queries.shape[0], 0), np.float32)
        ids, scores = self.index.search(queries, min(m, self.hi - self.lo), progress)
        return np.ascontiguousarray(ids + self.lo, np.int64), np.ascontiguousarray(scores, np.float32)


def _prepare(chosen: SearchBackend, pool: Pool, label: str, lo: int, hi: int, device: str) -> _Prepared:
    index = chosen.prepare(share_pool(pool, lo, hi, device)) if hi > lo else None
    return _Prepared(label, pool.total, pool.dim, lo, hi, index)


class LeadShards:
    """Rank 0's side of the protocol (module docstring): one per run, closed with :meth:`close`."""

    def __init__(self, info: RankInfo, agreed: RankSearch):
        self.info, self.agreed = info, agreed
        self._prepared: _Prepared | None = None
        self._closed = False

    @property
    def device(self) -> str:
        """The device rank 0 searches its share on (:func:`rank_device`)."""
        return rank_device(self.info)

    def describe(self) -> dict:
        """The record's ``search.ranks``."""
        return {"world_size": self.info.world_size, "group_backend": self.info.backend,
                "shares": "contiguous near-equal row ranges of the pool, one per rank, each searched on "
                          "the rank's own device (cuda:LOCAL_RANK, or the CPU) and merged by the rule"}

    def preparer(self, task: str, label: str) -> Callable[[SearchBackend, Pool], SearchIndex]:
        """``prepare(backend, pool)`` for :func:`mmbench.search.search`: the index of ``task``'s pool
        (labelled ``label``) sharded over the ranks."""
        def prepare(chosen: SearchBackend, pool: Pool) -> SearchIndex:
            return self._index(task, label, chosen, pool)
        return prepare

    def _index(self, task: str, label: str, chosen: SearchBackend, pool: Pool) -> _RankIndex:
        cut = even_ranges(pool.total, self.info.world_size)
        mine = self._prepared
        if mine is None or (mine.label, mine.total, mine.dim) != (label, pool.total, pool.dim):
            broadcast(self.info, ("pool", task, label, pool.total, pool.dim, pool.memory_budget_bytes),
                      "rank 0's next search request")
            for r in self.agreed.sent:
                _send_share(self.info, share_pool(pool, *cut[r], "cpu"), r)
            self._prepared = mine = _prepare(chosen, pool, label, *cut[0], rank_device(self.info))
        return _RankIndex(self.info, mine, cut, pool.tiebreak)

    def close(self) -> None:
        """Tell the serving ranks the search is over (once; a group already broken is left as it is)."""
        if self._closed:
            return
        self._closed = True
        try:
            broadcast(self.info, ("done",), "rank 0's next search request")
        except DistributedError:
            pass


@dataclass
class _RankIndex:
    """The pool sharded over the ranks, for rank 0's :func:`mmbench.search.rescore.gather_and_rescore`."""

    info: RankInfo
    own: _Prepared
    cut: list[tuple[int, int]]
    tiebreak: np.ndarray | None

    def __post_init__(self) -> None:
        inner = getattr(self.own.index, "max_gather", None)     # the widest gather the shares answer
        if inner is not None:
            self.max_gather = inner

    def search(self, queries: np.ndarray, k: int, progress: Progress | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from mmbench.search import ties

        info, total = self.info, self.own.total
        queries = np.ascontiguousarray(queries, np.float32)
        n_q, d = queries.shape
        broadcast(info, ("search", n_q, d, k), "rank 0's next search request")
        _broadcast_tensor(info, torch.from_numpy(queries), "sending the queries to every rank")
        share = self.own.hi - self.own.lo
        local = None if progress is None or share == 0 else (
            lambda done, _rows: progress(min(total, done * total // share), total))
        found = [self.own.search(queries, k, local)]
        for r, (lo, hi) in enumerate(self.cut[1:], start=1):
            width = min(k, hi - lo)
            ids, scores = torch.empty((n_q, width), dtype=torch.int64), torch.empty((n_q, width), dtype=torch.float32)
            if width:
                _receive(info, ids, r, f"receiving rank {r}'s hits")
                _receive(info, scores, r, f"receiving rank {r}'s scores")
            found.append((ids.numpy(), scores.numpy()))
        if progress is not None:
            progress(total, total)
        return ties.select(np.hstack([f[1] for f in found]), np.hstack([f[0] for f in found]), self.tiebreak,
                           min(k, total))


def serve(info: RankInfo, open_pool: Callable[[str], tuple[Sequence[np.ndarray], np.ndarray | None]],
          agreed: RankSearch) -> int:
    """A rank other than 0: answer rank 0's requests (module docstring) until it is done; returns the
    number of searches answered. ``open_pool(task)``: the task's pool as rank 0 searches it, (blocks,
    tie-break keys or None), its blocks read from the cache."""
    import torch

    from mmbench.search import resolve

    chosen, device = resolve(agreed.backend, rank_device(info))
    prepared: _Prepared | None = None
    answered = 0
    while True:
        request = broadcast(info, None, "rank 0's next search request")
        if request[0] == "done":
            return answered
        if request[0] == "pool":
            task, label, total, dim, budget = request[1:]
            lo, hi = even_ranges(total, info.world_size)[info.rank]
            if info.rank in agreed.sent:      # the share alone: its rows 0..hi-lo, the pool's keys of them
                pool = _as_pool(*_receive_share(info), dim, device, budget)
                expected = (hi - lo, dim)
                prepared = _Prepared(label, total, dim, lo, hi, chosen.prepare(pool) if hi > lo else None)
            else:
                pool = _as_pool(*open_pool(task), dim, device, budget)
                expected = (total, dim)
                prepared = _prepare(chosen, pool, label, lo, hi, device)
            if (pool.total, pool.dim) != expected:
                raise DistributedError(f"rank {info.rank}: the pool of {task} has {pool.total:,} x {pool.dim} rows "
                                       f"here, {expected[0]:,} x {expected[1]} expected (different data or cache?)")
            continue
        n_q, d, k = request[1:]
        queries = torch.empty((n_q, d), dtype=torch.float32)
        _broadcast_tensor(info, queries, "receiving the queries from rank 0")
        if prepared is None:
            raise DistributedError(f"rank {info.rank}: a search request came before its pool")
        ids, scores = prepared.search(queries.numpy(), k)
        if ids.shape[1]:
            _send(info, torch.from_numpy(ids), f"sending rank {info.rank}'s hits")
            _send(info, torch.from_numpy(scores), f"sending rank {info.rank}'s scores")
        answered += 1


def _as_pool(parts: Sequence[np.ndarray], keys: np.ndarray | None, dim: int, device: str, budget: int) -> Pool:
    parts = pool_parts(parts, dim)
    rows = sum(p.shape[0] for p in parts)
    return Pool(tuple(parts), rows, dim, check_tiebreak(keys, rows), device, budget)


def _send_share(info: RankInfo, share: Pool, dst: int) -> None:
    """Rank 0: a share's rows (as stored, part by part) and tie-break keys to rank ``dst``."""
    import torch

    from mmbench.distributed.group import send

    send(info, [(p.shape[0], p.dtype.str) for p in share.parts], dst, f"sending rank {dst} its share's layout")
    send(info, share.dim, dst, f"sending rank {dst} the pool's width")
    for part in share.parts:
        _send(info, torch.from_numpy(np.ascontiguousarray(part)), f"sending rank {dst} its share's rows", dst)
    _send(info, torch.from_numpy(np.ascontiguousarray(share.tiebreak)), f"sending rank {dst} its share's keys", dst)


def _receive_share(info: RankInfo) -> tuple[list[np.ndarray], np.ndarray]:
    """A rank that does not see rank 0's cache: its share's rows and keys, from rank 0."""
    import torch

    from mmbench.distributed.group import receive

    layout = receive(info, 0, "receiving this rank's share's layout")
    dim = receive(info, 0, "receiving the pool's width")
    parts = []
    for rows, dtype in layout:
        part = torch.from_numpy(np.empty((rows, dim), np.dtype(dtype)))
        _receive(info, part, 0, "receiving this rank's share's rows")
        parts.append(part.numpy())
    keys = torch.empty(sum(rows for rows, _ in layout), dtype=torch.int64)
    _receive(info, keys, 0, "receiving this rank's share's keys")
    return parts, keys.numpy()


def _broadcast_tensor(info: RankInfo, tensor, step: str) -> None:
    import torch.distributed as dist

    collective(info, step, lambda: dist.broadcast(tensor, src=0, group=info.control))


def _send(info: RankInfo, tensor, step: str, dst: int = 0) -> None:
    import torch.distributed as dist

    collective(info, step, lambda: dist.send(tensor, dst=dst, group=info.control))


def _receive(info: RankInfo, tensor, src: int, step: str) -> None:
    import torch.distributed as dist

    collective(info, step, lambda: dist.recv(tensor, src=src, group=info.control))
