"""UniIR's released retrievers loaded from their own ``.pth`` files (TIGER-Lab/UniIR on the hub).

A UniIR checkpoint is ``torch.save({"model": state_dict, ...})`` of UniIR's training module:

* **CLIP_SF** (``clip_sf_large.pth``): ``CLIPScoreFusion`` wraps OpenAI's CLIP as ``clip_model``, so keys
  are ``clip_model.`` + OpenAI CLIP's names (``visual.conv1.weight``, ``transformer.resblocks.N.attn.in_proj_weight``...).
  They are mapped onto transformers' ``CLIPModel`` (the config is read off the tensor shapes, as
  OpenAI's ``build_model`` does). Image+text items: UniIR's ``encode_multimodal_input`` multiplies
  each *raw* projected embedding by a 0/1 presence mask and sums them; its indexer and retriever then
  ``faiss.normalize_L2`` every embedding. So the embedding is ``normalize(text + image)`` over the raw
  embeddings, not the sum of unit embeddings of the zero-shot models (``fusion="raw-sum"`` in
  :class:`~mmbench.models.base.FusionEncoder`); the two differ whenever the two norms do.
* **BLIP_FF** (``blip_ff_large.pth``): ``BLIPFeatureFusion`` = a BLIP ViT (``visual_encoder.``, timm
  layout) and BLIP's BERT with cross-attention in every layer (``text_encoder.``, the ``med.py`` layout,
  which is transformers' ``BlipTextModel`` layout). Every item, whatever its modality, is encoded as
  ``text_encoder(tokens(text or ""), cross-attending to ViT(image or a zero pixel tensor)).pooler_output``
  (768-d): UniIR's collator substitutes "" for a missing text and ``zeros(3, 224, 224)`` (after
  normalisation) for a missing image, and BLIP_FF ignores the presence masks. Momentum encoders and
  queues in the file are dropped.

Query text is UniIR's ``format_string(f"{instruction} {query}")`` (``uses_instructions``).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmbench.errors import DataError
from mmbench.models.base import FusionEncoder, ModelMeta, Role, l2_normalize
from mmbench.models.batching import OomGuard, image_batches, length_order
from mmbench.models.clip import ClipEncoder
from mmbench.models.loading import hf_source, snapshot_commit

UNIIR_REPO = "TIGER-Lab/UniIR"
CLIP_VIT_L_14 = "openai/clip-vit-large-patch14"     # tokenizer + image processor of CLIP_SF-Large
BLIP_TOKENIZER = "bert-base-uncased"                 # + [DEC] and [ENC], as BLIP's init_tokenizer()
BLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
BLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# -- checkpoint files ----------------------------------------------------------------------------------

def resolve_checkpoint(path: str, filename: str) -> Path:
    """A ``.pth`` file, a folder holding ``filename`` (searched recursively), or a hub repo id (e.g. TIGER-Lab/UniIR)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        hits = sorted(p.rglob(filename))
        if not hits:
            raise DataError(p, f"no {filename} under this folder")
        return hits[0]
    if path.startswith(("/", ".", "~")):
        raise DataError(p, f"UniIR checkpoint not found (expected {filename} or a folder holding it)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    _, offline = hf_source(path)
    try:
        folder = Path(snapshot_download(path, allow_patterns=[filename, f"**/{filename}"], local_files_only=offline))
    except LocalEntryNotFoundError:
        raise DataError(path, f"{filename} is not in the local Hugging Face cache and the hub is offline: on a "
                              f"connected machine run `hf download {path} --include '*{filename}'`, "
                              f"or pass the .pth file or a folder holding it as the model's path") from None
    return resolve_checkpoint(str(folder), filename)


class _Opaque:
    """Stands in for a class a checkpoint names but that is not needed for its weights (UniIR saves its
    OmegaConf training config next to the model): constructed and filled without running any of its
    code, so it holds nothing."""

    global_name = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Opaque:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<not loaded: {self.global_name}>"


def _opaque(name: str) -> tuple[type, str]:
    return type("Opaque", (_Opaque,), {"global_name": name}), name


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The ``"model"`` state dict of a UniIR ``.pth``, read with torch's weights-only unpickler.

    UniIR's ``save_checkpoint`` stores more than tensors (``"config"``: an OmegaConf object, next to
    the optimizer and scheduler states). Those classes are not unpickled: each global the file names
    beyond torch's allowed set becomes an empty placeholder (:class:`_Opaque`), so nothing of the
    file's code runs and ``omegaconf`` need not be installed. A file that names a blocked global
    (``os.system`` and the like) is refused.
    """
    from torch import serialization

    def load() -> Any:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)

    try:
        try:
            ckpt = load()
        except pickle.UnpicklingError as exc:
            if "global" not in str(exc).lower():
                raise
            extra = serialization.get_unsafe_globals_in_checkpoint(path)
            with serialization.safe_globals([_opaque(name) for name in extra]):
                ckpt = load()
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        why = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else type(exc).__name__)
        raise DataError(path, f"cannot read checkpoint with torch's weights-only unpickler: {why}") from None
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(path, "not a UniIR checkpoint (expected a dict with a 'model' state dict)")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# -- CLIP_SF: OpenAI CLIP layout -> transformers CLIPModel --------------------------------------------------

_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
          "attn.out_proj": "self_attn.out_proj"}


def _count_blocks(state: dict, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


def openai_clip_config(state: dict[str, torch.Tensor], *, eos_token_id: int, pad_token_id: int = 0,
                       bos_token_id: int | None = None):
    """A ``CLIPConfig`` from an OpenAI-layout state dict (shapes as in OpenAI's ``build_model``; heads = width // 64)."""
    from transformers import CLIPConfig

    v_width = state["visual.conv1.weight"].shape[0]
    patch = state["visual.conv1.weight"].shape[-1]
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    t_width = state["ln_final.weight"].shape[0]
    return CLIPConfig(
        text_config=dict(
            hidden_size=t_width, intermediate_size=4 * t_width, num_attention_heads=max(1, t_width // 64),
            num_hidden_layers=_count_blocks(state, "transformer.resblocks."),
            vocab_size=state["token_embedding.weight"].shape[0],
            max_position_embeddings=state["positional_embedding"].shape[0],
            hidden_act="quick_gelu", eos_token_id=eos_token_id, pad_token_id=pad_token_id,
            bos_token_id=bos_token_id if bos_token_id is not None else eos_token_id - 1,
        ),
        vision_config=dict(
            hidden_size=v_width, intermediate_size=4 * v_width, num_attention_heads=max(1, v_width // 64),
            num_hidden_layers=_count_blocks(state, "visual.transformer.resblocks."),
            patch_size=patch, image_size=patch * grid, hidden_act="quick_gelu",
        ),
        projection_dim=state["text_projection"].shape[1],
    )


def _convert_blocks(state: dict, src: str, dst: str, out: dict) -> None:
    for key, value in state.items():
        if not key.startswith(src):
            continue
        n, rest = key[len(src):].split(".", 1)
        base = f"{dst}{n}."
        if rest.startswith("attn.in_proj_"):
            kind = rest.rsplit("_", 1)[1]              # weight | bias
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{base}self_attn.{name}.{kind}"] = part
            continue
        for old, new in _BLOCK.items():
            if rest.startswith(old + "."):
                out[base + new + rest[len(old):]] = value
                break
        else:
            raise KeyError(f"unexpected CLIP block parameter {key!r}")


def openai_clip_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI CLIP parameter names -> transformers ``CLIPModel`` names (q/k/v split, projections transposed)."""
    out = {
        "logit_scale": state["logit_scale"],
        "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
        "text_model.final_layer_norm.weight": state["ln_final.weight"],
        "text_model.final_layer_norm.bias": state["ln_final.bias"],
        "text_projection.weight": state["text_projection"].t().contiguous(),
        "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": state["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": state["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": state["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": state["visual.ln_post.bias"],
        "visual_projection.weight": state["visual.proj"].t().contiguous(),
    }
    _convert_blocks(state, "transformer.resblocks.", "text_model.encoder.layers.", out)
    _convert_blocks(state, "visual.transformer.resblocks.", "vision_model.encoder.layers.", out)
    return out


def _load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Every parameter, and nothing else, except ``position_ids``: BLIP's ``med.py`` saves that
    buffer (``arange(max_positions)``) with the weights, transformers rebuilds it unsaved."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    unexpected = [k for k in result.unexpected_keys if not k.endswith("position_ids")]
    if missing or unexpected:
        raise DataError(source, f"checkpoint does not match the architecture: missing {missing[:5]}, "
                                f"unexpected {unexpected[:5]}")


class UniirClipSF(ClipEncoder):
    """UniIR CLIP_SF. ``options``: ``path`` (.pth, folder or hub repo), ``processor`` (tokenizer + image
    processor: hub id or folder; OpenAI CLIP ViT-L/14's), ``filename``, ``device``, ``precision``, ``num_workers``."""

    def __init__(self, meta: ModelMeta, *, path: str = UNIIR_REPO, processor: str = CLIP_VIT_L_14,
                 filename: str = "clip_sf_large.pth", device: str = "auto", precision: str = "auto",
                 num_workers: int | None = None):
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        self._setup(meta, path, device, precision, num_workers)
        name, local = hf_source(processor)
        self.tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local)
        self.image_processor = CLIPImageProcessor.from_pretrained(name, local_files_only=local)
        self.checkpoint = resolve_checkpoint(path, filename)
        state = sub_state(read_state_dict(self.checkpoint), "clip_model.")
        if "visual.conv1.weight" not in state:
            raise DataError(self.checkpoint, "no 'clip_model.visual.*' weights: not a UniIR CLIP_SF checkpoint")
        eos = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else self.tokenizer.sep_token_id
        config = openai_clip_config(state, eos_token_id=eos, pad_token_id=self.tokenizer.pad_token_id or 0,
                                    bos_token_id=self.tokenizer.bos_token_id or self.tokenizer.cls_token_id)
        model = CLIPModel(config)
        _load_strict(model, openai_clip_to_transformers(state), self.checkpoint)
        self.model = model.eval().to(self.device)
        self.max_length = config.text_config.max_position_embeddings    # 77, UniIR: context_length=77, truncate=True

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "checkpoint": self.checkpoint.name,
                "checkpoint_commit": snapshot_commit(self.checkpoint), "fusion": "raw-sum (normalize(text + image), raw projected embeddings)"}


# -- BLIP_FF: BLIP ViT (timm layout) + BERT with cross-attention (med.py layout) ----------------------------

_VIT = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
        "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def blip_vit_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BLIP's ``visual_encoder.`` (timm ViT names) -> transformers ``BlipVisionModel`` names."""
    out = {
        "embeddings.class_embedding": state["cls_token"],
        "embeddings.position_embedding": state["pos_embed"],
        "embeddings.patch_embedding.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embedding.bias": state["patch_embed.proj.bias"],
        "post_layernorm.weight": state["norm.weight"],
        "post_layernorm.bias": state["norm.bias"],
    }
    for key, value in state.items():
        if not key.startswith("blocks."):
            continue
        n, rest = key[len("blocks."):].split(".", 1)
        for old, new in _VIT.items():
            if rest.startswith(old + "."):
                out[f"encoder.layers.{n}.{new}{rest[len(old):]}"] = value
                break
        else:
            raise KeyError(f"unexpected BLIP ViT parameter {key!r}")
    return out


def blip_ff_configs(vit: dict[str, torch.Tensor], text: dict[str, torch.Tensor]):
    """(BlipVisionConfig, BlipTextConfig) read off the shapes; ViT heads = width // 64 (BLIP: 12 base, 16 large)."""
    from transformers import BlipTextConfig, BlipVisionConfig

    width, _, patch, _ = vit["patch_embed.proj.weight"].shape
    grid = round((vit["pos_embed"].shape[1] - 1) ** 0.5)
    vision = BlipVisionConfig(
        hidden_size=width, intermediate_size=vit["blocks.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=_count_blocks(vit, "blocks."), num_attention_heads=max(1, width // 64),
        patch_size=patch, image_size=patch * grid, layer_norm_eps=1e-6, hidden_act="gelu",
    )
    hidden = text["embeddings.word_embeddings.weight"].shape[1]
    textc = BlipTextConfig(
        vocab_size=text["embeddings.word_embeddings.weight"].shape[0], hidden_size=hidden,
        encoder_hidden_size=width, intermediate_size=text["encoder.layer.0.intermediate.dense.weight"].shape[0],
        num_hidden_layers=_count_blocks(text, "encoder.layer."), num_attention_heads=max(1, hidden // 64),
        max_position_embeddings=text["embeddings.position_embeddings.weight"].shape[0],
        layer_norm_eps=1e-12, hidden_act="gelu",
    )
    return vision, textc


class _NoImage:
    def load(self) -> None:
        return None


_NO_IMAGE = _NoImage()


class UniirBlipFF(FusionEncoder):
    """UniIR BLIP_FF (feature fusion). ``options``: ``path`` (.pth, folder or hub repo), ``tokenizer`` (hub
    id or folder; bert-base-uncased, to which BLIP's [DEC]/[ENC] are added), ``filename``, ``device``,
    ``precision``, ``num_workers``, ``max_length`` (100, UniIR's ``tokenizer_max_length``)."""

    def __init__(self, meta: ModelMeta, *, path: str = UNIIR_REPO, tokenizer: str = BLIP_TOKENIZER,
                 filename: str = "blip_ff_large.pth", device: str = "auto", precision: str = "auto",
                 num_workers: int | None = None, max_length: int = 100):
        from transformers import AutoTokenizer, BlipImageProcessor, BlipTextModel, BlipVisionModel

        helper = ClipEncoder.__new__(ClipEncoder)     # device / autocast resolution shared with CLIP
        helper._setup(meta, path, device, precision, num_workers)
        self.meta, self.path, self.device = meta, path, helper.device
        self.autocast_dtype, self._autocast, self.num_workers = helper.autocast_dtype, helper._autocast, num_workers
        name, local = hf_source(tokenizer)
        self.tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local)
        if "[DEC]" not in self.tokenizer.get_vocab():           # BLIP's init_tokenizer()
            self.tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
        self.max_length = max_length
        self.checkpoint = resolve_checkpoint(path, filename)
        state = read_state_dict(self.checkpoint)
        vit, text = sub_state(state, "visual_encoder."), sub_state(state, "text_encoder.")
        if "patch_embed.proj.weight" not in vit or not text:
            raise DataError(self.checkpoint, "no 'visual_encoder.*'/'text_encoder.*' weights: not a UniIR BLIP checkpoint")
        vision_config, text_config = blip_ff_configs(vit, text)
        self.vision = BlipVisionModel(vision_config)
        _load_strict(self.vision, blip_vit_to_transformers(vit), self.checkpoint)
        self.text = BlipTextModel(text_config, add_pooling_layer=True)
        _load_strict(self.text, text, self.checkpoint)
        self.vision.eval().to(self.device)
        self.text.eval().to(self.device)
        size = vision_config.image_size     # BLIP eval transform: Resize((s, s), bicubic) + CLIP mean/std
        self.image_processor = BlipImageProcessor(size={"height": size, "width": size}, image_mean=BLIP_MEAN,
                                                  image_std=BLIP_STD, do_convert_rgb=True)
        self.image_size = size
        self._oom: OomGuard | None = None

    def settings(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint.name, "checkpoint_commit": snapshot_commit(self.checkpoint),
                "fusion": "feature (BERT cross-attending to the ViT)",
                "max_length": self.max_length, "padding_side": self.tokenizer.padding_side,
                "image_size": self.image_size, "resize": "squash, bicubic", "missing_image": "zeros(3,H,W)",
                "missing_text": "\"\"", "embedding": "text_encoder pooler_output", "text_batches": "longest first",
                "autocast": str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else "off",
                "oom_halvings": self._oom.halvings if self._oom else 0}

    def preprocess(self, image) -> torch.Tensor:
        return self.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]

    def _pixels_or_blank(self, image) -> torch.Tensor:
        """UniIR's collator: a missing image is a zero tensor (after normalisation)."""
        if image is None:
            return torch.zeros(3, self.image_size, self.image_size)
        return self.preprocess(image)

    @torch.inference_mode()
    def _forward(self, texts: list[str], pixels: torch.Tensor) -> np.ndarray:
        tok = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt")
        with self._autocast():
            image_embeds = self.vision(pixel_values=pixels.to(self.device)).last_hidden_state
            atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
            out = self.text(input_ids=tok["input_ids"].to(self.device),
                            attention_mask=tok["attention_mask"].to(self.device),
                            encoder_hidden_states=image_embeds, encoder_attention_mask=atts, is_decoder=False)
        return out.pooler_output.float().cpu().numpy()

    def encode(self, items: Sequence, *, role: Role, batch_size: int) -> np.ndarray:
        if not items:
            return np.zeros((0, self.meta.embed_dim or 0), dtype=np.float32)
        if self._oom is None or self._oom.limit > batch_size:
            self._oom = OomGuard(batch_size)
        texts = [self._text_of(it, role) or "" for it in items]
        # longest text first (each batch pads to a similar length); images travel with their texts
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]]
        order = length_order(lengths)
        texts = [texts[i] for i in order]
        refs = [items[i].image if items[i].image is not None else _NO_IMAGE for i in order]
        parts, start = [], 0
        for pixels in image_batches(refs, self._pixels_or_blank, batch_size, num_workers=self.num_workers):
            batch_texts = texts[start:start + len(pixels)]
            start += len(pixels)
            parts.append(self._oom(lambda idx: self._forward([batch_texts[i] for i in idx], pixels[list(idx)]),
                                   list(range(len(pixels)))))
        out = np.empty((len(items), parts[0].shape[1]), np.float32)
        out[order] = np.concatenate(parts)
        return l2_normalize(out)


def load_uniir_clip_sf(meta: ModelMeta, **options: Any) -> UniirClipSF:
    return UniirClipSF(meta, **options)


def load_uniir_blip_ff(meta: ModelMeta, **options: Any) -> UniirBlipFF:
    return UniirBlipFF(meta, **options)
