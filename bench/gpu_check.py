"""GPU check: the CUDA search backends against the CPU ones, and search speed at M-BEIR's global size.

Run on a machine with a CUDA GPU (``python bench/gpu_check.py [--out DIR]``; it needs torch with CUDA,
faiss-gpu where present). Two parts:

1. **Same bytes.** Tie-heavy pools (coarse vectors, duplicate rows at random positions, near-ties)
   are searched with every exact backend usable on the GPU and with the CPU ones; the run files
   written from their answers must be byte-identical (the guarantee of :mod:`mmbench.search.rescore`).
2. **Speed at size.** A synthetic 5.6M x 768 float16 pool (M-BEIR's global pool has 5,609,079
   candidates) and 10k queries at k = 1000: the seconds of :func:`mmbench.search.search` per GPU
   backend, beside the floor of the same shape's matrix product on the GPU (float16 tensor cores,
   and float32 without TF32, which is what the exact backends multiply in), and the ratio.

Prints one line per measurement; with ``--out`` it also writes them as JSON there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "harness"))

from mmbench.search import backends_registry, search  # noqa: E402
from mmbench.results.trec import write_trec  # noqa: E402


def tie_heavy_pool(rng: np.random.Generator, n: int, d: int, levels: int) -> np.ndarray:
    """Unit rows of coarse (quantised) vectors, a tenth of them copies of others at random positions."""
    x = np.round(rng.standard_normal((n, d)) * levels) / levels
    dup = rng.choice(n, n // 10, replace=False)
    x[dup] = x[rng.integers(0, n, dup.size)]
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x.astype(np.float32)


def run_file_digest(idx: np.ndarray, scores: np.ndarray, ids: list[str], folder: Path, name: str) -> str:
    path = folder / f"{name}.trec"
    write_trec(path, [f"q{i}" for i in range(idx.shape[0])], ids, idx, scores, "check", fsync=False)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def usable(device: str) -> list[str]:
    reg = backends_registry()
    return [n for n in reg.names() if reg.get(n).exact and reg.get(n).available(device) is True]


def same_bytes(report: list[dict]) -> bool:
    rng = np.random.default_rng(0)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for n, d, q, k, levels in ((50_000, 64, 300, 1000, 2), (200_000, 384, 1000, 1000, 3),
                                   (200_000, 384, 1000, 10, 3), (1000, 32, 200, 1000, 1)):
            pool = tie_heavy_pool(rng, n, d, levels)
            queries = tie_heavy_pool(rng, q, d, levels)
            ids = [f"c{i:07d}" for i in range(n)]
            tiebreak = np.arange(n, dtype=np.int64)
            digests = {}
            for device in ("cuda", "cpu"):
                for name in usable(device):
                    if name == "numpy" and n * q > 1e8:
                        continue
                    t = time.perf_counter()
                    idx, scores = search(queries, pool, k, tiebreak=tiebreak, backend=name, device=device)
                    secs = time.perf_counter() - t
                    digests[f"{name}@{device}"] = run_file_digest(idx, scores, ids, Path(tmp), f"{name}-{device}")
                    report.append({"check": "same-bytes", "pool": [n, d], "queries": q, "k": k,
                                   "backend": name, "device": device, "seconds": round(secs, 3),
                                   "sha256": digests[f"{name}@{device}"][:16]})
                    print(json.dumps(report[-1]), flush=True)
            distinct = set(digests.values())
            ok &= len(distinct) == 1
            print(f"pool {n}x{d} q={q} k={k}: {len(digests)} backend/device pairs, "
                  f"{'IDENTICAL run files' if len(distinct) == 1 else 'DIFFERENT run files: ' + str(digests)}",
                  flush=True)
    return ok


def speed(report: list[dict], n: int, d: int, q: int, k: int) -> None:
    import torch

    g = torch.Generator(device="cuda").manual_seed(1)
    pool_gpu = torch.randn((n, d), device="cuda", dtype=torch.float16, generator=g)
    pool_gpu /= pool_gpu.float().norm(dim=1, keepdim=True).half()
    queries_gpu = torch.randn((q, d), device="cuda", dtype=torch.float32, generator=g)
    queries_gpu /= queries_gpu.norm(dim=1, keepdim=True)
    for dtype, label in ((torch.float16, "float16 tensor cores"), (torch.float32, "float32, no TF32")):
        torch.backends.cuda.matmul.allow_tf32 = False
        qq = queries_gpu.to(dtype)
        chunk = 250_000                      # a (q, chunk) score matrix of at most 10 GB
        torch.cuda.synchronize()
        t = time.perf_counter()
        for s in range(0, n, chunk):
            block = pool_gpu[s:s + chunk].to(dtype)
            scores = qq @ block.T
            del scores
        torch.cuda.synchronize()
        floor = time.perf_counter() - t
        report.append({"check": "gemm-floor", "shape": [q, n, d], "dtype": label, "seconds": round(floor, 3)})
        print(json.dumps(report[-1]), flush=True)
    pool = pool_gpu.cpu().numpy()
    queries = queries_gpu.cpu().numpy()
    del pool_gpu
    torch.cuda.empty_cache()
    floor32 = report[-1]["seconds"]
    for name in usable("cuda"):
        t = time.perf_counter()
        search(queries, [pool], k, backend=name, device="cuda")
        secs = time.perf_counter() - t
        report.append({"check": "search", "pool": [n, d, "float16"], "queries": q, "k": k, "backend": name,
                       "seconds": round(secs, 3), "ratio_to_float32_gemm": round(secs / floor32, 2)})
        print(json.dumps(report[-1]), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--pool", type=int, default=5_609_079)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check", file=sys.stderr)
        return 2
    report: list[dict] = [{"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}]
    print(json.dumps(report[0]), flush=True)
    ok = same_bytes(report)
    if not args.skip_speed:
        speed(report, args.pool, args.dim, args.queries, args.k)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
