"""``rescore:<registered model>``: any embedding model re-scores the first stage's top-k.

Relevance = the model's similarity (cosine for every built-in model) between the query embedding and the
candidate embedding. Only the candidates that occur in the top-k are embedded, through the model's own
embedding cache (key: the pool fingerprints plus the ids of that subset), and the task's queries through the
same cache entry a first-stage run of that model uses, so a repeated rerank encodes nothing and never loads
the model. With the first stage's own model it reproduces the first-stage order of the top-k (a check).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmbench.data.types import Item
from mmbench.embeddings import EmbeddingKey, embed_table
from mmbench.embeddings.key import batching
from mmbench.rerank.base import Progress, RerankerMeta, RerankJob


class Rescorer:
    def __init__(self, meta: RerankerMeta, *, config, reporter=None):
        from mmbench.catalog import get_model
        from mmbench.pipeline.pools import LazyEncoder
        from mmbench.pipeline.types import Reporter

        self.meta, self.config = meta, config
        self.model = get_model(meta.model)
        self.encoder = LazyEncoder(self.model, config, reporter or Reporter())

    def _normalise(self, emb: np.ndarray) -> np.ndarray:
        from mmbench.pipeline.pools import as_searched

        return as_searched(emb, self.model)

    def score(self, queries: Sequence[Item], candidates: Sequence[Item], *, batch_size: int) -> np.ndarray:
        enc = self.encoder()
        q = self._normalise(enc.encode(list(queries), role="query", batch_size=batch_size))
        c = self._normalise(enc.encode(list(candidates), role="candidate", batch_size=batch_size))
        return np.einsum("ij,ij->i", q.astype(np.float64), c.astype(np.float64))

    def score_job(self, job: RerankJob, *, batch_size: int, progress: Progress | None = None) -> np.ndarray:
        from mmbench.catalog import tasks
        from mmbench.pipeline.plan import with_model_instructions
        from mmbench.pipeline.pools import query_key

        cfg, m = self.config, self.model
        common = dict(cache_dir=cfg.cache_dir, batch_size=batch_size, chunk_size=cfg.chunk_size, overwrite=cfg.overwrite)
        data = with_model_instructions(tasks().get(job.task), job.data, m, cfg)   # the rescoring model's own instructions
        q_emb, _ = embed_table(data.queries, query_key(m, cfg, data, batch_size=batch_size), self.encoder, **common)
        key = EmbeddingKey(m.name, m.revision, "candidate", "n/a", job.candidate_fingerprint, cfg.embed_dtype,
                           batching=batching(batch_size, cfg.chunk_size))
        c_emb, _ = embed_table(job.candidates, key, self.encoder, progress=progress, **common)
        q = self._normalise(q_emb)[job.query_rows].astype(np.float64)
        c = self._normalise(c_emb)[job.candidate_rows].astype(np.float64)
        return np.einsum("ij,ij->i", q, c)

    def settings(self) -> dict[str, Any]:
        return {"model": self.model.name, "revision": self.model.revision, "similarity": self.model.similarity,
                "encoder": self.encoder.settings()}


def load_rescorer(meta: RerankerMeta, *, config, reporter=None, **_) -> Rescorer:
    return Rescorer(meta, config=config, reporter=reporter)
