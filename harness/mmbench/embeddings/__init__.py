"""The embedding cache: encode item tables once, reuse them across runs.

* :mod:`~mmbench.embeddings.key`: :class:`EmbeddingKey` (what an entry is the embedding of) and
  :func:`ids_digest`;
* :mod:`~mmbench.embeddings.store`: one entry's folder: manifest, chunk files, their header checks;
* :mod:`~mmbench.embeddings.writer`: :class:`BackgroundWriter` (atomic writes off the caller's thread);
* :mod:`~mmbench.embeddings.embed`: :func:`embed_table`, the encode loop over chunks through the store;
* :mod:`~mmbench.embeddings.mapping` and :mod:`~mmbench.embeddings.prefault`: a large pool's memory
  (mapped from its chunk files, or prepared on another thread).
"""

from mmbench.embeddings.embed import EncodeStats, embed_table
from mmbench.embeddings.key import EmbeddingKey, ids_digest
from mmbench.embeddings.store import EmbeddingStore
from mmbench.embeddings.writer import BackgroundWriter

__all__ = ["BackgroundWriter", "EmbeddingKey", "EmbeddingStore", "EncodeStats", "embed_table", "ids_digest"]
