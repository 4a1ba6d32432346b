"""The official MM-Embed state-dict layout (700 tensors, mmembed.md §3) and loading it by key name.

Shards are read from ``model.safetensors.index.json`` (or a single ``model.safetensors``), every
official key must be present and no other, shapes must match the module tree, and tensors are cast
to the requested dtype while loading. The module tree is built on the ``meta`` device and the
tensors are assigned (no second copy of 8 B parameters); the two non-persistent buffers (CLIP's
``position_ids`` and Mistral's rotary ``inv_freq``) are then rebuilt on the target device.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mmbench.errors import DataError, MmbenchError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# official name prefix -> module-tree prefix (transformers 5's CLIPVisionModel has no ``vision_model.``)
PREFIX_MAP = (("vision_tower.vision_model.", "vision_tower."),)

_VISION_LAYER = [f"self_attn.{p}.{w}" for p in ("k_proj", "v_proj", "q_proj", "out_proj") for w in ("weight", "bias")] + \
    [f"layer_norm1.{w}" for w in ("weight", "bias")] + [f"mlp.fc1.{w}" for w in ("weight", "bias")] + \
    [f"mlp.fc2.{w}" for w in ("weight", "bias")] + [f"layer_norm2.{w}" for w in ("weight", "bias")]
_TEXT_LAYER = [f"self_attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj", "o_proj")] + \
    [f"mlp.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")] + \
    ["input_layernorm.weight", "post_attention_layernorm.weight"]
_LATENT = ["latents", "cross_attend_blocks.0.norm.weight", "cross_attend_blocks.0.norm.bias",
           "cross_attend_blocks.0.norm_context.weight", "cross_attend_blocks.0.norm_context.bias",
           "cross_attend_blocks.0.fn.to_q.weight", "cross_attend_blocks.0.fn.to_kv.weight",
           "cross_attend_blocks.0.fn.to_out.weight", "cross_attend_blocks.1.norm.weight",
           "cross_attend_blocks.1.norm.bias", "cross_attend_blocks.1.fn.net.0.weight",
           "cross_attend_blocks.1.fn.net.0.bias", "cross_attend_blocks.1.fn.net.2.weight",
           "cross_attend_blocks.1.fn.net.2.bias"]


def official_keys(vision_layers: int = 24, text_layers: int = 32) -> list[str]:
    """The checkpoint's tensor names (700 with the real 24 vision / 32 LM layers)."""
    v = "vision_tower.vision_model."
    keys = ["image_newline"]
    keys += [f"multi_modal_projector.linear_{i}.{w}" for i in (1, 2) for w in ("weight", "bias")]
    keys += [v + "embeddings.class_embedding", v + "embeddings.patch_embedding.weight",
             v + "embeddings.position_embedding.weight", v + "pre_layrnorm.weight", v + "pre_layrnorm.bias",
             v + "post_layernorm.weight", v + "post_layernorm.bias"]
    keys += [f"{v}encoder.layers.{i}.{k}" for i in range(vision_layers) for k in _VISION_LAYER]
    keys += ["language_model.embed_tokens.weight", "language_model.norm.weight"]
    keys += [f"language_model.layers.{i}.{k}" for i in range(text_layers) for k in _TEXT_LAYER]
    keys += [f"latent_attention_model.{k}" for k in _LATENT]
    return keys


def to_module_key(key: str) -> str:
    for official, module in PREFIX_MAP:
        if key.startswith(official):
            return module + key[len(official):]
    return key


def to_official_key(key: str) -> str:
    for official, module in PREFIX_MAP:
        if key.startswith(module):
            return official + key[len(module):]
    return key


def shard_map(folder: Path) -> dict[str, str]:
    """key -> shard file name, from the index json or the single file."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            return dict(json.loads(index.read_text())["weight_map"])
        except (KeyError, json.JSONDecodeError) as exc:
            raise DataError(index, f"not a safetensors index ({exc})") from None
    single = folder / SINGLE_FILE
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as f:
            return {k: SINGLE_FILE for k in f.keys()}
    raise DataError(folder, f"no {INDEX_FILE} or {SINGLE_FILE} (expected MM-Embed's safetensors shards)")


def load_weights(model: torch.nn.Module, folder: Path, *, dtype: torch.dtype, device: str) -> dict[str, int]:
    """Assign every official tensor of ``folder`` to ``model`` (built on the meta device)."""
    from safetensors import safe_open

    wanted = {to_official_key(k): v for k, v in model.state_dict().items()}
    mapping = shard_map(folder)
    missing = sorted(set(wanted) - set(mapping))
    unexpected = sorted(set(mapping) - set(wanted))
    if missing or unexpected:
        raise MmbenchError(
            f"{folder}: the checkpoint does not have MM-Embed's key layout "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]})")
    by_shard: dict[str, list[str]] = {}
    for key, shard in mapping.items():
        by_shard.setdefault(shard, []).append(key)
    stored_dtypes: dict[str, int] = {}
    for shard, keys in sorted(by_shard.items()):
        path = folder / shard
        if not path.is_file():
            raise DataError(path, "safetensors shard named in the index is missing")
        state = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in keys:
                t = f.get_tensor(key)
                expected = tuple(wanted[key].shape)
                if tuple(t.shape) != expected:
                    raise MmbenchError(f"{path}: {key} has shape {tuple(t.shape)}, the configuration implies {expected}")
                stored_dtypes[str(t.dtype).removeprefix("torch.")] = stored_dtypes.get(str(t.dtype).removeprefix("torch."), 0) + 1
                state[to_module_key(key)] = t.to(device=device, dtype=dtype)
        model.load_state_dict(state, strict=False, assign=True)
        del state
    _rebuild_buffers(model, device)
    return stored_dtypes


def _rebuild_buffers(model, device: str) -> None:
    from transformers.models.mistral.modeling_mistral import MistralRotaryEmbedding

    emb = model.vision_tower.embeddings
    emb.register_buffer("position_ids", torch.arange(emb.num_positions, device=device).expand((1, -1)),
                        persistent=False)
    lm = model.language_model
    with torch.device("cpu"):
        rotary = MistralRotaryEmbedding(config=lm.config)
    lm.rotary_emb = rotary.to(device)
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:
        raise MmbenchError(f"MM-Embed: tensors left uninitialised after loading: {leftovers[:5]}")
