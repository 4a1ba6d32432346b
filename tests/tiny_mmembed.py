"""A tiny random-weight MM-Embed checkpoint in the official layout, for tests (no hub access).

Same files as the nvidia/MM-Embed repository — ``config.json`` (LLaVA-NeXT config with MM-Embed's
extra keys), ``generation_config.json``, ``preprocessor_config.json`` (LLaVA-NeXT's), ``tokenizer.json``
+ ``tokenizer_config.json`` (a Llama-style byte-fallback BPE with ``<image>``/``<pad>`` appended
after the LM vocabulary, as LLaVA's tokenizer appends 32000/32001), four fp16 safetensors shards and
``model.safetensors.index.json`` — with every one of the 700 official tensor names (24 CLIP layers,
32 Mistral layers) at tiny widths. The real vision geometry is kept (336 px, patch 14: 577 positions).
NV-Embed-v1's config (LM sizes, latent-attention settings) goes to a sibling folder, passed as the
adapter's ``retriever`` option (the original code's ``retriever=`` argument).

The shapes are written out here from mmembed.md §3, independently of the adapter's module tree.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

VISION = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 24,
          "image_size": 336, "patch_size": 14}
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 32, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 8}
LATENT = {"num_latents_value": 8, "num_cross_heads": 2, "cross_dim_head": 16, "latent_dim": 32, "hidden_dim": 32}

CORPUS = [
    "Instruct: Retrieve a Wikipedia paragraph that provides an answer to the given query about the image.",
    "Find me an everyday image that matches the given caption.",
    "Given a question, retrieve passages that answer the question",
    "Query: a red bus parked next to the old stone bridge over the river",
    "what is the name of this building and when was it built",
    "a small dog plays with a ball on the green grass in the park",
    "Identify the news-related image in line with the described event.",
    "The quick brown fox jumps over the lazy dog. Stamps, pictures and captions.",
]


def build_tokenizer(folder: Path) -> int:
    """Write ``tokenizer.json``/``tokenizer_config.json``; returns the LM vocabulary size (the rows of
    ``embed_tokens``): ``<image>`` and ``<pad>`` get the two ids after it."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer_tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=220, special_tokens=["<unk>", "<s>", "</s>"],
                                                                show_progress=False))
    model = json.loads(trainer_tok.to_str())["model"]
    trained = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for tok, _ in trained:
        if tok not in vocab:
            vocab[tok] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    # legacy Llama/Mistral tokenizer.json layout (llava-hf): normaliser prepends ▁ and maps spaces, no pre-tokeniser
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    lm_vocab = len(vocab)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tok.add_special_tokens([AddedToken("<image>", special=True, normalized=False),
                            AddedToken("<pad>", special=True, normalized=False)])
    assert tok.token_to_id("<image>") == lm_vocab and tok.token_to_id("<pad>") == lm_vocab + 1
    tok.save(str(folder / "tokenizer.json"))
    added = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True}
             for t, i in (("<unk>", 0), ("<s>", 1), ("</s>", 2), ("<image>", lm_vocab), ("<pad>", lm_vocab + 1))}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": added, "bos_token": "<s>",
        "clean_up_tokenization_spaces": False, "eos_token": "</s>", "legacy": True,
        "model_max_length": 1000000000000000019884624838656, "pad_token": "<pad>", "padding_side": "left",
        "processor_class": "LlavaNextProcessor", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>", "use_default_system_prompt": False}, indent=2, sort_keys=True) + "\n")
    return lm_vocab


