"""The embedding cache: encode item tables once, reuse them across runs."""

from mmbench.embeddings.cache import BackgroundWriter, EmbeddingKey, embed_table

__all__ = ["BackgroundWriter", "EmbeddingKey", "embed_table"]
