"""A run's tables encoded by every rank of a group, each rank a disjoint share of the missing chunks.

:func:`encode_shared` is called by every rank with the same jobs (the tables the run will embed, in
the run's order). The protocol, step by step:

1. **Rank 0 reads the cache's state on behalf of the group.** It takes the lock of every entry
   (:meth:`~mmbench.embeddings.store.EmbeddingStore.lock`, in the order of the lock files' paths),
   opens each entry and lists its missing chunks (:func:`~mmbench.embeddings.embed.missing_chunks`:
   absent or incomplete files, ``--overwrite``, ``--verify-data``) and their costs
   (:mod:`mmbench.distributed.assign`), and broadcasts that list. The other ranks never touch a
   lock: they wait for the list (a broadcast), so no rank can block on a lock another rank holds
   while that rank waits for it at a collective. Another process using an entry (a second run)
   makes rank 0 wait for its lock, as a single-process run waits, while the others wait at the
   broadcast.
2. **Every rank computes the same assignment** (:func:`~mmbench.distributed.assign.assign`) from the
   broadcast list and encodes its share, chunk by chunk, writing each chunk file atomically into the
   shared cache (the entry's files are the same whichever rank writes them: a chunk is encoded
   alone, :func:`~mmbench.embeddings.embed.encode_chunks`). A rank that has nothing to encode never
   loads the model.
3. **An all-gather ends the phase**: a rank enters it once its own chunk files are written (its
   writer closed), so when it returns every missing chunk is on disk. It carries each rank's counts
   and seconds, from which rank 0 reports how many chunks were encoded and reused; rank 0 then
   writes the entries' image digests (``--verify-data``) and releases the locks.

Failure: a rank that raises or dies never enters the all-gather; the others leave it with
:class:`~mmbench.distributed.group.DistributedError` when its connection closes or the timeout
expires (and ``torchrun`` ends them as soon as one rank has failed). Every chunk file written before
the failure is complete (atomic writes), so the next run, with any number of ranks, encodes only the
chunks still missing. Rank 0 holds the locks until it leaves, however it leaves (``flock`` dies with
its process).

The cache is best one file system seen by every rank. A cache that is not shared (each node its own
disk) works too: after the all-gather, rank 0 lists the chunks it does not find complete, and their
encoders send them to it over the group, one chunk at a time (their bytes travel once more, over the
network); rank 0 writes them into its cache, and says how many it received. The other ranks' entries
are then partial copies that rank 0 never reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from mmbench.distributed.assign import assign, chunk_cost
from mmbench.distributed.group import DistributedError, RankInfo, all_gather, broadcast
from mmbench.embeddings.embed import (EmbedJob, EncodeStats, cache_entry, encode_chunks, missing_chunks,
                                     write_images_digest, write_settings)
from mmbench.embeddings.writer import BackgroundWriter

__all__ = ["SharedEncode", "encode_shared"]


@dataclass
class SharedEncode:
    """What the group encoded: per job, the group's :class:`EncodeStats` (items encoded by all ranks,
    items reused, the longest time one rank spent on the table, items and seconds per modality summed
    over the ranks), and the chunk counts."""

    stats: dict[tuple, EncodeStats] = field(default_factory=dict)
    chunks_encoded: int = 0
    chunks_reused: int = 0
    per_rank: list[int] = field(default_factory=list)      # chunks encoded by each rank
    chunks_sent: int = 0         # chunks rank 0 did not see in its cache, sent to it over the group
    sees_cache: bool = True      # this rank finds every chunk of the jobs complete in its own cache

    def take(self, job: EmbedJob) -> EncodeStats | None:
        """The group's stats of ``job``'s table, once (a table embedded again in the run was cached)."""
        return self.stats.pop(_job_id(job), None)


def _job_id(job: EmbedJob) -> tuple:
    return job.key.digest(), job.normalize, job.normalized_dtype


def encode_shared(jobs: list[EmbedJob], info: RankInfo, get_encoder, *, cache_dir, chunk_size: int,
                  batch_size: int, overwrite: bool = False, reporter=None) -> SharedEncode:
    """Encode every missing chunk of ``jobs`` over the group (module docstring); call on every rank with
    the same ``jobs``. ``reporter`` (rank 0's) receives the messages and a progress bar of this rank's
    share. Returns the group's counts on every rank (the stats are complete on rank 0)."""
    entries, seen = [], set()
    for job in jobs:                                     # one entry once, whichever tasks share it
        store, unit = cache_entry(job.table, job.key, cache_dir=cache_dir, chunk_size=chunk_size,
                                  normalize=job.normalize, normalized_dtype=job.normalized_dtype)
        if str(store.dir) not in seen:
            seen.add(str(store.dir))
            entries.append((job, store, unit))
    message = reporter.message if (reporter is not None and info.lead) else None
    locks = []
    try:
        plan = _lead_plan(entries, info, overwrite, message, locks, cache_dir) if info.lead else None
        plan = broadcast(info, plan, "the list of missing chunks")
        if "failed" in plan:
            raise DistributedError(f"rank {info.rank}: rank 0 failed before encoding ({plan['failed']})")
        dirs = [_entry_name(store, cache_dir) for _, store, _ in entries]
        if plan["dirs"] != dirs:
            raise DistributedError(f"rank {info.rank} sees other cache entries than rank 0 (different data, "
                                   "options or mmbench versions on the ranks?): "
                                   f"{_first_difference(plan['dirs'], dirs)}")
        units = [(e, i) for e, missing in enumerate(plan["missing"]) for i in missing]
        shares = assign([c for costs in plan["costs"] for c in costs], info.world_size)
        mine = [units[u] for u in shares[info.rank]]
        if message is not None:
            _say_plan(message, info, entries, plan, shares)
        mine_stats = _encode_share(entries, mine, get_encoder, batch_size, info, reporter)
        gathered = all_gather(info, mine_stats, "the end of encoding (every rank's chunk files written)")
        result = _totals(entries, plan, gathered, shares)
        if info.world_size > 1:
            result.chunks_sent = _send_unseen_chunks(entries, units, shares, info)
            result.sees_cache = info.lead or all(store.chunk_problem(i) is None for _, store, _ in entries
                                                 for i in range(store.n_chunks))
        if info.lead:
            _finish(entries, plan, message, result)
        return result
    finally:
        for lock in reversed(locks):
            lock.release()


def _entry_name(store, cache_dir) -> str:
    """An entry's folder inside the cache (the same on every rank, wherever each rank's cache is)."""
    return store.dir.relative_to(Path(cache_dir)).as_posix()


def _lead_plan(entries, info: RankInfo, overwrite: bool, message, locks: list, cache_dir) -> dict:
    """Rank 0: lock every entry, list its missing chunks and their costs. A failure is broadcast
    (``{"failed": ...}``) so the other ranks stop at once, then raised here."""
    try:
        for _, store, _ in sorted(entries, key=lambda e: str(e[1].lock().path)):
            locks.append(store.lock(message).acquire())
        missing, costs = [], []
        for job, store, _ in entries:
            chunks = missing_chunks(store, overwrite=overwrite, images_sha256=job.images_sha256, message=message)
            missing.append(chunks)
            t = job.table
            costs.append([chunk_cost(t.texts, t.image_paths, i * store.chunk_size, (i + 1) * store.chunk_size)
                          for i in chunks])
        return {"dirs": [_entry_name(store, cache_dir) for _, store, _ in entries], "missing": missing,
                "costs": costs, "chunks": [store.n_chunks for _, store, _ in entries]}
    except BaseException as exc:
        try:
            broadcast(info, {"failed": str(exc) or type(exc).__name__}, "the list of missing chunks")
        except DistributedError:
            pass
        raise


def _encode_share(entries, mine: list[tuple[int, int]], get_encoder, batch_size: int, info: RankInfo,
                  reporter) -> dict:
    """This rank's chunks encoded and written (the writer closed: every file is on disk); per entry
    index: items encoded, seconds, seconds per modality, chunks."""
    out: dict[int, dict] = {}
    if not mine:
        return out
    by_entry: dict[int, list[int]] = {}
    for e, i in mine:
        by_entry.setdefault(e, []).append(i)
    total = sum(entries[e][1].chunk_len(i) for e, i in mine)
    bar = reporter.progress(f"encode: rank {info.rank} of {info.world_size}, {len(mine)} chunks", total) \
        if (reporter is not None and info.lead) else None
    done = 0
    if not info.lead:            # the entry as rank 0 opened it (a no-op in a shared cache; else this rank's copy)
        for e in by_entry:
            entries[e][1].open(overwrite=False)
    encoder = get_encoder()
    with BackgroundWriter() as writer:
        for e, chunks in by_entry.items():
            job, store, unit = entries[e]
            stats = EncodeStats()
            start = time.perf_counter()
            encode_chunks(job.table, store, chunks, encoder, batch_size=batch_size, unit=unit, writer=writer,
                          stats=stats, progress=(lambda n, d=done: bar(d + n, total)) if bar else None)
            stats.seconds = time.perf_counter() - start
            done += stats.encoded
            write_settings(store, encoder)
            out[e] = {"encoded": stats.encoded, "seconds": stats.seconds, "by_modality": stats.by_modality,
                      "chunks": len(chunks)}
    return out


def _send_unseen_chunks(entries, units: list[tuple[int, int]], shares: list[list[int]], info: RankInfo) -> int:
    """Every chunk another rank encoded that rank 0 does not find complete in its own cache (a cache
    that is not shared: each node its own disk), sent to rank 0 over the group (point to point, one
    chunk at a time, in the same order on every rank) and written there; returns how many."""
    from mmbench.distributed.group import receive, send

    owner = {units[u]: r for r, share in enumerate(shares) for u in share}
    absent = None
    if info.lead:
        absent = [units[u] for r, share in enumerate(shares) if r for u in share
                  if entries[units[u][0]][1].chunk_problem(units[u][1]) is not None]
    absent = broadcast(info, absent, "the list of chunks rank 0 does not see")
    for e, i in absent:
        store, r = entries[e][1], owner[(e, i)]
        if info.rank == r:
            send(info, store.load_chunk(i), 0, f"sending chunk {i} of {store.dir.name} to rank 0")
        elif info.lead:
            store.write_chunk(i, receive(info, r, f"receiving chunk {i} of {store.dir.name} from rank {r}"))
    return len(absent)


def _totals(entries, plan: dict, gathered: list[dict], shares: list[list[int]]) -> SharedEncode:
    result = SharedEncode(per_rank=[len(s) for s in shares])
    for e, (job, store, _) in enumerate(entries):
        missing = plan["missing"][e]
        stats = EncodeStats(cached=len(job.table) - sum(store.chunk_len(i) for i in missing))
        for rank_stats in gathered:
            part = rank_stats.get(e)
            if part is None:
                continue
            stats.encoded += part["encoded"]
            stats.seconds = max(stats.seconds, part["seconds"])
            for modality, (n, s) in part["by_modality"].items():
                n0, s0 = stats.by_modality.get(modality, (0, 0.0))
                stats.by_modality[modality] = (n0 + n, s0 + s)
        result.stats[_job_id(job)] = stats
        result.chunks_encoded += len(missing)
        result.chunks_reused += plan["chunks"][e] - len(missing)
    return result


def _finish(entries, plan: dict, message, result: SharedEncode) -> None:
    """Rank 0, every rank's files written: check that they are all there (a shared file system), store
    the image digests (``--verify-data``), report the counts."""
    for e, (job, store, _) in enumerate(entries):
        absent = [i for i in plan["missing"][e] if store.chunk_problem(i) is not None]
        if absent:
            raise DistributedError(f"rank 0: {len(absent)} chunk file(s) missing after the group encoded them, "
                                   f"e.g. {store.chunk_path(absent[0])} (removed by another process?)")
        if plan["missing"][e] and job.images_sha256 is not None:
            write_images_digest(store, job.images_sha256)
    if message is not None:
        per_rank = ", ".join(f"rank {r}: {n}" for r, n in enumerate(result.per_rank))
        message(f"embedding cache: {result.chunks_encoded} chunk(s) encoded by {len(result.per_rank)} rank(s) "
                f"({per_rank}), {result.chunks_reused} reused")
        if result.chunks_sent:
            message(f"embedding cache: {result.chunks_sent} chunk(s) sent to rank 0 over the process group "
                    f"(rank 0 does not share the other ranks' cache)")


def _say_plan(message, info: RankInfo, entries, plan: dict, shares: list[list[int]]) -> None:
    missing = sum(len(m) for m in plan["missing"])
    if missing:
        message(f"{info.world_size} rank(s) encode {missing} missing chunk(s) of {len(entries)} table(s) "
                f"(backend {info.backend})")


def _first_difference(a: list[str], b: list[str]) -> str:
    for x, y in zip(a, b):
        if x != y:
            return f"rank 0: {x}, this rank: {y}"
    return f"rank 0 has {len(a)} entries, this rank {len(b)}"
