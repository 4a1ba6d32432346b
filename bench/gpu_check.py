"""GPU check (issue #26): encode throughput, search at M-BEIR's global size, GPU/CPU run-file bytes.

One script, sized to finish in under 8 minutes on one H100 (``python bench/gpu_check.py [--out PATH]``;
torch with CUDA, faiss-gpu where importable; offline: no hub access, every model has random weights).
``--smoke`` runs every part with tiny shapes on whatever device there is (the CPU here), so
tests/search/test_gpu_check_smoke.py proves the script runs before anyone spends GPU minutes on it.

Parts (``--parts``, default all):

1. **encode**: items/s of CLIP ViT-L/14 (a transformers ``CLIPModel`` built from the OpenAI
   ViT-L/14 config, random weights) and of an MM-Embed-shaped model (mmbench's own module tree,
   :class:`mmbench.models.mmembed.modules.MMEmbedModel`: CLIP ViT-L/14-336 tower, projector,
   NV-Embed-v1's 7B bidirectional Mistral with ``--mmembed-layers`` of its 32 layers, latent-attention
   pooler; random weights) in bf16, on text, image and image+text batches of synthetic tensors (the
   model's forward alone: no tokenizer, no image decoding). With fewer than 32 layers the full-depth
   figure is also given, scaled by layers/32 (conservative: the vision tower and pooler are scaled too).
2. **search**: a synthetic ``--pool`` x ``--dim`` float16 pool (M-BEIR's global pool has 5,609,079
   candidates) and ``--queries`` queries at ``--k``: the seconds of :func:`mmbench.search.search` per
   GPU backend (``faiss-gpu``, ``torch``; ``sharded`` over all visible GPUs with the pool resident in
   float16, and streamed from the host; ``sharded-faiss``), beside the floor of the same shape's
   matrix product (float16 tensor cores, and float32 without TF32, which is what the exact backends
   multiply in) and the ratios; then the first ``--cpu-sample`` queries searched on the GPU and on
   the CPU: their run files must be byte-identical.
3. **same-bytes**: tie-heavy pools (coarse vectors, duplicate rows, near-ties) searched with every
   exact backend usable on the GPU and on the CPU: byte-identical run files (the guarantee of
   :mod:`mmbench.search.rescore`).

Prints one JSON line per measurement as it goes and a table at the end; writes the whole report as
JSON to ``--out`` (a ``.json`` file, or a folder receiving ``gpu_check.json``), else to ``$OUT`` when
that is set. Exit status 0 when every byte comparison held and no part failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "harness"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_encode import CLIP_ARCHS, CLIP_COMMON_TEXT, CLIP_COMMON_VISION  # noqa: E402

from mmbench.results.trec import write_trec  # noqa: E402
from mmbench.search import backends_registry, search  # noqa: E402

PARTS = ("encode", "search", "same-bytes")
GIB = 1024**3


# --------------------------------------------------------------------------- helpers


class Report:
    """The measurements, printed as they come and written as JSON."""

    def __init__(self, out: Path | None):
        self.data: dict = {"meta": {}, "encode": [], "search": [], "same_bytes": [], "errors": []}
        self.out = out

    def add(self, part: str, row: dict) -> None:
        self.data[part].append(row)
        print(json.dumps({"part": part, **row}, default=str), flush=True)
        self.save()

    def save(self) -> None:
        if self.out is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.out)


def out_path(arg: str | None) -> Path | None:
    """``--out`` as a file path (a folder gets gpu_check.json), else ``$OUT/gpu_check.json``, else None."""
    raw = arg or os.environ.get("OUT")
    if not raw:
        return None
    path = Path(raw)
    return path if path.suffix == ".json" else path / "gpu_check.json"


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Seconds of one call of fn (after one warm-up call): the fastest of ``repeats``."""
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def usable(device: str) -> list[str]:
    reg = backends_registry()
    return [n for n in reg.names() if reg.get(n).exact and reg.get(n).available(device) is True]


def run_file_digest(idx: np.ndarray, scores: np.ndarray, ids: list[str], folder: Path, name: str) -> str:
    path = folder / f"{name}.trec"
    write_trec(path, [f"q{i}" for i in range(idx.shape[0])], ids, idx, scores, "check", fsync=False)
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- 1. encode


