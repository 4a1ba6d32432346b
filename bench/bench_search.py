"""Benchmark mmbench.search against the fp32 GEMM ceiling of the same shape, in the same run.

For each (queries Q, candidates N, k) cell on random L2-normalised 768-d data (float32 queries;
the pool float32, or float16 with ``--pool-dtype float16``, as M-BEIR's global pool is stored):

* GEMM: ``torch.mm`` (all threads) of the Q x d queries by d x N candidates, timed on blocks of
  ``--gemm-block`` candidates into a preallocated, pre-touched output; when N needs more than
  ``--gemm-max-blocks`` blocks, the time of that many blocks is scaled to N (marked "scaled").
* search: ``mmbench.search.search`` on the whole pool (its default 2 GiB block budget) with
  ``--backend`` (default ``auto``: the threshold-scan kernel where it is built); ``faiss path``: the
  same call with ``backend="faiss-cpu"`` (faiss ``knn`` + merge + tie fix, what a build without a C
  compiler runs), for the ratio.
* The machine is shared and noisy: GEMM and search are alternated ``--repeats`` times per cell
  (no new repeat after ``--max-cell-seconds``) and the minimum of each is kept.
* Rates are 2*Q*N*d / t; ratio = search rate / GEMM rate (target >= 0.80).
* Check: the first ``--verify-queries`` queries are searched with faiss ``IndexFlatIP`` and the
  top-k index lists compared row by row (agreement = fraction of identical rows).

Usage: python bench/bench_search.py [--queries 1000 10000] [--candidates 100000 1000000] [--k 10 100 1000]
                                   [--pool-dtype float32|float16]

Old tree against this one (``--ab OLD``, issue #23's speed target): the CPU time (process_time: every
thread's user + system) and wall time of ``search(queries, pool, k, tiebreak=...)`` on 1000 unit-norm
random queries and pools (numpy seed 0; float16 pools: the float32 rows cast), each (pool, k, dtype) cell
in a fresh process per tree, the two trees alternating, ``--rounds`` rounds; each process does one
warm-up search and keeps the best of ``--repeats``; the table gives the median over the rounds. OLD is a
checkout whose ``harness/`` holds either ``mmbench/`` or the flat package of fac06b0 (``harness.search``),
with its C helpers built in place. Run it under ``flock /tmp/mmbench-bench.lock`` on a shared host.

    python bench/bench_search.py --ab /tmp/old [--ab-pools 10000x768 100000x768 118000x384] [--k 100 1000]
                                 [--ab-dtypes float32 float16] [--rounds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "harness"))

from mmbench.search import describe_backend, search  # noqa: E402


def parse_args() -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--candidates", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--k", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--pool-dtype", choices=["float32", "float16"], default="float32",
                   help="how the pool is stored (the GEMM and the IndexFlatIP check use its float32 values)")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--gemm-block", type=int, default=100_000, help="candidates per timed GEMM block")
    p.add_argument("--gemm-max-blocks", type=int, default=3, help="GEMM blocks timed before scaling")
    p.add_argument("--verify-queries", type=int, default=1000, help="queries checked against IndexFlatIP")
    p.add_argument("--repeats", type=int, default=3, help="GEMM/search alternations per cell (min kept)")
    p.add_argument("--max-cell-seconds", type=float, default=120.0, help="no new repeat after this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="auto", help="search backend (mmbench.search.backend_names())")
    p.add_argument("--ab", metavar="OLD_TREE", help="CPU time against an old checkout instead (module docstring)")
    p.add_argument("--ab-pools", nargs="+", default=["10000x768", "100000x768", "118000x384"], help="NxD pools")
    p.add_argument("--ab-dtypes", nargs="+", default=["float32", "float16"], choices=["float32", "float16"])
    p.add_argument("--rounds", type=int, default=3, help="--ab: rounds of alternating processes (median kept)")
    p.add_argument("--ab-child", nargs=5, metavar=("TREE", "N", "D", "K", "DTYPE"), help=argparse.SUPPRESS)
    return p.parse_args()


def ab_child(tree: str, n: int, d: int, k: int, dtype: str, repeats: int) -> dict:
    """One cell in this fresh process with ``tree``'s search: best wall and CPU seconds of the repeats."""
    root = Path(tree).resolve()
    if (root / "harness" / "mmbench").is_dir():
        sys.path.insert(0, str(root / "harness"))
        from mmbench.search import search as tree_search
    else:                                                   # fac06b0's flat layout
        sys.path.insert(0, str(root))
        from harness.search import search as tree_search
    rng = np.random.default_rng(0)
    pool = normalised(rng, n, d)
    stored = pool.astype(np.float16) if dtype == "float16" else pool
    queries = normalised(rng, 1000, d)
    tiebreak = rng.permutation(n).astype(np.int64)
    tree_search(queries, stored, k, tiebreak=tiebreak)      # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        tree_search(queries, stored, k, tiebreak=tiebreak)
        cpus.append(time.process_time() - c)
        walls.append(time.perf_counter() - w)
    return {"wall": min(walls), "cpu": min(cpus), "load": os.getloadavg()[0]}


