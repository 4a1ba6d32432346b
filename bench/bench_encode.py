"""Encode throughput (items/s) of a model adapter -- CLIP ViT-L/14 by default -- on text and on images.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_encode.py [--model clip-vit-l-14] [--path FOLDER-OR-HUB-ID]
        [--random-weights] [--n-texts 128] [--n-images 16] [--batch-size 16] [--device auto|cpu|cuda]
        [--precision auto|fp32|bf16|fp16] [--num-workers N] [--texts auto|glosses|captions|synthetic]

What is measured: the wall time (``time.perf_counter``) of one ``encoder.encode(items, role="candidate",
batch_size=...)`` call over ``--n-texts`` text items, and of one over ``--n-images`` image items, after one
warm-up batch of each, through the harness's own adapter (``meta.loader`` with ``meta.options``), so the
figures include everything a run pays per item: tokenisation and length sorting, image decoding and
preprocessing (``CLIPImageProcessor``) in the adapter's DataLoader workers (their start-up included: the
adapter starts them on every ``encode`` call, and the harness calls it once per cache chunk, 4096 items by default),
host-to-device copies, the towers under the adapter's autocast, and the float32 copy back. Model loading
(and, with ``--random-weights``, building the checkpoint) is timed separately and not in the rates.

Data, all offline:

* texts (``--texts auto``): WordNet glosses (``wordnet-base``, ~14 BERT tokens each, about the length of a
  COCO caption), else the English Tux Paint stamp captions (``tuxpaint-stamps-default``, ~8 tokens), else
  deterministic synthetic sentences of 5-30 words; spread evenly over the source, repeated if too few;
* images: the Tux Paint stamp PNGs (/usr/share/tuxpaint/stamps, 800 files of ~100-500 px, most RGBA
  composited on white by ``ImageRef.load``), as ``ImageRef`` items decoded by the adapter; repeated if
  more are asked for; generated PNGs of 160-480 px when the package is absent.

``--random-weights`` (clip-vit-b-32 or clip-vit-l-14) builds, in a temporary folder, a ``CLIPModel`` with the
real architecture of that checkpoint (the config of openai/clip-vit-base-patch32 or
openai/clip-vit-large-patch14: widths, depths, heads, patch, 224 px, 77 positions, vocabulary 49408,
projection) and random weights, the BERT WordPiece tokenizer of the offline MiniLM package (its ids are
< 30522, inside CLIP's vocabulary; its token counts are of the same order as CLIP's BPE for English) and a
``CLIPImageProcessor`` (shortest edge 224, centre crop 224, OpenAI mean/std, bicubic). Throughput does not
depend on the weight values, so this measures the real model's cost without the hub. Its parameter count
is printed next to the catalog's.

Sizes: the defaults (128 texts, 16 images, batch 16) are sized for a 2-core CPU with random ViT-L/14
(its timings: docs/perf.md, "Encoding throughput"); the time grows linearly with the items. On a GPU
use e.g. ``--n-texts 4096
--n-images 2048 --batch-size 256``, and try ``--num-workers`` up to the free cores: the adapter's
automatic choice is at most 4 decoding processes, which may not keep up with a fast GPU. On CUDA the GPU
name, the weights' memory and the peak memory
(``torch.cuda.max_memory_allocated``, reset before each pass) are printed. Nothing is asserted about the
timings. The machine's load average is printed before and after: on a shared CPU box, competing
processes slow small batches down disproportionately (``--repeats`` keeps the fastest of several passes).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "harness"))

STAMPS_ROOT = Path("/usr/share/tuxpaint/stamps")

# transformers CLIPConfig of the OpenAI checkpoints (hub config.json of openai/clip-vit-base-patch32 and
# openai/clip-vit-large-patch14); both: quick_gelu, layer_norm_eps 1e-5, 77 positions, vocab 49408, 224 px.
CLIP_ARCHS = {
    "clip-vit-b-32": dict(
        text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    patch_size=32),
        projection_dim=512),
    "clip-vit-l-14": dict(
        text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    patch_size=14),
        projection_dim=768),
}
CLIP_COMMON_TEXT = dict(vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5)
CLIP_COMMON_VISION = dict(image_size=224, num_channels=3, hidden_act="quick_gelu", layer_norm_eps=1e-5)

_WORDS = ("a photo of the small red large dog cat man woman child car street table plate food tree house "
          "sitting standing next to on in with near holding two three white black blue green old young "
          "field water beach city room kitchen window bicycle train bus sign park snow grass wooden").split()


def parse_args() -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="clip-vit-l-14", help="catalog model name (or clip:<folder-or-hub-id>)")
    p.add_argument("--path", default=None, help="local folder or hub id (default: the catalog's)")
    p.add_argument("--random-weights", action="store_true",
                   help=f"build a random-weight checkpoint of the real architecture ({', '.join(CLIP_ARCHS)})")
    p.add_argument("--n-texts", type=int, default=128, help="text items timed (GPU: e.g. 4096)")
    p.add_argument("--n-images", type=int, default=16, help="image items timed (GPU: e.g. 2048)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="the adapter's precision option (autocast on CUDA; CPU always runs float32)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="image-decoding workers (default: the adapter's automatic choice)")
    p.add_argument("--texts", default="auto", choices=("auto", "glosses", "captions", "synthetic"))
    p.add_argument("--repeats", type=int, default=1,
                   help="timed passes per modality after the warm-up; the fastest is kept (noisy machines)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


# -- data ----------------------------------------------------------------------------------------------------


def spread(pool: list, n: int) -> list:
    """``n`` elements spread evenly over ``pool`` (cycled when ``n`` exceeds it), order kept."""
    if not pool or n <= 0:
        return []
    if n <= len(pool):
        return [pool[i * len(pool) // n] for i in range(n)]
    return [pool[i % len(pool)] for i in range(n)]


def synthetic_sentences(n: int, seed: int) -> list[str]:
    """Deterministic caption-like sentences of 5-30 words."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = rng.choice(_WORDS, size=int(rng.integers(5, 31)))
        s = " ".join(words)
        out.append(s[0].upper() + s[1:] + ".")
    return out