def official_shapes(lm_vocab: int) -> dict[str, tuple[int, ...]]:
    """Every official tensor name → its shape at the tiny sizes (mmembed.md §3.1)."""
    v, t, lat = VISION, TEXT, LATENT
    vd, td = v["hidden_size"], t["hidden_size"]
    kv = t["num_key_value_heads"] * t["head_dim"]
    q = t["num_attention_heads"] * t["head_dim"]
    n_pos = (v["image_size"] // v["patch_size"]) ** 2 + 1
    inner = lat["num_cross_heads"] * lat["cross_dim_head"]
    s: dict[str, tuple[int, ...]] = {"image_newline": (td,),
                                     "multi_modal_projector.linear_1.weight": (td, vd),
                                     "multi_modal_projector.linear_1.bias": (td,),
                                     "multi_modal_projector.linear_2.weight": (td, td),
                                     "multi_modal_projector.linear_2.bias": (td,)}
    p = "vision_tower.vision_model."
    s.update({p + "embeddings.class_embedding": (vd,),
              p + "embeddings.patch_embedding.weight": (vd, 3, v["patch_size"], v["patch_size"]),
              p + "embeddings.position_embedding.weight": (n_pos, vd),
              p + "pre_layrnorm.weight": (vd,), p + "pre_layrnorm.bias": (vd,),
              p + "post_layernorm.weight": (vd,), p + "post_layernorm.bias": (vd,)})
    for i in range(v["num_hidden_layers"]):
        lp = f"{p}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[lp + f"self_attn.{proj}.weight"] = (vd, vd)
            s[lp + f"self_attn.{proj}.bias"] = (vd,)
        for ln in ("layer_norm1", "layer_norm2"):
            s[lp + f"{ln}.weight"] = (vd,)
            s[lp + f"{ln}.bias"] = (vd,)
        s[lp + "mlp.fc1.weight"], s[lp + "mlp.fc1.bias"] = (v["intermediate_size"], vd), (v["intermediate_size"],)
        s[lp + "mlp.fc2.weight"], s[lp + "mlp.fc2.bias"] = (vd, v["intermediate_size"]), (vd,)
    s["language_model.embed_tokens.weight"] = (lm_vocab, td)
    s["language_model.norm.weight"] = (td,)
    for i in range(t["num_hidden_layers"]):
        lp = f"language_model.layers.{i}."
        s[lp + "self_attn.q_proj.weight"] = (q, td)
        s[lp + "self_attn.k_proj.weight"] = (kv, td)
        s[lp + "self_attn.v_proj.weight"] = (kv, td)
        s[lp + "self_attn.o_proj.weight"] = (td, q)
        s[lp + "mlp.gate_proj.weight"] = (t["intermediate_size"], td)
        s[lp + "mlp.up_proj.weight"] = (t["intermediate_size"], td)
        s[lp + "mlp.down_proj.weight"] = (td, t["intermediate_size"])
        s[lp + "input_layernorm.weight"] = (td,)
        s[lp + "post_attention_layernorm.weight"] = (td,)
    la = "latent_attention_model."
    ld = lat["latent_dim"]
    s.update({la + "latents": (lat["num_latents_value"], ld),
              la + "cross_attend_blocks.0.norm.weight": (ld,), la + "cross_attend_blocks.0.norm.bias": (ld,),
              la + "cross_attend_blocks.0.norm_context.weight": (lat["hidden_dim"],),
              la + "cross_attend_blocks.0.norm_context.bias": (lat["hidden_dim"],),
              la + "cross_attend_blocks.0.fn.to_q.weight": (inner, ld),
              la + "cross_attend_blocks.0.fn.to_kv.weight": (2 * inner, lat["hidden_dim"]),
              la + "cross_attend_blocks.0.fn.to_out.weight": (ld, inner),
              la + "cross_attend_blocks.1.norm.weight": (ld,), la + "cross_attend_blocks.1.norm.bias": (ld,),
              la + "cross_attend_blocks.1.fn.net.0.weight": (ld * 8, ld),
              la + "cross_attend_blocks.1.fn.net.0.bias": (ld * 8,),
              la + "cross_attend_blocks.1.fn.net.2.weight": (ld, ld * 4),
              la + "cross_attend_blocks.1.fn.net.2.bias": (ld,)})
    return s


def _init(name: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    if name.endswith(("norm.weight", "layernorm.weight", "layrnorm.weight", "layer_norm1.weight",
                      "layer_norm2.weight", "norm_context.weight")):
        return 1.0 + 0.1 * torch.randn(shape, generator=g)
    if name.endswith(".bias"):
        return 0.02 * torch.randn(shape, generator=g)
    if name.endswith(("latents", "image_newline", "class_embedding", "embed_tokens.weight")):
        return torch.randn(shape, generator=g)
    fan_in = shape[1] if len(shape) == 2 else int(torch.tensor(shape[1:]).prod())
    return torch.randn(shape, generator=g) / fan_in ** 0.5


def mmembed_config(vision: dict) -> dict:
    """MM-Embed's config.json (main), with only vision_config's widths made tiny."""
    return {
        "_name_or_path": "nvidia/MM-Embed", "add_eos_token": True, "architectures": ["NVMMEmbedModel"],
        "auto_map": {"AutoModel": "modeling_nvmmembed.NVMMEmbedModel"}, "global_image_patch_only": True,
        "ignore_index": -100,
        "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        "image_token_index": None, "model_type": "llava_next", "padding_side": "right",
        "projector_hidden_act": "gelu", "retriever": "nvidia/NV-Embed-v1",
        "text_config": {"_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2", "architectures": ["MistralForCausalLM"],
                        "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
                        "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
                        "sliding_window": None, "torch_dtype": "bfloat16", "vocab_size": 32064},
        "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.42.4",
        "use_image_newline_parameter": True,
        "vision_config": {**vision, "model_type": "clip_vision_model", "projection_dim": 768, "vocab_size": 32000},
        "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064,
    }


PREPROCESSOR = {
    "aspect_ratio_setting": "anyres", "crop_size": {"height": 336, "width": 336}, "do_center_crop": True,
    "do_convert_rgb": True, "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
    "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "LlavaNextImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711], "processor_class": "LlavaNextProcessor", "resample": 3,
    "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 336},
}


def build_tiny_mmembed(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``root/MM-Embed`` (the checkpoint) and ``root/NV-Embed-v1`` (its retriever config);
    returns both folders."""
    from safetensors.torch import save_file

    folder, nv = root / "MM-Embed", root / "NV-Embed-v1"
    folder.mkdir(parents=True, exist_ok=True)
    nv.mkdir(parents=True, exist_ok=True)
    lm_vocab = build_tokenizer(folder)
    config = mmembed_config(VISION)
    config["image_token_index"] = lm_vocab
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / "generation_config.json").write_text(json.dumps(
        {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.42.4"}, indent=2) + "\n")
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2, sort_keys=True) + "\n")
    (nv / "config.json").write_text(json.dumps({
        "architectures": ["NVEmbedModel"], "model_type": "nvembed", "is_mask_instruction": True, "mask_type": "b",
        "padding_side": "right", "add_eos": True, "add_pad_token": True, "hidden_size": TEXT["hidden_size"],
        "latent_attention_config": {"model_type": "latent_attention", **LATENT},
        "text_config": {"architectures": ["MistralModel"], "model_type": "bidir_mistral", "hidden_act": "silu",
                        "max_position_embeddings": 32768, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
                        "vocab_size": lm_vocab, "bos_token_id": 1, "eos_token_id": 2, **TEXT},
    }, indent=2, sort_keys=True) + "\n")
    g = torch.Generator().manual_seed(seed)
    shapes = official_shapes(lm_vocab)
    names = list(shapes)
    shards = [names[i::4] for i in range(4)]
    weight_map, total = {}, 0
    for n, keys in enumerate(shards, start=1):
        fname = f"model-{n:05d}-of-00004.safetensors"
        tensors = {k: _init(k, shapes[k], g).to(torch.float16).contiguous() for k in keys}
        save_file(tensors, str(folder / fname), metadata={"format": "pt"})
        for k, t in tensors.items():
            weight_map[k] = fname
            total += t.numel() * t.element_size()
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n")
    return folder, nv