def run_ab(args: argparse.Namespace) -> None:
    """The old tree against this one, alternating fresh processes (module docstring)."""
    here = str(Path(__file__).resolve().parent.parent)
    cells = [(int(p.split("x")[0]), int(p.split("x")[1]), k, dt)
             for p in args.ab_pools for k in sorted(args.k) for dt in args.ab_dtypes]
    got: dict[tuple, dict[str, list[dict]]] = {c: {"old": [], "new": []} for c in cells}
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for cell in cells:
            for side, tree in (("old", args.ab), ("new", here)) if r % 2 == 0 else (("new", here), ("old", args.ab)):
                out = subprocess.run([sys.executable, __file__, "--repeats", str(args.repeats), "--ab-child", tree,
                                      *map(str, cell)], check=True, capture_output=True, text=True).stdout
                got[cell][side].append(json.loads(out.strip().splitlines()[-1]))
                loads.append(got[cell][side][-1]["load"])
    print(f"old {args.ab} against {here}; 1000 queries; {args.rounds} rounds x best of {args.repeats};"
          f" load average {min(loads):.1f}-{max(loads):.1f}")
    print("| pool | k | pool dtype | old wall s | new wall s | ratio | old CPU s | new CPU s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (n, d, k, dt), sides in got.items():
        med = {s: {f: statistics.median(x[f] for x in v) for f in ("wall", "cpu")} for s, v in sides.items()}
        print(f"| {n // 1000}k x {d} | {k} | {dt} | {med['old']['wall']:.3f} | {med['new']['wall']:.3f} |"
              f" {med['new']['wall'] / med['old']['wall']:.2f} | {med['old']['cpu']:.3f} | {med['new']['cpu']:.3f} |"
              f" {med['new']['cpu'] / med['old']['cpu']:.2f} |", flush=True)


def normalised(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    """Random L2-normalised float32 rows."""
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def time_gemm(queries: np.ndarray, pool: np.ndarray, block: int, max_blocks: int) -> tuple[float, bool]:
    """Seconds for the fp32 GEMM queries @ pool.T (scaled from max_blocks blocks if larger); scaled?"""
    import torch

    q = torch.from_numpy(queries)
    out = torch.empty((q.shape[0], min(block, pool.shape[0])), dtype=torch.float32)
    starts = list(range(0, pool.shape[0], block))
    timed = starts[:max_blocks]
    first = torch.from_numpy(pool[:block])
    torch.mm(q, first.T, out=out[:, :first.shape[0]])  # warm-up, touches the output pages
    elapsed, rows = 0.0, 0
    for s in timed:
        b = torch.from_numpy(pool[s:s + block])
        t0 = time.perf_counter()
        torch.mm(q, b.T, out=out[:, :b.shape[0]])
        elapsed += time.perf_counter() - t0
        rows += b.shape[0]
    return elapsed * pool.shape[0] / rows, len(timed) < len(starts)


def flat_ip_topk(queries: np.ndarray, pool: np.ndarray, k: int) -> np.ndarray:
    """Top-k indices from a faiss IndexFlatIP (BLAS path forced, as for any batch size)."""
    import faiss

    index = faiss.IndexFlatIP(pool.shape[1])
    index.add(pool)
    saved = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 0
    try:
        return index.search(queries, k)[1]
    finally:
        faiss.cvar.distance_compute_blas_threshold = saved


def run_cell(queries: np.ndarray, pool: np.ndarray, stored: np.ndarray, ks: list[int],
             args: argparse.Namespace) -> bool:
    """Alternate GEMM and search timings on one (Q, N) shape; print one table row per k (min times).
    ``pool``: float32 rows (GEMM, check); ``stored``: the same rows as searched (float32 or float16).

    Returns whether the GEMM time was scaled from a few blocks.
    """
    flops = 2.0 * queries.shape[0] * pool.shape[0] * pool.shape[1]
    gemm: list[float] = []
    times: dict[int, list[float]] = {k: [] for k in ks}
    faiss_times: dict[int, list[float]] = {k: [] for k in ks}
    agree: dict[int, float] = {}
    nv = min(args.verify_queries, queries.shape[0])
    start = time.perf_counter()
    while not gemm or (len(gemm) < args.repeats
                       and time.perf_counter() - start < args.max_cell_seconds):
        gemm_s, scaled = time_gemm(queries, pool, args.gemm_block, args.gemm_max_blocks)
        gemm.append(gemm_s)
        for k in ks:
            t0 = time.perf_counter()
            idx, _ = search(queries, stored, k, backend=args.backend)
            times[k].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            search(queries, stored, k, backend="faiss-cpu")
            faiss_times[k].append(time.perf_counter() - t0)
            if k not in agree:
                agree[k] = float(np.mean(np.all(flat_ip_topk(queries[:nv], pool, k) == idx[:nv], axis=1)))
    for k in ks:
        g, t, f = min(gemm), min(times[k]), min(faiss_times[k])
        print(f"| {queries.shape[0]} | {pool.shape[0]} | {k} | {len(gemm)} | {g:.2f}{'*' if scaled else ''}"
              f" | {flops / g / 1e9:.0f} | {t:.2f} | {flops / t / 1e9:.0f} | {g / t:.2f} | {f:.2f} | {f / t:.2f}"
              f" | {agree[k]:.4f} ({nv}) |", flush=True)
    return scaled


def main() -> None:
    """Run the requested grid."""
    import torch

    args = parse_args()
    if args.ab_child:
        tree, n, d, k, dtype = args.ab_child
        print(json.dumps(ab_child(tree, int(n), int(d), int(k), dtype, args.repeats)))
        return
    if args.ab:
        run_ab(args)
        return
    rng = np.random.default_rng(args.seed)
    pool = normalised(rng, max(args.candidates), args.dim)
    stored = pool.astype(np.float16) if args.pool_dtype == "float16" else pool
    if stored is not pool:
        pool = stored.astype(np.float32)          # the values searched, for the GEMM and the check
    queries = normalised(rng, max(args.queries), args.dim)
    print(f"backend {describe_backend(args.backend)}, torch {torch.__version__} threads {torch.get_num_threads()},"
          f" d={args.dim}, pool {args.pool_dtype}")
    print(f"load average at start: {os.getloadavg()}")
    print("| Q | N | k | reps | GEMM s | GEMM GFLOP/s | search s | search GFLOP/s | search/GEMM | faiss path s |"
          " faiss path/search | agreement (rows) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    scaled = [run_cell(queries[:nq], pool[:n], stored[:n], sorted(args.k), args)
              for nq in sorted(args.queries) for n in sorted(args.candidates)]
    if any(scaled):
        print(f"* GEMM time scaled from {args.gemm_max_blocks} blocks of {args.gemm_block} candidates")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
