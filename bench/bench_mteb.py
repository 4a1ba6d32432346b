"""`mmbench run` vs `mteb.evaluate`, end to end, same encoder, same data (WordNet gloss tasks).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_mteb.py [--sizes 10k,100k] [--encoder hashbow|minilm]

Data: WordNetGlossRetrieval-10k (1,000 queries x 10,000 docs) and WordNetGlossRetrieval
(1,000 queries x 117,659 docs), built offline from wordnet-base. Encoders:

* ``hashbow`` (default): a deterministic hashed bag-of-words (crc32 into 384 dims), the same function
  behind both harnesses; it costs real time (pure Python; docs/perf.md) on both sides;
* ``lookup``: the hashbow embeddings computed once before timing, served by a text -> row lookup:
  encoding costs ~nothing, so the figures measure the harnesses alone (loading, encoding loop,
  search, scoring, writing) -- what mteb.md's "28 s where GEMM + top-k + pytrec_eval take 8 s" is about;
* ``minilm``: all-MiniLM-L6-v2 through sentence-transformers on both sides (encoding then dominates).

Each row also gives the seconds spent inside the encoder's ``encode`` on each side and the
harness time (wall minus that), so the ratio of the harnesses can be read whatever the encoder.

Both runs are cold for embeddings (mmbench gets a fresh cache folder); mteb runs with ``cache=None``
after one tiny warm-up evaluate in the same process (as mteb.md measured it); mmbench's time includes
writing its results (JSON, TREC run, per-query file, mteb's results format). The nDCG@10 of both is
printed so equality can be seen.

Old tree against this one (``--ab OLD``, issue #23's end-to-end target): mmbench's side only, the same
``api.run`` on each size with ``--encoder`` (default here ``lookup``, where the harness is all that is
timed; ``minilm``, a real model, where encoding dominates), each size in a fresh process per tree, the trees alternating, ``--rounds`` rounds; each process
does the warm-up run and keeps the best wall and CPU time (process_time: every thread) of ``--repeat``
cold-cache runs; the table gives the medians over the rounds. OLD is a checkout whose ``harness/`` holds
``mmbench/`` or fac06b0's flat package. Run it under ``flock /tmp/mmbench-bench.lock`` on a shared host.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_mteb.py --ab /tmp/old [--sizes 10k,100k] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import re
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "harness"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if __name__ == "__main__":     # mmbench's model loader imports "bench_mteb": let it find this module
    sys.modules.setdefault("bench_mteb", sys.modules["__main__"])

DIM = 384
BATCH_SIZE = 32             # the encode batch size of both sides (the default of both)
_TOKEN = re.compile(r"\w+")
SIZES = {"10k": "WordNetGlossRetrieval-10k", "100k": "WordNetGlossRetrieval"}


ENCODE_SECONDS = {"mteb": 0.0, "mmbench": 0.0}
_LOOKUP: dict[str, np.ndarray] = {}   # text -> embedding row, filled by precompute() for --encoder lookup


def timed(side: str, fn, *args, **kwargs):
    t = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        ENCODE_SECONDS[side] += time.perf_counter() - t


def precompute(folders: list[Path]) -> None:
    """Fill the lookup table with the hashbow embedding of every text of the given task folders."""
    import pyarrow.parquet as pq

    for folder in folders:
        for part in ("corpus", "queries"):
            table = pq.read_table(Path(folder) / part / "test.parquet")
            texts = table.column("text").to_pylist()
            if part == "corpus" and "title" in table.column_names:   # as mteb (and mmbench) join them
                texts = [(f"{t} {x}" if t else x).strip() for t, x in zip(table.column("title").to_pylist(), texts)]
            new = sorted({t for t in texts if t not in _LOOKUP})
            _LOOKUP.update(zip(new, hashbow(new)))


def lookup(texts: list[str]) -> np.ndarray:
    try:
        return np.stack([_LOOKUP[t] for t in texts]) if texts else np.zeros((0, DIM), np.float32)
    except KeyError as exc:
        raise RuntimeError(f"bench lookup encoder: text not precomputed: {exc}") from None


def hashbow(texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for i, t in enumerate(texts):
        for tok in _TOKEN.findall(t.lower()):
            out[i, zlib.crc32(tok.encode()) % DIM] += 1.0
    out[:, 0] += 1e-3                      # no all-zero rows
    return out


# -- mmbench side -------------------------------------------------------------------------------


class HashBowEncoder:
    def __init__(self, meta, **_):
        self.meta = meta
        self.fn = lookup if meta.name.endswith("lookup") else hashbow

    def settings(self):
        return {"dim": DIM}

    def encode(self, items, *, role, batch_size):
        # batch by batch, as mteb hands its encoder batches of ``batch_size`` (and as a real adapter
        # batches): the same calls of the same function on both sides (one call per 4096-item chunk
        # is slower for hashbow: its output array outgrows the CPU cache; docs/perf.md)
        texts = [(it.text or "") for it in items]
        return np.concatenate([timed("mmbench", self.fn, texts[lo:lo + batch_size])
                               for lo in range(0, len(texts), batch_size)]) if texts else self.fn([])


def load_hashbow(meta, **options):
    return HashBowEncoder(meta, **options)


def register_hashbow(kind: str = "hashbow"):
    from mmbench import catalog
    from mmbench.models.base import ModelMeta

    name = f"bench-{kind}"
    if name not in catalog.models():
        catalog.models().register(name, ModelMeta(
            name=name, loader="bench_mteb:load_hashbow", revision="1", modalities=("text",),
            embed_dim=DIM, description=f"hashed bag-of-words, {kind} (benchmark only)"))
    return name


# -- mteb side ----------------------------------------------------------------------------------


def mteb_hashbow(kind: str = "hashbow"):
    import mteb
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta

    class MtebHashBow(AbsEncoder):
        def __init__(self):
            self.mteb_model_meta = ModelMeta.create_empty(overwrites={
                "name": f"bench/{kind}", "revision": "1", "similarity_fn_name": None, "embed_dim": DIM})
            self.fn = lookup if kind == "lookup" else hashbow

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
            return np.concatenate([timed("mteb", self.fn, list(b["text"])) for b in inputs])

    return MtebHashBow()


def run_mteb(model, name: str, folder: Path) -> tuple[float, float]:
    import mteb

    from mmbench.data.families.mteb import local_mteb_task

    task = local_mteb_task(name, folder)
    gc.collect()                      # each side starts without the other's garbage
    t = time.perf_counter()
    res = mteb.evaluate(model, task, cache=None, show_progress_bar=False, encode_kwargs={"batch_size": BATCH_SIZE})
    return time.perf_counter() - t, res.task_results[0].scores["test"][0]["ndcg_at_10"]


def run_mmbench(model: str, name: str) -> tuple[float, float, dict]:
    from mmbench import api

    with tempfile.TemporaryDirectory() as tmp:
        gc.collect()
        t = time.perf_counter()
        out = api.run(api.RunConfig(model=model, tasks=(name,), suite=None, output=Path(tmp) / "r",
                                    cache_dir=Path(tmp) / "c", device="cpu", batch_size=BATCH_SIZE))
        wall = time.perf_counter() - t
    rec = out.tasks[0]
    return wall, rec.metrics["ndcg@10"], {}


def tree_modules(tree: str):
    """(api, catalog, ModelMeta, ensure_text_task) of the checkout ``tree``: the mmbench package, or
    fac06b0's flat ``harness`` package."""
    root = Path(tree).resolve()
    ours = str(Path(__file__).resolve().parent.parent / "harness")
    sys.path[:] = [p for p in sys.path if p != ours]
    if (root / "harness" / "mmbench").is_dir():
        sys.path.insert(0, str(root / "harness"))
        from mmbench import api, catalog
        from mmbench.data.builders.text_tasks import ensure_text_task
        from mmbench.models.base import ModelMeta
        from mmbench.models.minilm import package_model_path
    else:
        sys.path.insert(0, str(root))
        from harness import api, catalog
        from harness.data.text_tasks import ensure_text_task
        from harness.models.base import ModelMeta
        from harness.models.minilm import package_model_path
    return api, catalog, ModelMeta, ensure_text_task, package_model_path


