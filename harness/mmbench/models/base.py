"""The adapter contract every embedding model implements, and its weight-free metadata.

:class:`ModelMeta` is known without loading weights (``mmbench list models`` prints it). An
:class:`Encoder` turns a batch of :class:`~mmbench.data.types.Item` (text, image or both) into
float32 embeddings. :class:`FusionEncoder` implements image+text items by score fusion, in one of
two forms (``ModelMeta.fusion``): ``"score-sum"``, the sum of the unit text embedding and the unit
image embedding (the zero-shot dual encoders), or ``"raw-sum"``, UniIR's ``CLIPScoreFusion``: the
sum of the raw projected embeddings, L2-normalised afterwards (as UniIR's indexer does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from mmbench.data.types import IMAGE, TEXT, Item, modality_parts
from mmbench.errors import IncompatibleModelError
from mmbench.models.progress import expect

Role = Literal["query", "candidate"]


@dataclass(frozen=True)
class ModelMeta:
    """What is known about a model without loading it."""

    name: str
    loader: str                       # "module:callable" -> callable(meta, **options) -> Encoder
    revision: str
    modalities: tuple[str, ...]       # subset of ("text", "image")
    embed_dim: int | None
    description: str
    similarity: str = "cosine"
    fusion: str | None = None         # how image+text items are embedded: "score-sum", "raw-sum", "feature", None
    uses_instructions: bool = False   # whether query instructions reach the encoder
    task_instructions: str | None = None   # "module:fn", fn(mteb task name) -> the model's query instruction
                                           # for a task mteb gives no prompt (None: no table)
    max_tokens: int | None = None
    n_parameters: int | None = None
    license: str | None = None
    reference: str | None = None
    options: dict[str, Any] = field(default_factory=dict)   # passed to the loader
    image_tokens: int | None = None   # tokens the encoder passes per image, where declared (mmbench plan)
    declared_items_per_s: dict[str, float] = field(default_factory=dict)   # modality -> items/s (mmbench plan)
    declared_on: str | None = None    # the hardware and settings those items/s are for

    def can_encode(self, modality: str) -> bool:
        parts = modality_parts(modality)
        if not parts <= set(self.modalities):
            return False
        return len(parts) == 1 or self.fusion is not None

    def check_task(self, task_name: str, query_modality: str, candidate_modality: str) -> None:
        for role, modality in (("queries", query_modality), ("candidates", candidate_modality)):
            if not self.can_encode(modality):
                raise IncompatibleModelError(
                    f"model {self.name!r} encodes {'+'.join(self.modalities)} "
                    f"(fusion: {self.fusion or 'none'}) but task {task_name!r} has {modality} {role}"
                )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        return d


@runtime_checkable
class Encoder(Protocol):
    meta: ModelMeta

    def encode(self, items: Sequence[Item], *, role: Role, batch_size: int) -> np.ndarray:
        """Embed ``items`` -> float32 array (len(items), dim)."""
        ...

    def settings(self) -> dict[str, Any]:
        """Settings that change scores (tokenizer max length, padding side, image size...)."""
        ...


def l2_normalize(x: np.ndarray, *, inplace: bool = False, block_rows: int = 8192,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32). ``inplace=True`` overwrites ``x`` when it already is a
    float32 array (the caller must own it); ``out`` (a float32 array of x's shape) receives the rows
    instead. Works in row blocks, with no (n, dim) temporaries; the bits equal
    ``x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)`` (the same per-row
    reduction), so normalising a table chunk by chunk gives the bits of normalising it whole."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if out is None:
        out = x if inplace and x.flags.writeable else np.empty_like(x)
    for lo in range(0, x.shape[0], block_rows):
        b = x[lo: lo + block_rows]
        norms = np.sqrt(np.add.reduce(b * b, axis=1, keepdims=True))
        np.divide(b, np.maximum(norms, 1e-12), out=out[lo: lo + block_rows])
    return out


class FusionEncoder:
    """Base for dual encoders: subclasses embed texts and images; this class routes and fuses.

    * text items -> ``encode_texts``; image items -> ``encode_images``;
    * image+text items -> ``normalize(text) + normalize(image)`` (``fusion="score-sum"``), or
      ``normalize(text + image)`` over the raw embeddings (``fusion="raw-sum"``: UniIR's
      ``CLIPScoreFusion.encode_multimodal_input``, then ``faiss.normalize_L2`` at index time);
      single-modality rows are unit either way (a cosine model's rows are all normalised later);
    * queries use :meth:`Item.prompted_text` when ``meta.uses_instructions`` (UniIR's
      ``format_string(f"{instruction} {query}")``), so an image query with an instruction becomes an
      image+text query, as in UniIR. Otherwise the instruction is ignored.
    """

    meta: ModelMeta

    def encode_texts(self, texts: list[str], *, role: Role, batch_size: int) -> np.ndarray:
        raise NotImplementedError

    def encode_images(self, images: list, *, role: Role, batch_size: int) -> np.ndarray:
        raise NotImplementedError

    def encode_image_refs(self, refs: list, *, role: Role, batch_size: int) -> np.ndarray:
        """Decode and embed images (``ImageRef``). This default decodes in this process and calls
        :meth:`encode_images`; the transformer adapters decode in DataLoader workers instead
        (:mod:`mmbench.models.batching`)."""
        return self.encode_images([r.load() for r in refs], role=role, batch_size=batch_size)

    def settings(self) -> dict[str, Any]:
        return {}

    def _text_of(self, item: Item, role: Role) -> str | None:
        if role == "query" and self.meta.uses_instructions:
            text = item.prompted_text()
        else:
            text = item.text
        return text or None

    def encode(self, items: Sequence[Item], *, role: Role, batch_size: int) -> np.ndarray:
        if not items:
            return np.zeros((0, self.meta.embed_dim or 0), dtype=np.float32)
        texts = [self._text_of(it, role) for it in items]
        has_image = [it.image is not None for it in items]
        text_rows = [i for i, t in enumerate(texts) if t is not None]
        image_rows = [i for i, h in enumerate(has_image) if h]
        for i, it in enumerate(items):
            if texts[i] is None and not has_image[i]:
                raise ValueError(f"item {it.id!r} has neither text nor image")
        if text_rows and TEXT not in self.meta.modalities:
            if not image_rows or any(not has_image[i] for i in text_rows):
                raise IncompatibleModelError(f"model {self.meta.name!r} cannot encode text")
            text_rows = []  # image model: instruction text is dropped
        if image_rows and IMAGE not in self.meta.modalities:
            raise IncompatibleModelError(f"model {self.meta.name!r} cannot encode images")
        both = set(text_rows) & set(image_rows)
        if both and self.meta.fusion is None:
            raise IncompatibleModelError(f"model {self.meta.name!r} has no fusion for image+text items")
        expect(len(text_rows) + len(image_rows))        # the rows batch_done will report (progress)
        unit_parts = self.meta.fusion != "raw-sum"       # raw-sum: normalise the sum, not its parts
        part = l2_normalize if unit_parts else (lambda x: np.asarray(x, dtype=np.float32))
        out: np.ndarray | None = None
        if text_rows:
            t = part(self.encode_texts([texts[i] for i in text_rows], role=role, batch_size=batch_size))
            out = np.zeros((len(items), t.shape[1]), dtype=np.float32)
            out[text_rows] += t
        if image_rows:
            refs = [items[i].image for i in image_rows]
            v = part(self.encode_image_refs(refs, role=role, batch_size=batch_size))
            if out is None:
                out = np.zeros((len(items), v.shape[1]), dtype=np.float32)
            out[image_rows] += v
        assert out is not None
        return out if unit_parts else l2_normalize(out, inplace=True)

