"""The search shared over a torchrun group's ranks against one process's search (issue #26).

``python bench/bench_rank_search.py [--ranks 2] [--rows 200000] [--dim 384] [--queries 2000] [--k 100]``
launches itself under ``torchrun --standalone --nproc-per-node RANKS`` (gloo, the CPU). Every rank
builds the same seeded pool of unit rows (float32 or ``--float16``); rank 0 then times, alternating
``--repeat`` times, :func:`mmbench.search.search` alone (the whole pool in rank 0) and the same call
shared over the ranks (:mod:`mmbench.distributed.search`: each rank searches its share, rank 0 merges
and re-scores), checks that both give the same bytes, and prints wall and CPU seconds, their ratio,
and the bytes that crossed the group per search (queries out, hits back).

On one host the ranks share its cores: the figure is the protocol's cost (the queries' broadcast,
the hits' transfer, the merge) against the work it divides, not the speed-up of ranks on their own
GPUs or nodes. Figures go to docs/perf.md with the host and command.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent / "harness"))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--float16", action="store_true", help="store the pool as float16")
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS per rank (0: cores / ranks)")
    return p.parse_args()


def launch(args: argparse.Namespace) -> int:
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.ranks)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "MMBENCH_BENCH_RANK_SEARCH": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.ranks),
           "--monitor-interval", "0.1", str(HERE), *sys.argv[1:]]
    print(f"$ OMP_NUM_THREADS={threads} torchrun --nproc-per-node {args.ranks} {HERE.name} {' '.join(sys.argv[1:])}",
          flush=True)
    return subprocess.call(cmd, env=env)


def pool_of(args: argparse.Namespace):
    import numpy as np

    rng = np.random.default_rng(0)
    pool = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return queries, (pool.astype(np.float16) if args.float16 else pool)


def measure(args: argparse.Namespace) -> None:
    from mmbench.distributed.group import process_group
    from mmbench.distributed.search import LeadShards, RankSearch, serve
    from mmbench.search import search

    queries, pool = pool_of(args)
    agreed = RankSearch("auto")
    with process_group("cpu") as info:
        if not info.lead:
            serve(info, lambda task: ([pool], None), agreed)
            return
        lead = LeadShards(info, agreed)
        times = {"one process": [], f"{info.world_size} ranks": []}
        try:
            results = {}
            for _ in range(args.repeat):
                for name, prepare in (("one process", None), (f"{info.world_size} ranks", lead.preparer("bench", "bench"))):
                    w, c = time.perf_counter(), time.process_time()
                    results[name] = search(queries, pool, args.k, prepare=prepare)
                    times[name].append((time.perf_counter() - w, time.process_time() - c))
        finally:
            lead.close()
        same = all(a.tobytes() == b.tobytes() for a, b in zip(*results.values()))
        m = args.k + max(16, args.k // 8)
        moved = args.queries * args.dim * 4 * (info.world_size - 1) + args.queries * m * 12 * (info.world_size - 1)
        print(f"pool {args.rows:,} x {args.dim} {'float16' if args.float16 else 'float32'}, {args.queries:,} queries, "
              f"k={args.k}, {info.world_size} ranks x {os.environ.get('OMP_NUM_THREADS')} threads, "
              f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
        print(f"{'':14} {'wall s (median)':>16} {'rank 0 CPU s':>13}")
        medians = {}
        for name, runs in times.items():
            wall = sorted(w for w, _ in runs)[len(runs) // 2]
            cpu = sorted(c for _, c in runs)[len(runs) // 2]
            medians[name] = wall
            print(f"{name:14} {wall:16.3f} {cpu:13.3f}")
        one, ranks = medians.values()
        print(f"ranks / one process (wall): {ranks / one:.2f}; bytes over the group per search: {moved / 1e6:.1f} MB "
              f"(at least: retries ask for more); same bytes: {same}")


if __name__ == "__main__":
    arguments = parse_args()
    if os.environ.get("MMBENCH_BENCH_RANK_SEARCH") == "1":
        measure(arguments)
    else:
        raise SystemExit(launch(arguments))
