"""Configuration of an MM-Embed checkpoint: its own ``config.json`` plus NV-Embed-v1's LM and pooler.

MM-Embed's ``config.json`` is a plain ``LlavaNextConfig`` whose ``text_config`` describes LLaVA's
Mistral-7B-Instruct-v0.2 and is discarded by the original code: the language model and the
latent-attention pooler come from the NV-Embed-v1 config named by ``config.retriever``
(``mmembed.md`` §2). NV-Embed-v1's config is not in the MM-Embed repo, so its values are built in
(:data:`NV_EMBED_V1_TEXT`, :data:`LATENT_ATTENTION_DEFAULTS`); a local NV-Embed config folder (the
``retriever`` option, or a ``retriever`` field that names a local folder) overrides them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmbench.errors import DataError

# NV-Embed-v1 = Mistral-7B-v0.1 backbone, bidirectional (mmembed.md §2.3). rope θ and vocab are
# derived there (not read from NV-Embed-v1's file); the shapes are checked against the shards.
NV_EMBED_V1_TEXT: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "vocab_size": 32000,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

# NV-Embed LatentAttentionConfig defaults (NV-Embed-v1 sets only model_type) — mmembed.md §2.4.
LATENT_ATTENTION_DEFAULTS: dict[str, Any] = {
    "num_latents_value": 512,
    "num_cross_heads": 8,
    "cross_dim_head": 4096,
    "latent_dim": 4096,
    "hidden_dim": 4096,
    "output_normalize": True,
}

# CLIP vision defaults that MM-Embed's vision_config omits (transformers CLIPVisionConfig defaults).
CLIP_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "num_channels": 3,
}


@dataclass
class MMEmbedConfig:
    """Everything the native module tree and the processor need."""

    vision: dict[str, Any]
    text: dict[str, Any]
    latent: dict[str, Any]
    image_token_index: int = 32000
    vision_feature_layer: int = -2
    vision_feature_select_strategy: str = "default"
    projector_hidden_act: str = "gelu"
    padding_side: str = "right"
    add_eos_token: bool = True
    global_image_patch_only: bool = True
    retriever: str = "nvidia/NV-Embed-v1"
    text_source: str = "built-in NV-Embed-v1 values"
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return int(self.vision["image_size"])

    @property
    def patches_per_image(self) -> int:
        return (self.image_size // int(self.vision["patch_size"])) ** 2

    @property
    def tokens_per_image(self) -> int:
        """Positions one image occupies in the LM: its patch features (CLS dropped) + ``image_newline``."""
        n = self.patches_per_image
        if self.vision_feature_select_strategy == "full":
            n += 1
        return n + 1


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"invalid JSON ({exc})") from None


def _nvembed_folder(retriever: str | Path | None) -> Path | None:
    if retriever is None:
        return None
    p = Path(retriever).expanduser()
    return p if (p / "config.json").is_file() else None


def read_config(folder: Path, retriever: str | Path | None = None) -> MMEmbedConfig:
    """Parse ``folder/config.json``; the LM/pooler settings come from ``retriever`` (an NV-Embed
    config folder) when given, else from ``config.retriever`` if that names a local folder, else the
    built-in NV-Embed-v1 values."""
    path = folder / "config.json"
    raw = _read_json(path)
    if "vision_config" not in raw:
        raise DataError(path, "not an MM-Embed config (no vision_config)")
    vision = {**CLIP_VISION_DEFAULTS, **raw["vision_config"]}
    text = dict(NV_EMBED_V1_TEXT)
    latent = dict(LATENT_ATTENTION_DEFAULTS)
    source = "built-in NV-Embed-v1 values"
    nv = _nvembed_folder(retriever) or _nvembed_folder(raw.get("retriever"))
    if retriever is not None and nv is None:
        raise DataError(Path(str(retriever)), "retriever: expected a folder with NV-Embed's config.json")
    if nv is not None:
        nv_raw = _read_json(nv / "config.json")
        tc = dict(nv_raw.get("text_config") or {})
        if "rope_parameters" in tc and "rope_theta" not in tc:
            tc["rope_theta"] = tc["rope_parameters"].get("rope_theta")
        text.update({k: v for k, v in tc.items() if k in NV_EMBED_V1_TEXT and v is not None})
        if tc.get("head_dim"):
            text["head_dim"] = tc["head_dim"]
        latent.update({k: v for k, v in (nv_raw.get("latent_attention_config") or {}).items()
                       if k in LATENT_ATTENTION_DEFAULTS})
        source = str(nv / "config.json")
    return MMEmbedConfig(
        vision=vision,
        text=text,
        latent=latent,
        image_token_index=int(raw.get("image_token_index", 32000)),
        vision_feature_layer=int(raw.get("vision_feature_layer", -2)),
        vision_feature_select_strategy=raw.get("vision_feature_select_strategy", "default"),
        projector_hidden_act=raw.get("projector_hidden_act", "gelu"),
        padding_side=raw.get("padding_side", "right"),
        add_eos_token=bool(raw.get("add_eos_token", True)),
        global_image_patch_only=bool(raw.get("global_image_patch_only", True)),
        retriever=str(raw.get("retriever", "nvidia/NV-Embed-v1")),
        text_source=source,
        raw=raw,
    )
