"""The reranker contract: score (query, candidate) pairs of a first-stage run's top-k.

A reranker name has a scheme:

* ``rescore:<registered model>``: an embedding model re-scores the pairs (cosine or its own similarity);
* ``cross-encoder:<folder-or-hub-id>``: a sentence-transformers / HF sequence-classification cross-encoder
  (text on both sides);
* ``mllm-rerank:<folder-or-hub-id>``: zero-shot LLaVA-Next True/False judge (text, image or both on each side).

:func:`parse_reranker` turns a name into a :class:`RerankerMeta` without loading any weights (a folder's
revision is ``local:`` + the first 12 hex digits of the sha256 of its ``config.json``, a hub id's is ``hub``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mmbench.data.types import IMAGE, IMAGE_TEXT, TEXT, Item, ItemTable, TaskData, canonical_modality
from mmbench.errors import DataError, UnknownNameError
from mmbench.models.loading import local_revision, looks_like_path

KINDS = ("rescore", "cross-encoder", "mllm-rerank")
LOADERS = {
    "rescore": "mmbench.rerank.rescore:load_rescorer",
    "cross-encoder": "mmbench.rerank.cross_encoder:load_cross_encoder",
    "mllm-rerank": "mmbench.rerank.mllm:load_mllm_reranker",
}


@dataclass(frozen=True)
class RerankerMeta:
    """What is known about a reranker without loading it."""

    name: str                          # as given: "rescore:minilm", "cross-encoder:/models/ce"
    kind: str                          # one of KINDS
    model: str                         # registered model name, folder or hub id
    revision: str
    modalities: tuple[str, ...]        # item modalities it can read (on either side): text, image, "image,text"
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def can_read(self, modality: str) -> bool:
        return canonical_modality(modality) in self.modalities

    def can_score(self, query_modality: str, candidate_modality: str) -> bool:
        return self.can_read(query_modality) and self.can_read(candidate_modality)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        return d


@dataclass
class RerankJob:
    """The scorable pairs of one task: ``queries.item(query_rows[i])`` vs ``candidates.item(candidate_rows[i])``."""

    task: str
    data: TaskData                 # the task (its queries and qrels; the query embedding cache keys use it)
    query_rows: np.ndarray         # int64 (n_pairs,) rows of data.queries
    candidates: ItemTable          # the distinct candidates of the pairs (a subset of the searched pool)
    candidate_rows: np.ndarray     # int64 (n_pairs,) rows of ``candidates``
    candidate_fingerprint: str     # identity of ``candidates`` (pool fingerprints + ids), for caches

    def __len__(self) -> int:
        return len(self.query_rows)


Progress = Callable[[int, int], None]


@runtime_checkable
class Reranker(Protocol):
    meta: RerankerMeta

    def score(self, queries: Sequence[Item], candidates: Sequence[Item], *, batch_size: int) -> np.ndarray:
        """Relevance of each pair (queries[i], candidates[i]) -> float64 (n,); higher is more relevant."""
        ...

    def score_job(self, job: RerankJob, *, batch_size: int, progress: Progress | None = None) -> np.ndarray:
        """Relevance of every pair of ``job`` -> float64 (len(job),)."""
        ...

    def settings(self) -> dict[str, Any]:
        """Settings that change scores (max length, prompt template, dtype...)."""
        ...


class PairwiseReranker:
    """Base of rerankers that read each pair jointly: :meth:`score_job` feeds :meth:`score` batch by batch."""

    meta: RerankerMeta

    def score(self, queries: Sequence[Item], candidates: Sequence[Item], *, batch_size: int) -> np.ndarray:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {}

    def score_job(self, job: RerankJob, *, batch_size: int, progress: Progress | None = None) -> np.ndarray:
        out = np.empty(len(job), dtype=np.float64)
        step = max(batch_size, 1) * 8           # items are built lazily, a few batches at a time
        for lo in range(0, len(job), step):
            hi = min(lo + step, len(job))
            qs = [job.data.queries.item(int(r)) for r in job.query_rows[lo:hi]]
            cs = [job.candidates.item(int(r)) for r in job.candidate_rows[lo:hi]]
            out[lo:hi] = self.score(qs, cs, batch_size=batch_size)
            if progress:
                progress(hi, len(job))
        return out


def _split_name(name: str) -> tuple[str, str]:
    kind, sep, model = name.partition(":")
    kind, model = kind.strip(), model.strip()
    if not sep or kind not in KINDS or not model:
        raise UnknownNameError(
            f"reranker {name!r}: expected one of rescore:<registered model> (e.g. rescore:minilm), "
            f"cross-encoder:<folder-or-hub-id>, mllm-rerank:<folder-or-hub-id>")
    return kind, model


def _folder_or_hub(model: str) -> tuple[str, str]:
    """(path to load, revision) of a folder or hub id."""
    if not looks_like_path(model):
        return model, "hub"
    folder = Path(model).expanduser().resolve()
    config = folder / "config.json"
    if not config.is_file():
        raise DataError(folder, "not a model folder (config.json not found)")
    return str(folder), local_revision(folder, ("config.json",))


def parse_reranker(name: str) -> RerankerMeta:
    """A reranker name -> its metadata; no weights are loaded. Unknown schemes or models raise a user error."""
    kind, model = _split_name(name)
    if kind == "rescore":
        from mmbench.catalog import get_model

        meta = get_model(model)
        readable = [m for m in (TEXT, IMAGE, IMAGE_TEXT) if meta.can_encode(m)]
        return RerankerMeta(name=f"rescore:{meta.name}", kind=kind, model=meta.name, revision=meta.revision,
                            modalities=tuple(readable),
                            description=f"embedding model {meta.name} re-scores the top-k ({meta.similarity})")
    path, revision = _folder_or_hub(model)
    if kind == "cross-encoder":
        return RerankerMeta(name=name, kind=kind, model=path, revision=revision, modalities=(TEXT,),
                            description="sequence-classification cross-encoder over (query text, candidate text)",
                            options={"path": path})
    return RerankerMeta(name=name, kind=kind, model=path, revision=revision, modalities=(TEXT, IMAGE, IMAGE_TEXT),
                        description="zero-shot LLaVA-Next True/False judge: relevance = P('True') of the next token",
                        options={"path": path})


def load_reranker(meta: RerankerMeta, **context) -> Reranker:
    """Instantiate the reranker (loads weights). ``context``: config, reporter (used by the kinds that need them)."""
    from mmbench.registry import import_target

    return import_target(LOADERS[meta.kind])(meta, **context)


def device_of(requested: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; anything else as given."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
