"""`mmbench run` vs `mteb.evaluate`, end to end, same encoder, same data (WordNet gloss tasks).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_mteb.py [--sizes 10k,100k] [--encoder hashbow|minilm]

Data: WordNetGlossRetrieval-10k (1,000 queries x 10,000 docs) and WordNetGlossRetrieval
(1,000 queries x 117,659 docs), built offline from wordnet-base. Encoders:

* ``hashbow`` (default): a deterministic hashed bag-of-words (crc32 into 384 dims), the same object
  behind both harnesses, so the figures measure the harnesses (loading, encoding loop, search,
  scoring, writing) and not the network;
* ``minilm``: all-MiniLM-L6-v2 through sentence-transformers on both sides (encoding then dominates).

Both runs are cold for embeddings (mmbench gets a fresh cache folder); mteb runs with ``cache=None``
after one tiny warm-up evaluate in the same process (as mteb.md measured it); mmbench's time includes
writing its results (JSON, TREC run, per-query file, mteb's results format). The nDCG@10 of both is
printed so equality can be seen.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

DIM = 384
_TOKEN = re.compile(r"\w+")
SIZES = {"10k": "WordNetGlossRetrieval-10k", "100k": "WordNetGlossRetrieval"}


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

    def settings(self):
        return {"dim": DIM}

    def encode(self, items, *, role, batch_size):
        return hashbow([(it.text or "") for it in items])


def load_hashbow(meta, **options):
    return HashBowEncoder(meta, **options)


def register_hashbow():
    from harness import catalog
    from harness.models.base import ModelMeta

    if "bench-hashbow" not in catalog.models():
        catalog.models().register("bench-hashbow", ModelMeta(
            name="bench-hashbow", loader="bench_mteb:load_hashbow", revision="1", modalities=("text",),
            embed_dim=DIM, description="hashed bag-of-words (benchmark only)"))
    return "bench-hashbow"


# -- mteb side ----------------------------------------------------------------------------------


def mteb_hashbow():
    import mteb
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta

    class MtebHashBow(AbsEncoder):
        def __init__(self):
            self.mteb_model_meta = ModelMeta.create_empty(overwrites={
                "name": "bench/hashbow", "revision": "1", "similarity_fn_name": None, "embed_dim": DIM})

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
            return np.concatenate([hashbow(list(b["text"])) for b in inputs])

    return MtebHashBow()


def run_mteb(model, name: str, folder: Path) -> tuple[float, float]:
    import mteb

    from harness.data.mteb_loader import local_mteb_task

    task = local_mteb_task(name, folder)
    t = time.perf_counter()
    res = mteb.evaluate(model, task, cache=None, show_progress_bar=False)
    return time.perf_counter() - t, res.task_results[0].scores["test"][0]["ndcg_at_10"]


def run_mmbench(model: str, name: str) -> tuple[float, float, dict]:
    from harness import api

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        out = api.run(api.RunConfig(model=model, tasks=(name,), suite=None, output=Path(tmp) / "r",
                                    cache_dir=Path(tmp) / "c", device="cpu", batch_size=128))
        wall = time.perf_counter() - t
    rec = out.tasks[0]
    return wall, rec.metrics["ndcg@10"], {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10k,100k")
    ap.add_argument("--encoder", default="hashbow", choices=("hashbow", "minilm"))
    args = ap.parse_args()
    from harness.data.text_tasks import ensure_text_task

    if args.encoder == "hashbow":
        mm_model, mteb_model = register_hashbow(), mteb_hashbow()
    else:
        from sentence_transformers import SentenceTransformer

        from harness.models.minilm import package_model_path

        mm_model = f"st:{package_model_path()}"
        mteb_model = SentenceTransformer(str(package_model_path()), device="cpu")
    # warm-up: one tiny evaluate in each harness (imports, first-call costs)
    warm = ensure_text_task("TuxPaintXLingualRetrieval")
    run_mteb(mteb_model, "TuxPaintXLingualRetrieval", warm)
    run_mmbench(mm_model, "TuxPaintXLingualRetrieval")
    print(f"encoder={args.encoder}  (1,000 queries; wall seconds, warm process, cold embeddings)")
    print(f"{'docs':>8} {'mteb.evaluate':>14} {'mmbench run':>12} {'ratio':>6} {'ndcg@10 mteb':>13} {'mmbench':>9}")
    for size in args.sizes.split(","):
        name = SIZES[size]
        folder = ensure_text_task(name)
        t_mteb, n_mteb = run_mteb(mteb_model, name, folder)
        t_mm, n_mm, _ = run_mmbench(mm_model, name)
        print(f"{size:>8} {t_mteb:14.1f} {t_mm:12.1f} {t_mteb / t_mm:6.1f} {n_mteb:13.5f} {n_mm:9.5f}", flush=True)


if __name__ == "__main__":
    main()