def load_texts(kind: str, n: int, seed: int) -> tuple[list[str], str]:
    """(texts, description of their source)."""
    from mmbench.errors import DataError

    if kind in ("auto", "glosses"):
        try:
            from mmbench.data.builders.text_tasks import parse_wordnet

            glosses = [s.definition for s in parse_wordnet() if s.definition]
            return spread(glosses, n), f"WordNet glosses ({len(glosses)} available)"
        except DataError:
            if kind == "glosses":
                raise
    if kind in ("auto", "captions"):
        try:
            from mmbench.data.builders.mini import scan_stamps

            captions = [s.caption for s in scan_stamps(STAMPS_ROOT)]
            if captions:
                return spread(captions, n), f"Tux Paint captions ({len(captions)} available)"
        except DataError:
            if kind == "captions":
                raise
    return synthetic_sentences(n, seed), "synthetic sentences (5-30 words)"


def load_image_refs(n: int, seed: int, scratch: Path) -> tuple[list, str]:
    """(ImageRef list, description): Tux Paint stamp PNGs, else generated PNGs written under ``scratch``."""
    import numpy as np

    from mmbench.data.types import ImageRef

    pngs = sorted(p for p in STAMPS_ROOT.rglob("*.png") if p.is_file()) if STAMPS_ROOT.is_dir() else []
    if pngs:
        return [ImageRef(p) for p in spread(pngs, n)], f"Tux Paint stamp PNGs ({len(pngs)} files)"
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = scratch / "images"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(min(n, 256)):
        h, w = (int(v) for v in rng.integers(160, 481, size=2))
        base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)   # blocky, compressible
        im = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)
        paths.append(folder / f"{k:04d}.png")
        im.save(paths[-1])
    return [ImageRef(p) for p in spread(paths, n)], f"generated PNGs ({len(paths)} files, 160-480 px)"


