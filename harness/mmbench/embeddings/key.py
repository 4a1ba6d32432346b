"""What an embedding cache entry is the embedding of: its key, and the hash of the ids it covers.

The key holds model name and revision, role (query/candidate), the instruction policy, the
fingerprint of the data (file hashes, the images' fingerprint (:mod:`mmbench.embeddings.images`)
and, for queries, the resolved per-query instructions), the cached dtype, which rows are stored
(the encoder's raw output or those rows at unit norm), and the batching: the encoding batch size
and chunk size when they are not the defaults. Batching is part of what an embedding is: a real
model's output for an item depends in its last bits on the other items of its batch (padding
changes the shapes of attention and matmuls, and an encoder that sorts a call's items by length
forms its batches from the whole chunk), and those bits can move a rank and a score.
Its :meth:`EmbeddingKey.digest` names the entry's folder
(``<cache>/embeddings/<model slug>/<digest>/``, :class:`mmbench.embeddings.store.EmbeddingStore`),
so any change to a field gives another folder: caches of other models, revisions, data or rows
are never mixed. The digest of a key is fixed by the cache format: changing how it is computed
would orphan every existing cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

__all__ = ["CACHE_FORMAT", "DEFAULT_BATCH_SIZE", "DEFAULT_CHUNK_SIZE", "EmbeddingKey", "batching", "ids_digest"]

CACHE_FORMAT = 1
DEFAULT_BATCH_SIZE = 32       # the batching of every cache entry whose key has no ``batching``
DEFAULT_CHUNK_SIZE = 4096


def batching(batch_size: int, chunk_size: int) -> str:
    """The key's ``batching`` field: "" for the defaults, else ``batch=B,chunk=C``."""
    if (batch_size, chunk_size) == (DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE):
        return ""
    return f"batch={batch_size},chunk={chunk_size}"


@dataclass(frozen=True)
class EmbeddingKey:
    model: str
    revision: str
    role: str                 # "query" | "candidate"
    instruction_policy: str   # "first" | "random:<seed>" | "none" | "n/a" for candidates
    data_fingerprint: str
    dtype: str = "float32"
    rows: str = "raw"         # "raw": the encoder's output; "unit": those rows at unit L2 norm
    batching: str = ""        # "" for the default batch and chunk size, else "batch=B,chunk=C" (batching())

    def fields(self) -> dict:
        """The key as stored and hashed; ``rows`` only when not "raw" and ``batching`` only when not
        the default, so that the caches written before those fields existed keep their folder and
        manifest."""
        fields = asdict(self)
        if fields["rows"] == "raw":
            del fields["rows"]
        if not fields["batching"]:
            del fields["batching"]
        return fields

    def digest(self) -> str:
        """The first 24 hex digits of the sha256 of the cache format and :meth:`fields` as sorted JSON."""
        blob = json.dumps({"format": CACHE_FORMAT, **self.fields()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


def ids_digest(ids: list[str]) -> str:
    """sha256 of every id followed by a NUL byte (hashed in one call: same digest as id by id)."""
    return hashlib.sha256(("\0".join(ids) + "\0" if ids else "").encode()).hexdigest()
