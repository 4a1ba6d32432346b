"""``st:<hub-id-or-folder>``: any sentence-transformers model, with its query/document prompts.

Prompts follow mteb's ``SentenceTransformerEncoderWrapper``: the model's own ``prompts`` (from its
``config_sentence_transformers.json``) are used by role, ``query`` for queries and ``document`` (or
``passage``) for candidates; a model without prompts encodes plain text. A task-defined instruction
(mteb's ``metadata.prompt``, carried as the query's ``instruction``) is prepended only when the model
is marked as using instructions (``st+instruct:<...>``), with the template
``"Instruct: {instruction}\\nQuery: "`` that mteb's instruct models use.
Embeddings are returned unnormalised; the pipeline normalises them for cosine similarity
(:func:`mmbench.embeddings.embed_table`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.errors import DataError, UnknownNameError
from mmbench.data.types import Item
from mmbench.models.base import ModelMeta, Role
from mmbench.models.loading import local_revision, looks_like_path, resolve_device

PREFIXES = ("st:", "st+instruct:")
LOADER = "mmbench.models.sentence_transformer:load_sentence_transformer"
INSTRUCT_TEMPLATE = "Instruct: {instruction}\nQuery: "
REVISION_FILES = ("model.safetensors", "pytorch_model.bin", "config.json", "config_sentence_transformers.json")


def folder_revision(folder: Path) -> str:
    """``local:`` + a digest of the folder's weights, config and sentence-transformers config."""
    return local_revision(folder, REVISION_FILES)


def resolve_st_model(name: str) -> ModelMeta | None:
    """Metadata for ``st:<hub-id-or-folder>`` (``st+instruct:`` to apply task instructions); None otherwise."""
    prefix = next((p for p in PREFIXES if name.startswith(p)), None)
    if prefix is None:
        return None
    spec = name[len(prefix):].strip()
    if not spec:
        raise UnknownNameError(f"model {name!r}: expected st:<hub-id-or-local-folder>, e.g. st:/models/bge-base")
    if looks_like_path(spec):
        folder = Path(spec).expanduser().resolve()
        if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
            raise DataError(folder, "not a sentence-transformers model folder (modules.json / config.json not found)")
        revision, path, reference = folder_revision(folder), str(folder), None
    else:
        revision, path, reference = "hub", spec, f"https://huggingface.co/{spec}"
    return ModelMeta(
        name=name, loader=LOADER, revision=revision, modalities=("text",), embed_dim=None,
        description=f"sentence-transformers model {path} (its own query/document prompts)",
        uses_instructions=prefix == "st+instruct:", reference=reference, options={"path": path},
    )


class SentenceTransformerEncoder:
    def __init__(self, meta: ModelMeta, *, path: str, device: str = "auto"):
        from sentence_transformers import SentenceTransformer

        self.meta = meta
        self.device = resolve_device(device)
        self.model = SentenceTransformer(path, device=self.device)
        self.prompts = dict(getattr(self.model, "prompts", None) or {})

    def prompt_for(self, role: Role) -> str | None:
        keys = ("query",) if role == "query" else ("document", "passage", "corpus")
        for k in keys:
            if self.prompts.get(k):
                return self.prompts[k]
        return None

    def settings(self) -> dict[str, Any]:
        return {"max_length": self.model.max_seq_length, "prompts": self.prompts or None,
                "instruction_template": INSTRUCT_TEMPLATE if self.meta.uses_instructions else None}

    def encode(self, items: Sequence[Item], *, role: Role, batch_size: int) -> np.ndarray:
        texts = [(it.raw_text if role == "query" and it.raw_text is not None else it.text) or "" for it in items]
        prompt = self.prompt_for(role)
        if role == "query" and self.meta.uses_instructions:
            groups: dict[str | None, list[int]] = {}
            for i, it in enumerate(items):
                groups.setdefault(it.instruction, []).append(i)
            out = None
            for instruction, rows in groups.items():
                p = INSTRUCT_TEMPLATE.format(instruction=instruction) if instruction else prompt
                emb = self._encode([texts[i] for i in rows], p, batch_size)
                if out is None:
                    out = np.zeros((len(items), emb.shape[1]), dtype=np.float32)
                out[rows] = emb
            return out if out is not None else np.zeros((0, 0), dtype=np.float32)
        return self._encode(texts, prompt, batch_size)

    def _encode(self, texts: list[str], prompt: str | None, batch_size: int) -> np.ndarray:
        emb = self.model.encode(texts, batch_size=batch_size, prompt=prompt, convert_to_numpy=True,
                                normalize_embeddings=False, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)


def load_sentence_transformer(meta: ModelMeta, **options: Any) -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(meta, **options)
