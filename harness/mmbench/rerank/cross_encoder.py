"""``cross-encoder:<folder-or-hub-id>``: a sentence-transformers ``CrossEncoder`` over (query text, candidate text).

Any HF sequence-classification checkpoint loads (e.g. ms-marco-MiniLM-L-6-v2, bge-reranker-base from a local
folder). Relevance: with one output label, sentence-transformers' default activation (sigmoid) of the logit;
with two or more labels, the softmax probability of the last label (the "relevant" class of 2-way heads).
Both are monotone in the model's own relevance logit, so rankings equal those of the raw logits. Queries use
their text without the task instruction (cross-encoders are not instruction-tuned).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmbench.data.types import Item
from mmbench.errors import IncompatibleModelError
from mmbench.rerank.base import PairwiseReranker, RerankerMeta, device_of


class CrossEncoderReranker(PairwiseReranker):
    def __init__(self, meta: RerankerMeta, *, device: str = "auto", max_length: int | None = None):
        from sentence_transformers import CrossEncoder

        self.meta = meta
        self.device = device_of(device)
        self.model = CrossEncoder(meta.options.get("path", meta.model), device=self.device, max_length=max_length)
        self.num_labels = int(self.model.config.num_labels)

    def score(self, queries: Sequence[Item], candidates: Sequence[Item], *, batch_size: int) -> np.ndarray:
        pairs = []
        for q, c in zip(queries, candidates, strict=True):
            if not q.text or not c.text or q.image is not None or c.image is not None:
                raise IncompatibleModelError(f"cross-encoder {self.meta.name!r} reads text pairs; got {q.modality} query "
                                             f"{q.id!r} and {c.modality} candidate {c.id!r}")
            pairs.append((q.text, c.text))
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        out = np.asarray(self.model.predict(pairs, batch_size=batch_size, show_progress_bar=False,
                                            apply_softmax=self.num_labels > 1), dtype=np.float64)
        return out[:, -1] if out.ndim == 2 else out

    def settings(self) -> dict[str, Any]:
        return {"max_length": self.model.max_length, "num_labels": self.num_labels,
                "relevance": "sigmoid(logit)" if self.num_labels == 1 else "softmax(logits)[last label]",
                "query_text": "without instruction", "device": self.device}


def load_cross_encoder(meta: RerankerMeta, *, config=None, reporter=None, **_) -> CrossEncoderReranker:
    return CrossEncoderReranker(meta, device=getattr(config, "device", "auto"))