# -- model ---------------------------------------------------------------------------------------------------


def build_random_clip(name: str, folder: Path, seed: int) -> int:
    """Save a random-weight CLIPModel of ``name``'s real architecture, an offline tokenizer and a
    CLIPImageProcessor into ``folder``; returns the parameter count."""
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    from mmbench.models.minilm import package_model_path

    arch = CLIP_ARCHS[name]
    tokenizer = AutoTokenizer.from_pretrained(package_model_path(), local_files_only=True)   # BERT WordPiece
    if len(tokenizer) > CLIP_COMMON_TEXT["vocab_size"]:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} ids, more than CLIP's vocabulary")
    config = CLIPConfig(
        text_config=dict(arch["text"], **CLIP_COMMON_TEXT, projection_dim=arch["projection_dim"],
                         bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                         pad_token_id=tokenizer.pad_token_id),     # pooling at the tokenizer's end token
        vision_config=dict(arch["vision"], **CLIP_COMMON_VISION, projection_dim=arch["projection_dim"]),
        projection_dim=arch["projection_dim"], logit_scale_init_value=2.6592,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    del model
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(folder)
    return n_params


def load_encoder(meta, path: str | None, args: argparse.Namespace):
    """The harness's adapter for ``meta`` (its loader, its options, the overrides given here)."""
    from mmbench.registry import import_target

    options = {**meta.options, "device": args.device}
    if path:
        options["path"] = path
    if args.precision != "auto":
        options["precision"] = args.precision
    if args.num_workers is not None:
        options["num_workers"] = args.num_workers
    try:
        return import_target(meta.loader)(meta, **options)
    except TypeError as exc:
        if "unexpected keyword" not in str(exc):
            raise
        raise SystemExit(f"model {meta.name!r}: its loader does not take these options ({exc})") from None
    except OSError as exc:
        raise SystemExit(f"cannot load {path!r} ({exc}); offline without the weights, try --random-weights") from None


# -- timing --------------------------------------------------------------------------------------------------


def cuda_device(encoder) -> str | None:
    device = str(getattr(encoder, "device", ""))
    return device if device.startswith("cuda") else None


def timed_pass(encoder, items: list, batch_size: int, cuda: str | None,
               repeats: int = 1) -> tuple[float, float | None]:
    """(seconds of one encode(role="candidate") over ``items`` -- the fastest of ``repeats`` --, peak CUDA GiB
    or None), after one warm-up batch."""
    import torch

    encoder.encode(items[:batch_size], role="candidate", batch_size=batch_size)      # warm-up batch
    if cuda:
        torch.cuda.synchronize(cuda)
        torch.cuda.reset_peak_memory_stats(cuda)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = encoder.encode(items, role="candidate", batch_size=batch_size)
        if cuda:
            torch.cuda.synchronize(cuda)
        times.append(time.perf_counter() - t0)
        assert out.shape[0] == len(items)
    peak = torch.cuda.max_memory_allocated(cuda) / 2**30 if cuda else None
    return min(times), peak


def mean_tokens(encoder, texts: list[str]) -> str:
    tok, max_len = getattr(encoder, "tokenizer", None), getattr(encoder, "max_length", None)
    if tok is None or not texts:
        return "-"
    kwargs = dict(truncation=True, max_length=max_len) if max_len else {}
    lengths = [len(ids) for ids in tok(texts, **kwargs)["input_ids"]]
    return f"{sum(lengths) / len(lengths):.1f} tok"


def main() -> None:
    """Load the adapter, time a text pass and an image pass, print the table."""
    import torch

    from mmbench import catalog
    from mmbench.data.types import Item
    from mmbench.models.batching import default_workers

    args = parse_args()
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()      # no "Loading weights" bars in the printed table
    except ImportError:
        pass
    meta = catalog.get_model(args.model)
    if args.random_weights and args.model not in CLIP_ARCHS:
        raise SystemExit(f"--random-weights knows {', '.join(CLIP_ARCHS)}, not {args.model!r}")
    if args.random_weights and args.path:
        raise SystemExit("--random-weights builds its own checkpoint: drop --path")
    scratch = Path(tempfile.mkdtemp(prefix="bench_encode_"))
    try:
        build_s, n_params = 0.0, None
        if args.random_weights:
            t0 = time.perf_counter()
            path = str(scratch / "checkpoint")
            n_params = build_random_clip(args.model, Path(path), args.seed)
            build_s = time.perf_counter() - t0
        else:
            path = args.path or meta.options.get("path")    # None: the loader's own default (e.g. minilm)
        t0 = time.perf_counter()
        encoder = load_encoder(meta, path, args)
        load_s = time.perf_counter() - t0
        model = getattr(encoder, "model", None)
        if n_params is None and isinstance(model, torch.nn.Module):
            n_params = sum(p.numel() for p in model.parameters())

        cuda = cuda_device(encoder)
        device = str(getattr(encoder, "device", args.device))
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}"
              + (f" ({torch.cuda.get_device_name(cuda)})" if cuda else ""))
        source = "random weights, real architecture" if args.random_weights else (path or "its default")
        print(f"model {meta.name} from {source}; parameters {n_params if n_params is None else f'{n_params:,}'}"
              f" (catalog: {meta.n_parameters if meta.n_parameters is None else f'{meta.n_parameters:,}'})")
        print("load average at start: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
        print(f"build {build_s:.1f} s, load {load_s:.1f} s"
              + (f", weights on GPU {torch.cuda.memory_allocated(cuda) / 2**30:.2f} GiB" if cuda else ""))
        settings = encoder.settings() if hasattr(encoder, "settings") else {}
        autocast = settings.get("autocast", "off")
        precision = "fp32" if autocast in ("off", None) else f"{autocast} autocast"
        if args.precision != "auto" and not cuda and args.precision != "fp32":
            precision += f" ({args.precision} asked; CPU runs float32)"

        rows = []
        if "text" in meta.modalities and args.n_texts > 0:
            texts, text_src = load_texts(args.texts, args.n_texts, args.seed)
            print(f"texts: {text_src}")
            items = [Item(f"t{k}", "text", t) for k, t in enumerate(texts)]
            seconds, peak = timed_pass(encoder, items, args.batch_size, cuda, args.repeats)
            rows.append(("text", "-", len(items), seconds, peak, mean_tokens(encoder, texts)))
        if "image" in meta.modalities and args.n_images > 0:
            refs, image_src = load_image_refs(args.n_images, args.seed, scratch)
            print(f"images: {image_src}")
            items = [Item(f"i{k}", "image", image=r) for k, r in enumerate(refs)]
            workers = (str(args.num_workers) if args.num_workers is not None
                       else f"auto={default_workers(len(items), args.batch_size)}")
            seconds, peak = timed_pass(encoder, items, args.batch_size, cuda, args.repeats)
            crop = settings.get("center_crop") or settings.get("image_size") or {}
            rows.append(("image", workers, len(items), seconds, peak,
                         f"{crop.get('height', '?')}x{crop.get('width', '?')} px" if crop else "-"))

        print()
        print("| model | device | precision | batch | workers | modality | items | input | seconds | items/s"
              " | peak GiB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for modality, workers, n, seconds, peak, what in rows:
            print(f"| {meta.name} | {device} | {precision} | {args.batch_size} | {workers} | {modality} | {n}"
                  f" | {what} | {seconds:.2f} | {n / seconds:.1f} | {'-' if peak is None else f'{peak:.2f}'} |")
        print("load average at end: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
