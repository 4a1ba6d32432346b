"""CLIP dual encoder through transformers ``CLIPModel`` (hub id or local folder), zero-shot.

Text is truncated to the model's position limit (77 for OpenAI CLIP); images go through the
folder's ``CLIPImageProcessor``. On CUDA the towers run under bf16 (or fp16) autocast; on CPU in
float32. Image+text items are fused by :class:`~harness.models.base.FusionEncoder` (score sum).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.models.base import FusionEncoder, ModelMeta, Role
from harness.models.minilm import resolve_device

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _features(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor in older transformers, an output with ``pooler_output`` in 5.x."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipEncoder(FusionEncoder):
    """``options``: ``path`` (hub id or folder), ``device`` ("auto"), ``precision`` ("auto", "fp32", "bf16", "fp16")."""

    def __init__(self, meta: ModelMeta, *, path: str, device: str = "auto", precision: str = "auto"):
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        self.meta = meta
        self.path = path
        self.device = resolve_device(device)
        self.autocast_dtype = self._autocast_dtype(precision)
        source = Path(path).expanduser()
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        local = source.is_dir() or offline
        name = str(source) if source.is_dir() else path
        self.model = CLIPModel.from_pretrained(name, local_files_only=local).eval().to(self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local)
        self.image_processor = CLIPImageProcessor.from_pretrained(name, local_files_only=local)
        self.max_length = self.model.config.text_config.max_position_embeddings

    def _autocast_dtype(self, precision: str) -> torch.dtype | None:
        """bf16/fp16 autocast only on CUDA; "auto" picks bf16 where supported, else fp16."""
        if precision == "fp32" or not self.device.startswith("cuda"):
            return None
        if precision == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
        return AUTOCAST_DTYPES[precision]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.autocast_dtype)

    def settings(self) -> dict[str, Any]:
        from PIL import Image

        proc = self.image_processor
        return {
            "max_length": self.max_length,
            "padding_side": self.tokenizer.padding_side,
            "image_processor": type(proc).__name__,
            "image_size": dict(proc.size),
            "center_crop": dict(proc.crop_size) if proc.do_center_crop else None,
            "image_mean": list(proc.image_mean),
            "image_std": list(proc.image_std),
            "resample": Image.Resampling(int(proc.resample)).name,
            "autocast": str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else "off",
        }

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], *, role: Role, batch_size: int) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                texts[start:start + batch_size], padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            ).to(self.device)
            with self._autocast():
                features = self.model.get_text_features(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                )
            out.append(_features(features).float().cpu().numpy())
        return np.concatenate(out)

    @torch.inference_mode()
    def encode_images(self, images: list, *, role: Role, batch_size: int) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            pixels = self.image_processor(images=images[start:start + batch_size], return_tensors="pt")
            with self._autocast():
                features = self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device))
            out.append(_features(features).float().cpu().numpy())
        return np.concatenate(out)


def load_clip(meta: ModelMeta, **options: Any) -> ClipEncoder:
    """Registry loader: ``ClipEncoder(meta, **options)``; ``options["path"]`` is required."""
    if "path" not in options:
        raise ValueError(f"model {meta.name!r}: the CLIP loader needs options['path'] (hub id or folder)")
    return ClipEncoder(meta, **options)
