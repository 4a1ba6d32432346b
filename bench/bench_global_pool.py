"""The 5.6M global pool: M-BEIR's union file read, and the global-suite path run on it (issue #26).

1. **File.** Writes a synthetic ``cand_pool/global/mbeir_union_test_cand_pool.jsonl`` with the sizes,
   modalities and dataset ids of M-BEIR's 16 local test pools (5,609,079 lines at ``--scale 1``, sorted
   by (dataset id, n); ``shared/reference/mbeir.md`` §2.2), realistic text lengths per pool (news
   captions, product titles, 100-word Wikipedia passages with ``src_content`` JSON, ...), some escaped
   quotes and non-ASCII text, image paths where the modality has an image (no image files).
2. **Load.** In a fresh process each: ``load_union_pool`` (Arrow's columnar reader) on the whole file,
   and ``load_pool`` (a ``json.loads`` per line) on the first ``--sample`` lines; seconds per row and
   their ratio, and each process's peak RSS.
3. **Run.** In a fresh process: ``mmbench.api.run`` of ``mbeir-global --tasks mscoco_task0,webqa_task1``
   on that data root (``--queries`` queries per task) with ``bench-hash``, a bench-only model registered
   in the process (a deterministic ``--dim``-d encoder: a hash of the text and of the image path, no
   image decoded): the union read, every part embedded through the cache, the search, the records.
   Peak RSS against the pool's embedding bytes and the file's bytes; then the same run again (all
   cached) for the cached-path time.

Everything is written under ``--dir`` (default ``/tmp/mmbench-bench-global-pool``), removed at the end
unless ``--keep``. Figures go to docs/perf.md ("The 5.6M global pool"), with the host and command.

Usage: python bench/bench_global_pool.py [--scale 1.0] [--sample 500000] [--dim 16] [--queries 50] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "harness"))

UNION = "cand_pool/global/mbeir_union_test_cand_pool.jsonl"

# M-BEIR's 16 local test pools: (dataset id, modality, candidates, text length in words, src_content)
POOLS = [
    (0, "image", 542_246, 0, False), (0, "text", 537_568, 18, False),          # VisualNews t0 / t3
    (1, "image", 201_824, 0, False), (1, "text", 61_707, 8, False),            # Fashion200K t0 / t3
    (2, "text", 544_457, 60, False), (2, "image,text", 403_196, 16, False),    # WebQA t1 / t2
    (3, "image,text", 1_047_067, 14, False),                                   # EDIS t2
    (4, "image", 40_038, 0, False),                                            # NIGHTS t4
    (5, "text", 676_667, 100, True), (5, "image,text", 335_135, 100, True),    # OVEN t6 / t8
    (6, "text", 611_651, 100, True), (6, "image,text", 481_782, 100, True),    # InfoSeek t6 / t8
    (7, "image", 74_381, 0, True),                                             # FashionIQ t7
    (8, "image", 21_551, 0, True),                                             # CIRR t7
    (9, "image", 5_000, 0, False), (9, "text", 24_809, 10, False),             # MSCOCO t0 / t3
]
WORDS = ("the a of in and to news image photo city people river museum station dress blue red white "
         "player match team election president winter garden bridge mountain café naïve Zürich "
         '"quoted" it\'s 1984 wikipedia article history century building painting village').split()


def rss_mb() -> float:
    """This process's peak RSS in MB (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_union(root: Path, scale: float) -> tuple[int, int]:
    """The synthetic union file under ``root``; returns (lines, bytes)."""
    import random

    rng = random.Random(26)
    passages = {n: [json.dumps(" ".join(rng.choice(WORDS) for _ in range(max(1, n + rng.randint(-n // 3, n // 3)))),
                               ensure_ascii=False)[1:-1] for _ in range(512)] for n in {p[3] for p in POOLS} if n}
    path = root / UNION
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = 0
    with open(path, "w", encoding="utf-8") as f:
        counters: dict[int, int] = {}
        for dataset, modality, count, words, src in POOLS:
            count = max(1, round(count * scale))
            buf = []
            for _ in range(count):
                n = counters[dataset] = counters.get(dataset, 0) + 1
                txt = f'"{passages[words][n % 512]} {n}"' if words else "null"
                img = f'"mbeir_images/d{dataset}_images/{n % 997:03d}/{dataset}_{n:08d}.jpg"' if "image" in modality else "null"
                source = json.dumps(json.dumps({"wikidata_id": f"Q{n}", "title": f"Entity {n}"})) if src else "null"
                buf.append(f'{{"txt": {txt}, "img_path": {img}, "modality": "{modality}", "did": "{dataset}:{n}", '
                           f'"src_content": {source}}}\n')
                if len(buf) >= 100_000:
                    f.write("".join(buf))
                    buf.clear()
            f.write("".join(buf))
            lines += count
    return lines, path.stat().st_size


def write_tasks(root: Path, n_queries: int) -> None:
    """Query, qrels and instruction files of mscoco_task0 (text -> image) and webqa_task1 (text -> text)."""
    (root / "instructions").mkdir(parents=True, exist_ok=True)
    (root / "instructions/query_instructions.tsv").write_text(
        "query_modality\tcand_modality\tdataset_name\tdataset_id\tprompt_1\tprompt_2\tprompt_3\tprompt_4\n"
        "text\timage\tMSCOCO\t9\tFind me an everyday image that matches the given caption.\n"
        "text\ttext\tWebQA\t2\tRetrieve passages from Wikipedia that provide answers to the following question.\n",
        encoding="utf-8")
    for stem, dataset, task, first in (("mscoco_task0", 9, 0, 1), ("webqa_task1", 2, 1, 1)):
        queries, qrels = [], []
        for i in range(1, n_queries + 1):
            did = f"{dataset}:{first + (i * 7) % 50}"   # within the pool at --scale 0.01
            queries.append(json.dumps({"qid": f"{dataset}:{i}", "query_txt": f"question number {i} about {did}",
                                       "query_img_path": None, "query_modality": "text", "query_src_content": None,
                                       "pos_cand_list": [did], "neg_cand_list": [], "task_id": task}) + "\n")
            qrels.append(f"{dataset}:{i} 0 {did} 1 {task}\n")
        (root / "query/test").mkdir(parents=True, exist_ok=True)
        (root / "qrels/test").mkdir(parents=True, exist_ok=True)
        (root / f"query/test/mbeir_{stem}_test.jsonl").write_text("".join(queries), encoding="utf-8")
        (root / f"qrels/test/mbeir_{stem}_test_qrels.txt").write_text("".join(qrels), encoding="utf-8")


# --- the bench-only model: registered in the run's process ----------------------------------------

DIM = int(os.environ.get("BENCH_DIM", "16"))


class HashEncoder:
    """Deterministic and weight-free: crc32 of an item's text and image path picks rows of a fixed table."""

    def __init__(self, meta):
        import numpy as np

        self.meta = meta
        self.table = np.random.default_rng(0).standard_normal((4096, DIM)).astype(np.float32)

    def settings(self) -> dict:
        return {"kind": "crc32 of text and image path -> fixed random rows"}

    def encode(self, items, *, role, batch_size):
        import numpy as np

        out = np.empty((len(items), DIM), np.float32)
        for row, item in enumerate(items):
            text = item.prompted_text() if role == "query" else item.text
            t = zlib.crc32(text.encode("utf-8", "surrogatepass")) if text else 0
            i = zlib.crc32(str(item.image.path).encode()) if item.image is not None else 1
            out[row] = self.table[t % 4096] + self.table[i % 4096]
        return out


def load_bench_encoder(meta, **options):
    return HashEncoder(meta)


def register_bench_model():
    from mmbench import catalog
    from mmbench.models.base import ModelMeta

    meta = ModelMeta("bench-hash", "bench_global_pool:load_bench_encoder", "1", ("text", "image"), DIM,
                     "bench-only deterministic hash encoder", fusion="score-sum")
    catalog.models().register(meta.name, meta, replace=True)
    return meta


# --- the phases, each in a fresh process ---------------------------------------------------------------

def phase_columnar(root: Path) -> dict:
    from mmbench.data.families.mbeir import load_union_pool

    base = rss_mb()
    t0 = time.perf_counter()
    pool = load_union_pool(root / UNION, root)
    seconds = time.perf_counter() - t0
    return {"rows": len(pool.table), "parts": len(pool.part_list()), "seconds": seconds,
            "rss_base_mb": base, "rss_peak_mb": rss_mb()}


def phase_lines(root: Path, sample: int) -> dict:
    from mmbench.data.families.mbeir import load_pool, load_union_pool

    src, path = root / UNION, root / "sample.jsonl"
    with open(src, "rb") as f, open(path, "wb") as out:
        for _, line in zip(range(sample), f):
            out.write(line)
    base = rss_mb()
    t0 = time.perf_counter()
    table = load_pool(path, root)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    columnar = load_union_pool(path, root)
    columnar_seconds = time.perf_counter() - t0
    same = (columnar.table.ids == table.ids and columnar.table.texts == table.texts
            and columnar.table.image_paths == table.image_paths and columnar.table.modalities == table.modalities)
    path.unlink()
    return {"rows": len(table), "seconds": seconds, "columnar_seconds": columnar_seconds, "same_table": same,
            "rss_base_mb": base, "rss_peak_mb": rss_mb()}


def phase_run(root: Path, out: Path) -> dict:
    from mmbench import api
    from mmbench.config import RunConfig

    register_bench_model()
    base = rss_mb()
    config = RunConfig(model="bench-hash", suite="mbeir-global", tasks=("mscoco_task0", "webqa_task1"),
                       data_root=root, output=out / "results", cache_dir=out / "cache", batch_size=256)
    t0 = time.perf_counter()
    outcome = api.run(config)
    first = time.perf_counter() - t0
    peak_first = rss_mb()
    t0 = time.perf_counter()
    again = api.run(config)
    cached = time.perf_counter() - t0
    return {"seconds_first": first, "seconds_cached": cached, "rss_base_mb": base, "rss_peak_mb": peak_first,
            "rss_peak_after_cached_mb": rss_mb(),
            "tasks": {t.task: {"n_candidates": t.n_candidates, "main": t.main_metric, "score": t.main_score}
                      for t in outcome.tasks},
            "reused_second": [t.reused for t in again.tasks]}


def child(phase: str, a: argparse.Namespace) -> dict:
    env = {**os.environ, "MMBENCH_NO_PROGRESS": "1", "PYTHONPATH": f"{HERE}:{HERE.parent / 'harness'}"}
    args = ["--dir", str(a.dir), "--sample", str(a.sample)]
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--phase", phase, *args],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=Path("/tmp/mmbench-bench-global-pool"))
    p.add_argument("--scale", type=float, default=1.0, help="fraction of M-BEIR's pool sizes (1: 5,609,079 lines)")
    p.add_argument("--sample", type=int, default=500_000, help="lines read by the json.loads loop")
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--phase", choices=["columnar", "lines", "run"], help=argparse.SUPPRESS)
    a = p.parse_args()
    root = a.dir / "M-BEIR"
    if a.phase:
        result = {"columnar": lambda: phase_columnar(root), "lines": lambda: phase_lines(root, a.sample),
                  "run": lambda: phase_run(root, a.dir)}[a.phase]()
        print(json.dumps(result))
        return
    os.environ["BENCH_DIM"] = str(a.dim)
    if a.dir.exists():
        shutil.rmtree(a.dir)
    try:
        t0 = time.perf_counter()
        lines, size = write_union(root, a.scale)
        write_tasks(root, a.queries)
        print(f"union file: {lines:,} lines, {size / 1e9:.2f} GB, written in {time.perf_counter() - t0:.1f} s")
        col = child("columnar", a)
        print(f"columnar read: {col['rows']:,} rows, {col['parts']} parts in {col['seconds']:.1f} s "
              f"({col['seconds'] / col['rows'] * 1e6:.2f} us/row); peak RSS {col['rss_peak_mb']:,.0f} MB "
              f"(base {col['rss_base_mb']:,.0f} MB)")
        lin = child("lines", a)
        per_line, per_col = lin["seconds"] / lin["rows"], lin["columnar_seconds"] / lin["rows"]
        print(f"json.loads loop on the first {lin['rows']:,} lines: {lin['seconds']:.1f} s ({per_line * 1e6:.2f} us/row); "
              f"columnar on the same lines {lin['columnar_seconds']:.1f} s; same table: {lin['same_table']}; "
              f"ratio (loop / columnar, per row, whole-file columnar): {per_line / (col['seconds'] / col['rows']):.1f}x "
              f"(same sample: {per_line / per_col:.1f}x)")
        run = child("run", a)
        pool_bytes = lines * a.dim * 4
        print(f"global-suite run (2 tasks x {a.queries} queries, dim {a.dim}): first {run['seconds_first']:.1f} s, "
              f"cached {run['seconds_cached']:.1f} s; tasks {run['tasks']}; reused on the second run: "
              f"{run['reused_second']}")
        print(f"peak RSS {run['rss_peak_mb']:,.0f} MB (base {run['rss_base_mb']:,.0f} MB): pool embeddings "
              f"{pool_bytes / 1e6:,.0f} MB, union file {size / 1e6:,.0f} MB; peak - base - embeddings = "
              f"{run['rss_peak_mb'] - run['rss_base_mb'] - pool_bytes / 1e6:,.0f} MB")
        print(json.dumps({"lines": lines, "bytes": size, "columnar": col, "lines_loop": lin, "run": run}))
    finally:
        if not a.keep:
            shutil.rmtree(a.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