def clip_config(smoke: bool):
    from transformers import CLIPConfig

    if smoke:
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=14)
        proj = 16
    else:
        arch = CLIP_ARCHS["clip-vit-l-14"]
        text, vision, proj = arch["text"], arch["vision"], arch["projection_dim"]
    return CLIPConfig(text_config=dict(text, **CLIP_COMMON_TEXT, projection_dim=proj),
                      vision_config=dict(vision, **CLIP_COMMON_VISION, projection_dim=proj), projection_dim=proj)


def mmembed_config(smoke: bool, layers: int):
    from mmbench.models.mmembed.config import (CLIP_VISION_DEFAULTS, LATENT_ATTENTION_DEFAULTS, NV_EMBED_V1_TEXT,
                                               MMEmbedConfig)

    if smoke:     # tests/tiny_mmembed.py's widths, fewer layers, 56 px images (17 LM positions)
        vision = {**CLIP_VISION_DEFAULTS, "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2,
                  "num_hidden_layers": 2, "image_size": 56, "patch_size": 14}
        text = {**NV_EMBED_V1_TEXT, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": layers,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8}
        latent = {**LATENT_ATTENTION_DEFAULTS, "num_latents_value": 8, "num_cross_heads": 2, "cross_dim_head": 16,
                  "latent_dim": 32, "hidden_dim": 32}
    else:         # MM-Embed's vision_config (CLIP ViT-L/14-336) and NV-Embed-v1's LM and pooler
        vision = {**CLIP_VISION_DEFAULTS, "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                  "num_hidden_layers": 24, "image_size": 336, "patch_size": 14, "projection_dim": 768}
        text = {**NV_EMBED_V1_TEXT, "num_hidden_layers": layers}
        latent = dict(LATENT_ATTENTION_DEFAULTS)
    return MMEmbedConfig(vision=vision, text=text, latent=latent)


def build_random(make: Callable[[], object], device: str, dtype):
    """``make()`` built directly on ``device`` in ``dtype`` (random init there), in eval mode."""
    import torch

    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            return make().eval()
    finally:
        torch.set_default_dtype(saved)


def encode_part(report: Report, device: str, args: argparse.Namespace) -> None:
    import torch

    dtype = torch.bfloat16
    smoke = args.smoke
    repeats = 1 if smoke else args.repeats
    gen = torch.Generator(device=device).manual_seed(0)

    def measure(model_name: str, n_params: int, modality: str, batch: int, tokens: int, fn: Callable[[], object],
                scale: float = 1.0) -> None:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            secs = timed(fn, device, repeats)
        row = {"model": model_name, "params": n_params, "modality": modality, "batch": batch,
               "lm_tokens_per_item": tokens, "dtype": "bfloat16", "device": device, "seconds_per_batch": round(secs, 4),
               "items_per_s": round(batch / secs, 2)}
        if scale != 1.0:
            row["items_per_s_full_depth_scaled"] = round(batch / secs / scale, 2)
        if device.startswith("cuda"):
            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
        report.add("encode", row)

    # CLIP ViT-L/14: 77 text tokens, 224 px images (257 vision positions); image+text = both towers
    from transformers import CLIPModel

    cfg = clip_config(smoke)
    clip = build_random(lambda: CLIPModel(cfg), device, dtype)
    n_params = sum(p.numel() for p in clip.parameters())
    b = 4 if smoke else args.clip_batch
    ids = torch.randint(3, cfg.text_config.vocab_size, (b, 77), device=device, generator=gen)
    pixels = torch.randn((b, 3, 224, 224), device=device, dtype=dtype, generator=gen)
    name = "clip-vit-l-14 (random)" if not smoke else "clip tiny (smoke)"
    measure(name, n_params, "text", b, 77, lambda: clip.get_text_features(input_ids=ids))
    measure(name, n_params, "image", b, 257, lambda: clip.get_image_features(pixel_values=pixels))
    measure(name, n_params, "image,text", b, 77 + 257,
            lambda: (clip.get_image_features(pixel_values=pixels), clip.get_text_features(input_ids=ids)))
    del clip, ids, pixels
    if device.startswith("cuda"):
        torch.cuda.empty_cache()

    # MM-Embed-shaped: text rows of --text-tokens tokens; an image is 577 LM positions plus the prompt
    from mmbench.models.mmembed.modules import MMEmbedModel

    layers = 2 if smoke else args.mmembed_layers
    mcfg = mmembed_config(smoke, layers)
    model = build_random(lambda: MMEmbedModel(mcfg), device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    scale = layers / 32
    name = f"mm-embed-shaped (random, {layers}/32 LM layers)" if not smoke else "mm-embed tiny (smoke)"
    vocab, image_id = mcfg.text["vocab_size"], mcfg.image_token_index
    t_text, t_prompt = (16, 6) if smoke else (args.text_tokens, 24)

    def rows(batch: int, n_text: int, image: bool) -> dict:
        ids = torch.randint(3, vocab, (batch, n_text + (1 if image else 0)), device=device, generator=gen)
        if image:
            ids[:, 1] = image_id
        ones = torch.ones_like(ids)
        out = {"input_ids": ids, "attention_mask": ones, "pool_mask": ones}
        if image:
            out["pixel_values"] = torch.randn((batch, 3, mcfg.image_size, mcfg.image_size), device=device,
                                              dtype=dtype, generator=gen)
        return out

    bt, bi = (4, 2) if smoke else (args.mmembed_text_batch, args.mmembed_image_batch)
    text_in, image_in, both_in = rows(bt, t_text, False), rows(bi, t_prompt, True), rows(bi, t_prompt + t_text, True)
    per_image = mcfg.tokens_per_image
    measure(name, n_params, "text", bt, t_text, lambda: model(**text_in), scale)
    measure(name, n_params, "image", bi, per_image + t_prompt, lambda: model(**image_in), scale)
    measure(name, n_params, "image,text", bi, per_image + t_prompt + t_text, lambda: model(**both_in), scale)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- 2. search at size


def gemm_floor(report: Report, device: str, n: int, d: int, q: int, smoke: bool) -> dict[str, float]:
    """Seconds of the (q x d) @ (d x n) product in float16 (tensor cores) and float32 (no TF32)."""
    import torch

    g = torch.Generator(device=device).manual_seed(1)
    floors = {}
    torch.backends.cuda.matmul.allow_tf32 = False
    chunk = max(1, (8 * GIB if device.startswith("cuda") else GIB // 8) // (4 * q))   # score matrix per step
    for dtype, label in ((torch.float16, "float16"), (torch.float32, "float32")):
        qq = torch.randn((q, d), device=device, dtype=dtype, generator=g)
        block = torch.randn((min(chunk, n), d), device=device, dtype=dtype, generator=g)
        steps, rest = divmod(n, block.shape[0])

        def product() -> None:
            for _ in range(steps):
                qq @ block.T
            if rest:
                qq @ block[:rest].T

        secs = timed(product, device, 1 if smoke else 3)
        floors[label] = secs
        report.add("search", {"check": "gemm-floor", "shape": [q, n, d], "dtype": label, "device": device,
                              "seconds": round(secs, 4), "tflops": round(2 * q * n * d / secs / 1e12, 2)})
    return floors


def synthetic_pool(device: str, n: int, d: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows (float16 pool, float32 queries) drawn on the device, returned on the host."""
    import torch

    g = torch.Generator(device=device).manual_seed(2)
    pool = np.empty((n, d), np.float16)
    step = 1 << 20
    for s in range(0, n, step):
        rows = torch.randn((min(step, n - s), d), device=device, generator=g)
        pool[s:s + rows.shape[0]] = (rows / rows.norm(dim=1, keepdim=True)).half().cpu().numpy()
    queries = torch.randn((q, d), device=device, generator=g)
    return pool, (queries / queries.norm(dim=1, keepdim=True)).cpu().numpy()


def search_part(report: Report, device: str, args: argparse.Namespace) -> bool:
    """Seconds per backend at size, their ratio to the floors, then GPU vs CPU bytes on a sample."""
    n, d, q, k = args.pool, args.dim, args.queries, args.k
    floors = gemm_floor(report, device, n, d, q, args.smoke)
    pool, queries = synthetic_pool(device, n, d, q)
    ids = [f"c{i:08d}" for i in range(n)]
    tiebreak = np.arange(n, dtype=np.int64)
    from mmbench.search import Pool
    from mmbench.search.backends.sharded import plan_shards
    from mmbench.search.backends.sharded import shard_devices as default_devices

    shard_devices = ["cpu", "cpu"] if device == "cpu" else []        # GPUs: every visible one
    n_dev = len(shard_devices or default_devices(device))
    per_device = n * d * 2 // n_dev                                  # a shard's bytes in float16
    resident, streamed = int(per_device * 1.2), per_device // (2 if args.smoke else 8)   # float32 does not fit
    runs = []                  # (label, backend, budget bytes, devices)
    for name in args.backends or usable(device):
        if name in ("numpy",) or (name not in usable(device)):
            continue
        if name == "sharded":
            runs.append(("sharded float16 resident", name, resident, shard_devices))
            runs.append(("sharded streamed", name, streamed, shard_devices))
        elif name == "sharded-faiss":
            runs.append(("sharded-faiss float16 resident", name, resident, shard_devices))
        elif device.startswith("cuda") or name in ("scan-cpu", "faiss-cpu", "torch"):
            runs.append((name, name, args.budget_gb * GIB, []))
    answers = {}
    for label, name, budget, devs in runs:
        t = time.perf_counter()
        idx, scores = search(queries, [pool], k, tiebreak=tiebreak, backend=name, device=device,
                             memory_budget_bytes=budget, devices=devs)
        secs = time.perf_counter() - t
        answers[label] = (idx, scores)
        storage = None
        if name.startswith("sharded"):
            plan = plan_shards(Pool((pool,), n, d, None, device, budget, tuple(devs)), devs or default_devices(device))
            storage = sorted({s.storage for s in plan})
        report.add("search", {"check": "search", "backend": label, "pool": [n, d, "float16"], "queries": q, "k": k,
                              "device": device, "devices": devs or f"all visible ({n_dev})", "storage": storage,
                              "budget_gib": round(budget / GIB, 3),
                              "seconds": round(secs, 3),
                              "ratio_to_float16_gemm": round(secs / floors["float16"], 2),
                              "ratio_to_float32_gemm": round(secs / floors["float32"], 2)})
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        digests = {label: run_file_digest(i, s, ids, Path(tmp), label.replace(" ", "_")) for label, (i, s) in answers.items()}
        if len(set(digests.values())) > 1:
            ok = False
        report.add("search", {"check": "backends-same-bytes", "backends": sorted(digests),
                              "identical": len(set(digests.values())) <= 1})
        sample = min(args.cpu_sample, q)
        on_cpu = search(queries[:sample], [pool], k, tiebreak=tiebreak, device="cpu", memory_budget_bytes=args.budget_gb * GIB)
        cpu_digest = run_file_digest(*on_cpu, ids, Path(tmp), "cpu-sample")
        for label, (i, s) in answers.items():
            same = run_file_digest(i[:sample], s[:sample], ids, Path(tmp), "sample") == cpu_digest
            ok &= same
            report.add("search", {"check": "gpu-cpu-same-bytes", "backend": label, "queries": sample,
                                  "cpu_backend": "auto (cpu)", "identical": same})
    return ok


# --------------------------------------------------------------------------- 3. same bytes, tie-heavy


def tie_heavy_pool(rng: np.random.Generator, n: int, d: int, levels: int) -> np.ndarray:
    """Unit rows of coarse (quantised) vectors, a tenth of them copies of others at random positions."""
    x = np.round(rng.standard_normal((n, d)) * levels) / levels
    dup = rng.choice(n, n // 10, replace=False)
    x[dup] = x[rng.integers(0, n, dup.size)]
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x.astype(np.float32)


def same_bytes_part(report: Report, device: str, args: argparse.Namespace) -> bool:
    rng = np.random.default_rng(0)
    shapes = ((3000, 16, 40, 100, 2), (500, 8, 20, 500, 1)) if args.smoke else (
        (50_000, 64, 300, 1000, 2), (200_000, 384, 1000, 1000, 3), (200_000, 384, 1000, 10, 3), (1000, 32, 200, 1000, 1))
    devices = ["cpu"] if device == "cpu" else [device, "cpu"]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for n, d, q, k, levels in shapes:
            pool = tie_heavy_pool(rng, n, d, levels)
            queries = tie_heavy_pool(rng, q, d, levels)
            ids = [f"c{i:07d}" for i in range(n)]
            tiebreak = np.arange(n, dtype=np.int64)
            digests = {}
            for dev in devices:
                for name in usable(dev):
                    if name == "numpy" and n * q > 1e8:
                        continue
                    shards = ["cpu", "cpu", "cpu"] if name == "sharded" and dev == "cpu" else []
                    t = time.perf_counter()
                    idx, scores = search(queries, pool, k, tiebreak=tiebreak, backend=name, device=dev, devices=shards)
                    secs = time.perf_counter() - t
                    digests[f"{name}@{dev}"] = run_file_digest(idx, scores, ids, Path(tmp), f"{name}-{dev}")
            same = len(set(digests.values())) == 1
            ok &= same
            report.add("same_bytes", {"pool": [n, d], "queries": q, "k": k, "runs": sorted(digests),
                                      "identical": same, "seconds_last": round(secs, 3),
                                      **({} if same else {"digests": digests})})
    return ok


# --------------------------------------------------------------------------- main


def table(data: dict) -> str:
    """The report as an aligned text table."""
    lines = []
    for row in data["encode"]:
        scaled = row.get("items_per_s_full_depth_scaled")
        lines.append(("encode", f"{row['model']} {row['modality']} (batch {row['batch']})",
                      f"{row['items_per_s']} items/s" + (f" (32 layers ~{scaled})" if scaled else "")))
    for row in data["search"]:
        if row["check"] == "gemm-floor":
            lines.append(("search", f"GEMM floor {row['dtype']} {row['shape']}", f"{row['seconds']} s"))
        elif row["check"] == "search":
            lines.append(("search", f"{row['backend']} k={row['k']}",
                          f"{row['seconds']} s ({row['ratio_to_float16_gemm']}x f16 GEMM, "
                          f"{row['ratio_to_float32_gemm']}x f32 GEMM)"))
        else:
            lines.append(("search", f"{row['check']} {row.get('backend', '')}".strip(), str(row["identical"])))
    for row in data["same_bytes"]:
        lines.append(("same-bytes", f"pool {row['pool']} q={row['queries']} k={row['k']} ({len(row['runs'])} runs)",
                      str(row["identical"])))
    for err in data["errors"]:
        lines.append(("ERROR", err.splitlines()[0][:60], ""))
    w0, w1 = max((len(a) for a, _, _ in lines), default=4), max((len(b) for _, b, _ in lines), default=4)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="a .json file, or a folder for gpu_check.json (default: $OUT when set)")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, any device (the CPU test)")
    ap.add_argument("--device", default="auto", help="auto (cuda where torch sees one), cpu, cuda")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--pool", type=int, default=5_609_079)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--cpu-sample", type=int, default=200, help="queries searched on the CPU too (same bytes)")
    ap.add_argument("--budget-gb", type=int, default=4, help="block budget of the non-sharded backends and the CPU")
    ap.add_argument("--backends", type=lambda s: [b for b in s.split(",") if b], default=None,
                    help="search backends timed at size (default: every exact one usable on the device)")
    ap.add_argument("--mmembed-layers", type=int, default=32, help="LM layers of the MM-Embed-shaped model (of 32)")
    ap.add_argument("--mmembed-text-batch", type=int, default=64)
    ap.add_argument("--mmembed-image-batch", type=int, default=16)
    ap.add_argument("--text-tokens", type=int, default=64, help="LM tokens of a text item")
    ap.add_argument("--clip-batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (the fastest kept)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.pool, args.dim, args.queries, args.k, args.cpu_sample = 20_000, 32, 64, 100, 16
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA GPU (run with --smoke to check the script on the CPU)", file=sys.stderr)
        return 2
    if device == "cpu" and not args.smoke:
        print("no CUDA GPU: the full check needs one (--smoke runs tiny shapes on the CPU)", file=sys.stderr)
        return 2
    report = Report(out_path(args.out))
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if device != "cpu" else []
    report.data["meta"] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": device, "gpus": gpus,
                           "torch": torch.__version__, "cuda": torch.version.cuda, "smoke": args.smoke,
                           "faiss_gpu": "faiss-gpu" in usable("cuda") if device != "cpu" else False,
                           "args": vars(args)}
    print(json.dumps(report.data["meta"], default=str), flush=True)
    ok = True
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    t_all = time.perf_counter()
    for part, fn in (("encode", encode_part), ("search", search_part), ("same-bytes", same_bytes_part)):
        if part not in parts:
            continue
        t = time.perf_counter()
        try:
            result = fn(report, device, args)
            ok &= result is not False
        except Exception:                        # one part failing must not lose the others' figures
            if args.smoke:
                raise
            report.data["errors"].append(f"{part}: {traceback.format_exc()}")
            traceback.print_exc()
            ok = False
        report.data["meta"][f"seconds_{part}"] = round(time.perf_counter() - t, 1)
    report.data["meta"]["seconds_total"] = round(time.perf_counter() - t_all, 1)
    report.data["ok"] = bool(ok)
    report.save()
    print(table(report.data))
    print(f"total {report.data['meta']['seconds_total']} s; {'OK' if ok else 'FAILED'}"
          + (f"; JSON: {report.out}" if report.out else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
