"""CLIP dual encoder through transformers ``CLIPModel`` (hub id or local folder), zero-shot.

Text is truncated to the model's position limit (77 for OpenAI CLIP); images go through the
folder's ``CLIPImageProcessor``. On CUDA the towers run under bf16 (or fp16) autocast; on CPU in
float32. Image+text items are fused by :class:`~mmbench.models.base.FusionEncoder` (score sum).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from mmbench.models.base import FusionEncoder, ModelMeta, Role
from mmbench.models.batching import OomGuard, encode_in_length_order, image_batches
from mmbench.models.loading import hf_source, hub_commit, resolve_device

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _features(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor in older transformers, an output with ``pooler_output`` in 5.x."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipEncoder(FusionEncoder):
    """``options``: ``path`` (hub id or folder), ``device`` ("auto"), ``precision`` ("auto", "fp32", "bf16", "fp16"),
    ``num_workers`` (image-decoding processes; default automatic)."""

    def __init__(self, meta: ModelMeta, *, path: str, device: str = "auto", precision: str = "auto",
                 num_workers: int | None = None):
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        self._setup(meta, path, device, precision, num_workers)
        name, local = hf_source(path)
        self.model = CLIPModel.from_pretrained(name, local_files_only=local).eval().to(self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local)
        self.image_processor = CLIPImageProcessor.from_pretrained(name, local_files_only=local)
        self.max_length = self.model.config.text_config.max_position_embeddings

    def _setup(self, meta: ModelMeta, path: str, device: str, precision: str, num_workers: int | None) -> None:
        self.meta = meta
        self.path = path
        self.device = resolve_device(device)
        self.autocast_dtype = self._autocast_dtype(precision)
        self.num_workers = num_workers

    def _autocast_dtype(self, precision: str) -> torch.dtype | None:
        """bf16/fp16 autocast only on CUDA (CPU runs float32 whatever is asked); "auto" picks bf16 where
        supported, else fp16. A misspelt precision is refused on every device."""
        if precision not in ("auto", "fp32", *AUTOCAST_DTYPES):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
        if precision == "fp32" or not self.device.startswith("cuda"):
            return None
        if precision == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return AUTOCAST_DTYPES[precision]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.autocast_dtype)

    def settings(self) -> dict[str, Any]:
        from PIL import Image

        proc = self.image_processor
        return {
            "weights": {"path": str(self.path), "hub_commit": hub_commit(str(self.path))},
            "max_length": self.max_length,
            "padding_side": self.tokenizer.padding_side,
            "image_processor": type(proc).__name__,
            "image_size": dict(proc.size),
            "center_crop": dict(proc.crop_size) if getattr(proc, "do_center_crop", False) else None,
            "image_mean": list(proc.image_mean),
            "image_std": list(proc.image_std),
            "resample": Image.Resampling(int(proc.resample)).name,
            "autocast": str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else "off",
            **self.batching_settings(),
        }

    # -- batching (mmbench.models.batching): length-sorted text, images decoded in workers, OOM halving --
    text_padding = "longest"          # SigLIP overrides: "max_length" (it pools the last position)
    num_workers: int | None = None    # image-decoding DataLoader workers; None = automatic

    def _guard(self, batch_size: int, modality: str = "text") -> OomGuard:
        """The OOM guard of one modality: a halving forced by large image batches does not shrink
        the text batches, nor the reverse."""
        guards = self.__dict__.setdefault("_oom_guards", {})
        if modality not in guards or guards[modality].limit > batch_size:
            guards[modality] = OomGuard(batch_size)
        return guards[modality]

    def _tokenize(self, texts: list[str]) -> dict:
        return self.tokenizer(texts, padding=self.text_padding, truncation=True,
                              max_length=self.max_length, return_tensors="pt")

    def _text_features(self, batch: dict) -> torch.Tensor:
        return _features(self.model.get_text_features(input_ids=batch["input_ids"],
                                                      attention_mask=batch["attention_mask"]))

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixel_values))

    def preprocess(self, image) -> torch.Tensor:
        """One PIL image -> its pixel tensor (runs in DataLoader workers)."""
        return self.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]

    def batching_settings(self) -> dict[str, Any]:
        guards = self.__dict__.get("_oom_guards", {})
        return {"text_padding": self.text_padding, "text_order": "longest-first",
                "image_workers": "auto" if self.num_workers is None else self.num_workers,
                "oom_halvings": sum(g.halvings for g in guards.values())}

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], *, role: Role, batch_size: int) -> np.ndarray:
        def run(batch_texts: list[str]) -> np.ndarray:
            batch = {k: v.to(self.device) for k, v in self._tokenize(batch_texts).items()}
            with self._autocast():
                return self._text_features(batch).float().cpu().numpy()

        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]]
        return encode_in_length_order(texts, lengths, run, batch_size, self._guard(batch_size))

    @torch.inference_mode()
    def _encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        with self._autocast():
            return self._image_features(pixels.to(self.device, non_blocking=True)).float().cpu().numpy()

    def encode_images(self, images: list, *, role: Role, batch_size: int) -> np.ndarray:
        """PIL images, preprocessed here (``encode_image_refs`` decodes files in workers instead)."""
        guard = self._guard(batch_size, "image")
        parts = [guard(self._encode_pixels, torch.stack([self.preprocess(im) for im in images[s:s + batch_size]]))
                 for s in range(0, len(images), batch_size)]
        return np.concatenate(parts)

    def encode_image_refs(self, refs: list, *, role: Role, batch_size: int) -> np.ndarray:
        guard = self._guard(batch_size, "image")
        batches = image_batches(refs, self.preprocess, batch_size, num_workers=self.num_workers,
                                pin_memory=self.device.startswith("cuda"))
        return np.concatenate([guard(self._encode_pixels, pixels) for pixels in batches])


def load_clip(meta: ModelMeta, **options: Any) -> ClipEncoder:
    """Registry loader: ``ClipEncoder(meta, **options)``; ``options["path"]`` is required."""
    if "path" not in options:
        raise ValueError(f"model {meta.name!r}: the CLIP loader needs options['path'] (hub id or folder)")
    return ClipEncoder(meta, **options)