def ab_child(tree: str, size: str, encoder: str, repeats: int) -> dict:
    """One size in this fresh process with ``tree``'s mmbench: best wall and CPU seconds of the runs."""
    api, catalog, model_meta, ensure_text_task, minilm_path = tree_modules(tree)
    warm = ensure_text_task("TuxPaintXLingualRetrieval")
    folder = ensure_text_task(SIZES[size])
    if encoder == "lookup":
        precompute([warm, folder])
    if encoder == "minilm":
        name = f"st:{minilm_path()}"
    else:
        name = f"bench-{encoder}"
        catalog.models().register(name, model_meta(
            name=name, loader="bench_mteb:load_hashbow", revision="1", modalities=("text",),
            embed_dim=DIM, description=f"hashed bag-of-words, {encoder} (benchmark only)"))

    latency = timed_latency_sampling()

    def once(task: str) -> tuple[float, float, float]:
        with tempfile.TemporaryDirectory() as tmp:
            gc.collect()
            latency[0] = 0.0
            w, c = time.perf_counter(), time.process_time()
            api.run(api.RunConfig(model=name, tasks=(task,), suite=None, output=Path(tmp) / "r",
                                  cache_dir=Path(tmp) / "c", device="cpu", batch_size=BATCH_SIZE))
            return time.perf_counter() - w, time.process_time() - c, latency[0]

    once("TuxPaintXLingualRetrieval")                                  # warm-up
    runs = sorted(once(SIZES[size]) for _ in range(repeats))
    return {"wall": runs[0][0], "cpu": min(c for _, c, _ in runs), "latency": runs[0][2], "load": os.getloadavg()[0]}


