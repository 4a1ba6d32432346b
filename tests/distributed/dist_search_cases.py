"""``torchrun --nproc-per-node N tests/distributed/dist_search_cases.py OUT CASES``: the search sharded
over the ranks (:mod:`mmbench.distributed.search`) against one process's :func:`mmbench.search.search`
on seeded tie-heavy cases, for the CPU backends. Every rank builds the same cases from their seeds;
rank 0 searches each twice (alone, and over the ranks) and writes one line per case and backend to OUT:
``backend seed same|DIFFERENT``; the other ranks serve, and write how many searches they answered.
``auto+sent``: the last rank does not open the pools; rank 0 sends it its shares' rows.
"""

from __future__ import annotations

import sys

import numpy as np

from mmbench.distributed.group import process_group
from mmbench.distributed.search import LeadShards, RankSearch, serve
from mmbench.search import MAX_K, search

BACKENDS = ("auto", "faiss-cpu", "torch", "sharded", "auto+sent")   # +sent: the last rank is sent its shares


def case(seed: int) -> dict:
    """Quantised rows (exact products), duplicated rows at random places, near-ties, NaN rows, k up
    to past the pool size, float16 parts, keys or none; pools as small as one row (empty shares)."""
    rng = np.random.default_rng(seed)
    n = int(rng.choice([1, 2, 3, int(rng.integers(4, 40)), int(rng.integers(40, 700))]))
    q, d, levels = int(rng.integers(1, 25)), int(rng.integers(1, 17)), int(rng.integers(1, 4))
    queries = rng.integers(-levels, levels + 1, (q, d)).astype(np.float32) / 4
    pool = rng.integers(-levels, levels + 1, (n, d)).astype(np.float32) / 4
    copy = rng.random(n) < rng.random()
    pool[copy] = pool[rng.integers(0, n, n)[copy]]
    if rng.random() < 0.5:
        moved = np.flatnonzero(copy & (rng.random(n) < 0.5))
        pool[moved, rng.integers(0, d, moved.size)] += np.float32(1 / 256)
    if rng.random() < 0.3:
        pool[rng.random(n) < 0.2, 0] = np.nan
    k = int(min(MAX_K, n if rng.random() < 0.3 else rng.integers(1, n + 6)))
    cuts = sorted(rng.choice(np.arange(1, n), size=min(n - 1, int(rng.integers(0, 4))), replace=False).tolist()) \
        if n > 1 else []
    parts = [p.astype(np.float16) if rng.random() < 0.4 else p for p in np.split(pool, cuts)]
    keys = rng.permutation(n).astype(np.int64) if rng.random() < 0.5 else None
    return {"queries": queries, "parts": parts, "k": k, "keys": keys,
            "budget": int(rng.integers(1, n + 2)) * 4 * d}


def main(out: str, count: int) -> None:
    cases = {f"case{s}": case(s) for s in range(count)}
    with process_group("cpu") as info:
        lines = []
        for variant in BACKENDS:
            backend, _, sent = variant.partition("+")
            agreed = RankSearch(backend, (info.world_size - 1,) if sent else ())

            def open_pool(task: str):
                if info.rank in agreed.sent:
                    raise AssertionError(f"rank {info.rank} opened a pool it should have been sent")
                return cases[task]["parts"], cases[task]["keys"]

            if not info.lead:
                answered = serve(info, open_pool, agreed)
                lines.append(f"{variant} answered {answered}")
                continue
            lead = LeadShards(info, agreed)
            try:
                for task, c in cases.items():
                    args = (c["queries"], c["parts"], c["k"])
                    kw = {"tiebreak": c["keys"], "backend": backend, "device": "cpu", "memory_budget_bytes": c["budget"]}
                    alone = search(*args, **kw)
                    shared = search(*args, **kw, prepare=lead.preparer(task, f"{variant}:{task}"))
                    same = all(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
                               for a, b in zip(alone, shared))
                    lines.append(f"{variant} {task} {'same' if same else 'DIFFERENT'}")
            finally:
                lead.close()
        with open(f"{out}.rank{info.rank}", "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
