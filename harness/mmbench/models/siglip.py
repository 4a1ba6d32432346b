"""SigLIP dual encoder through transformers ``SiglipModel`` (hub id or local folder), zero-shot.

SigLIP was trained on text padded to its full length (64 tokens) without an attention mask and
pools the last position, so texts are padded to ``max_length`` and no mask is passed: shorter
padding changes the embeddings. Images are resized to the model's square size (no crop).
Image+text items are fused as UniIR's score fusion (sum of unit embeddings). The sigmoid
scale/bias do not change a query's ranking, so retrieval uses cosine similarity.
"""

from __future__ import annotations

from typing import Any

import torch

from mmbench.models.base import ModelMeta
from mmbench.models.clip import ClipEncoder, _features
from mmbench.models.loading import hf_source


class SiglipEncoder(ClipEncoder):
    """``options``: ``path`` (hub id or folder), ``device``, ``precision``, ``num_workers`` (as CLIP)."""

    text_padding = "max_length"

    def __init__(self, meta: ModelMeta, *, path: str, device: str = "auto", precision: str = "auto",
                 num_workers: int | None = None):
        from transformers import AutoImageProcessor, AutoTokenizer, SiglipModel

        self._setup(meta, path, device, precision, num_workers)
        name, local = hf_source(path)
        self.model = SiglipModel.from_pretrained(name, local_files_only=local).eval().to(self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local)
        self.image_processor = AutoImageProcessor.from_pretrained(name, local_files_only=local)
        self.max_length = self.model.config.text_config.max_position_embeddings

    def _text_features(self, batch: dict) -> torch.Tensor:
        return _features(self.model.get_text_features(input_ids=batch["input_ids"]))   # no mask: as trained

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "attention_mask": False}


def load_siglip(meta: ModelMeta, **options: Any) -> SiglipEncoder:
    """Registry loader: ``SiglipEncoder(meta, **options)``; ``options["path"]`` is required."""
    if "path" not in options:
        raise ValueError(f"model {meta.name!r}: the SigLIP loader needs options['path'] (hub id or folder)")
    return SiglipEncoder(meta, **options)
