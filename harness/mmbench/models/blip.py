"""BLIP zero-shot retrieval embeddings through transformers ``BlipForImageTextRetrieval``.

These are the image-text contrastive (ITC) embeddings of BLIP's retrieval models: the [CLS] state of
the ViT through ``vision_proj`` and the [CLS] state of the unimodal BERT text encoder through
``text_proj`` (the ITM head, a cross-encoder, is not used). Text is truncated to 35 tokens, as in
BLIP's retrieval evaluation; images are resized to the folder's square size (384 px for the COCO
retrieval checkpoints). Image+text items are fused as UniIR's score fusion (sum of unit embeddings).
"""

from __future__ import annotations

from typing import Any

import torch

from mmbench.models.base import ModelMeta
from mmbench.models.clip import ClipEncoder
from mmbench.models.loading import hf_source

BLIP_RETRIEVAL_MAX_TOKENS = 35   # BLIP's blip_retrieval.py evaluation: max_length=35


class BlipEncoder(ClipEncoder):
    """``options``: ``path`` (hub id or folder), ``device``, ``precision``, ``num_workers``, ``max_length`` (35)."""

    def __init__(self, meta: ModelMeta, *, path: str, device: str = "auto", precision: str = "auto",
                 num_workers: int | None = None, max_length: int = BLIP_RETRIEVAL_MAX_TOKENS):
        from transformers import AutoTokenizer, BlipForImageTextRetrieval, BlipImageProcessor

        self._setup(meta, path, device, precision, num_workers)
        name, local = hf_source(path)
        self.model = BlipForImageTextRetrieval.from_pretrained(name, local_files_only=local).eval().to(self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local)
        self.image_processor = BlipImageProcessor.from_pretrained(name, local_files_only=local)
        self.max_length = max_length

    def _text_features(self, batch: dict) -> torch.Tensor:
        out = self.model.text_encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return self.model.text_proj(out.last_hidden_state[:, 0, :])

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model.vision_model(pixel_values=pixel_values)
        return self.model.vision_proj(out.last_hidden_state[:, 0, :])


def load_blip(meta: ModelMeta, **options: Any) -> BlipEncoder:
    """Registry loader: ``BlipEncoder(meta, **options)``; ``options["path"]`` is required."""
    if "path" not in options:
        raise ValueError(f"model {meta.name!r}: the BLIP loader needs options['path'] (hub id or folder)")
    return BlipEncoder(meta, **options)
