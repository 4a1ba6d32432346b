"""The ``example-hash`` encoder: subclass FusionEncoder, implement texts and images.

:class:`~mmbench.models.base.FusionEncoder` routes items by modality, normalises each part and sums
the unit text and image embeddings of image+text items (UniIR's score fusion); it also applies the
query instruction when the metadata says ``uses_instructions``.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from mmbench.models.base import FusionEncoder, ModelMeta, Role

from mmbench_example import DIM

WORD = re.compile(r"\w+")


def _bucket(word: str) -> tuple[int, float]:
    digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % DIM, 1.0 if (value >> 63) & 1 else -1.0


class HashEncoder(FusionEncoder):
    def __init__(self, meta: ModelMeta, seed: int = 0):
        self.meta = meta
        self.seed = seed
        self.projection = np.random.default_rng(seed).standard_normal((48, DIM)).astype(np.float32)

    def settings(self) -> dict:
        return {"text": "blake2b signed word hashing", "image": "4x4 RGB thumbnail x random projection",
                "seed": self.seed}

    def encode_texts(self, texts: list[str], *, role: Role, batch_size: int) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in WORD.findall(text.lower()):
                col, sign = _bucket(word)
                out[row, col] += sign
        return out

    def encode_images(self, images: list, *, role: Role, batch_size: int) -> np.ndarray:
        thumbs = np.stack([np.asarray(im.convert("RGB").resize((4, 4)), dtype=np.float32).ravel() / 255.0
                           for im in images])
        return (thumbs - thumbs.mean(axis=1, keepdims=True)) @ self.projection


def load(meta: ModelMeta, **options) -> HashEncoder:
    """The loader named in the metadata: ``load(meta, **meta.options)`` -> an encoder."""
    return HashEncoder(meta, **options)