def timed_latency_sampling() -> list[float]:
    """Wall seconds spent in the efficiency report's single-query latency samples
    (``mmbench.pipeline.efficiency.sample_latency``, absent from trees older than that report), as
    a one-element list that each run resets: the part of a run that is not its batch search."""
    spent = [0.0]
    try:
        from mmbench.pipeline import efficiency
    except ImportError:
        return spent
    real = efficiency.sample_latency

    def sample_latency(*args, **kwargs):
        t = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t

    efficiency.sample_latency = sample_latency
    return spent


def run_ab(args: argparse.Namespace) -> None:
    """The old tree against this one, alternating fresh processes (module docstring)."""
    here = str(Path(__file__).resolve().parent.parent)
    sizes = args.sizes.split(",")
    got = {s: {"old": [], "new": []} for s in sizes}
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for size in sizes:
            for side, tree in (("old", args.ab), ("new", here)) if r % 2 == 0 else (("new", here), ("old", args.ab)):
                out = subprocess.run([sys.executable, __file__, "--repeat", str(args.repeat), "--encoder",
                                      args.encoder, "--ab-child", tree, size],
                                     check=True, capture_output=True, text=True).stdout
                got[size][side].append(json.loads(out.strip().splitlines()[-1]))
                loads.append(got[size][side][-1]["load"])
    print(f"old {args.ab} against {here}; encoder {args.encoder}; {args.rounds} rounds x best of {args.repeat}"
          f" cold-cache runs; load average {min(loads):.1f}-{max(loads):.1f}")
    print("'latency' is the wall time of the efficiency report's single-query latency samples (in the wall"
          " time; trees older than the report have none); 'less latency' the wall time without it")
    print("| task | old wall s | new wall s | ratio | latency s (old, new) | ratio less latency |"
          " old CPU s | new CPU s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, sides in got.items():
        med = {s: {f: statistics.median(x[f] for x in v) for f in ("wall", "cpu", "latency")}
               for s, v in sides.items()}
        old, new = med["old"], med["new"]
        print(f"| {SIZES[size]} | {old['wall']:.3f} | {new['wall']:.3f} | {new['wall'] / old['wall']:.2f} |"
              f" {old['latency']:.3f}, {new['latency']:.3f} |"
              f" {(new['wall'] - new['latency']) / (old['wall'] - old['latency']):.2f} |"
              f" {old['cpu']:.3f} | {new['cpu']:.3f} | {new['cpu'] / old['cpu']:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10k,100k")
    ap.add_argument("--encoder", default=None, choices=("hashbow", "lookup", "minilm"),
                    help="default hashbow; lookup with --ab")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side per size (alternating); medians printed")
    ap.add_argument("--ab", metavar="OLD_TREE", help="mmbench's time against an old checkout instead (module docstring)")
    ap.add_argument("--rounds", type=int, default=3, help="--ab: rounds of alternating processes (median kept)")
    ap.add_argument("--ab-child", nargs=2, metavar=("TREE", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.encoder = args.encoder or ("lookup" if args.ab or args.ab_child else "hashbow")
    if args.ab_child:
        print(json.dumps(ab_child(*args.ab_child, args.encoder, args.repeat)))
        return
    if args.ab:
        run_ab(args)
        return
    from mmbench.data.builders.text_tasks import ensure_text_task

    warm = ensure_text_task("TuxPaintXLingualRetrieval")
    folders = {size: ensure_text_task(SIZES[size]) for size in args.sizes.split(",")}
    if args.encoder in ("hashbow", "lookup"):
        mm_model, mteb_model = register_hashbow(args.encoder), mteb_hashbow(args.encoder)
        if args.encoder == "lookup":
            precompute([warm, *folders.values()])
    else:
        from sentence_transformers import SentenceTransformer

        from mmbench.models.minilm import package_model_path

        mm_model = f"st:{package_model_path()}"
        mteb_model = SentenceTransformer(str(package_model_path()), device="cpu")
        real_encode = SentenceTransformer.encode
        side = {"now": "mteb"}

        def encode(self, *a, **kw):              # both harnesses call SentenceTransformer.encode
            return timed(side["now"], real_encode, self, *a, **kw)

        SentenceTransformer.encode = encode
    # warm-up: one tiny evaluate in each harness (imports, first-call costs)
    run_mteb(mteb_model, "TuxPaintXLingualRetrieval", warm)
    run_mmbench(mm_model, "TuxPaintXLingualRetrieval")
    print(f"encoder={args.encoder}  (1,000 queries; median of {args.repeat} runs each; wall seconds, warm process,"
          " cold embeddings; 'enc' = seconds inside the encoder, 'harness' = wall - enc)")
    print(f"{'docs':>8} {'mteb wall':>10} {'enc':>5} {'harness':>8} {'mmbench wall':>13} {'enc':>5} {'harness':>8}"
          f" {'ratio wall':>11} {'ratio harness':>14} {'ndcg@10 mteb':>13} {'mmbench':>9}")
    for size, folder in folders.items():
        name = SIZES[size]
        runs = {"mteb": [], "mmbench": []}      # (wall, encoder seconds) per run
        for _ in range(args.repeat):
            for who in ("mteb", "mmbench"):
                ENCODE_SECONDS[who] = 0.0
                if args.encoder == "minilm":
                    side["now"] = who
                if who == "mteb":
                    wall, n_mteb = run_mteb(mteb_model, name, folder)
                else:
                    wall, n_mm, _ = run_mmbench(mm_model, name)
                runs[who].append((wall, ENCODE_SECONDS[who]))
        t_mteb, e_mteb = (float(v) for v in np.median(np.array(runs["mteb"]), axis=0))
        t_mm, e_mm = (float(v) for v in np.median(np.array(runs["mmbench"]), axis=0))
        h_mteb = float(np.median([w - e for w, e in runs["mteb"]]))
        h_mm = float(np.median([w - e for w, e in runs["mmbench"]]))
        print(f"{size:>8} {t_mteb:10.2f} {e_mteb:5.2f} {h_mteb:8.2f} {t_mm:13.2f} {e_mm:5.2f} {h_mm:8.2f}"
              f" {t_mteb / t_mm:11.1f} {h_mteb / h_mm:14.1f} {n_mteb:13.5f} {n_mm:9.5f}", flush=True)


if __name__ == "__main__":
    main()
