"""Step 2 of a run: the embeddings searched, through the cache (:mod:`mmbench.embeddings`).

The model is loaded on first use only (:class:`LazyEncoder`: a fully cached run never loads weights).
A task searches its local pool, or the union of the suite's distinct local pools (a global suite);
each pool is embedded once per run and shared by the tasks that search it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmbench.config import RunConfig
from mmbench.data.specs import TaskSpec
from mmbench.data.types import ItemTable, TaskData
from mmbench.embeddings import BackgroundWriter, EmbeddingKey, EncodeStats, embed_table
from mmbench.errors import DataError, MmbenchError
from mmbench.models.base import ModelMeta, l2_normalize
from mmbench.models.loading import hub_miss_error, is_hub_miss, loader_options
from mmbench.pipeline.types import Reporter
from mmbench.registry import import_target


class LazyEncoder:
    """Loads the model on first use only (a fully cached run never loads weights)."""

    def __init__(self, meta: ModelMeta, config: RunConfig, reporter: Reporter):
        self.meta, self.config, self.reporter = meta, config, reporter
        self._encoder = None

    def __call__(self):
        if self._encoder is None:
            self.reporter.message(f"loading model {self.meta.name} ({self.meta.revision})")
            _quiet_transformers()
            factory = import_target(self.meta.loader)
            accepted = inspect.signature(factory).parameters
            extra = {"device": self.config.device, "cache_dir": Path(self.config.cache_dir) / "assets"}
            opts = dict(self.meta.options)
            for key, value in extra.items():
                if key in accepted:          # only options the factory names explicitly
                    opts.setdefault(key, value)
            if "trust_remote_code" in accepted:    # the user's flag decides, never an option
                opts["trust_remote_code"] = bool(self.config.trust_remote_code)
            try:
                self._encoder = factory(self.meta, **opts)
            except TypeError as exc:
                if "unexpected keyword argument" not in str(exc) or not self.config.model_options:
                    raise
                raise MmbenchError(f"model {self.meta.name!r}: {exc} (from --model-option; this loader takes "
                                   f"{loader_options(factory)})") from None
            except OSError as exc:
                if not is_hub_miss(exc):
                    raise
                raise hub_miss_error(self.meta, opts, exc) from None
        return self._encoder

    def settings(self) -> dict | None:
        return self._encoder.settings() if self._encoder is not None else None


def _quiet_transformers() -> None:
    """transformers draws its own weight-loading bar; the CLI has its own progress display."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()


def as_searched(emb: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """Encoder output as searched: unit rows for cosine models (in place: the caller owns ``emb``).
    A run gets the same from :func:`~mmbench.embeddings.embed_table` with ``normalize``."""
    return l2_normalize(emb, inplace=True) if meta.similarity == "cosine" else np.asarray(emb, dtype=np.float32)


def query_key(meta: ModelMeta, config: RunConfig, data: TaskData) -> EmbeddingKey:
    """The cache key of a task's queries: their file, their instructions and the instruction policy."""
    h = hashlib.sha256(data.fingerprints["queries"].encode())
    h.update(json.dumps(data.queries.instructions).encode())
    policy = f"random:{config.seed}" if config.instructions == "random" else config.instructions
    return EmbeddingKey(meta.name, meta.revision, "query", policy, h.hexdigest(), config.embed_dtype)


def pool_key(meta: ModelMeta, config: RunConfig, data: TaskData) -> EmbeddingKey:
    return EmbeddingKey(meta.name, meta.revision, "candidate", "n/a", data.pool_key, config.embed_dtype)


@dataclass
class Pool:
    """The candidates searched by a task: one local pool, or the union of the suite's distinct pools."""

    label: str
    table: ItemTable
    blocks: list[np.ndarray]           # embeddings as searched, block by block (row order = table)
    encode_seconds: float
    from_cache: int = 0                # candidates whose embeddings came from the cache
    candidate_ids: object = None       # metrics.CandidateIds: id -> index and tie-break ranks, built once

    @property
    def modalities(self) -> np.ndarray:
        return np.asarray(self.table.modalities)


@dataclass
class Queries:
    embeddings: np.ndarray
    stats: EncodeStats


class Pools:
    """The embeddings of one run: pools (each embedded once) and queries, through the cache."""

    def __init__(self, meta: ModelMeta, config: RunConfig, data: dict[str, TaskData], pool_specs: list[TaskSpec],
                 pool_mode: str, encoder: LazyEncoder, reporter: Reporter, writer: BackgroundWriter):
        self.meta, self.config, self.data = meta, config, data
        self.pool_specs, self.pool_mode = pool_specs, pool_mode
        self.encoder, self.reporter, self.writer = encoder, reporter, writer
        self._pools: dict[str, Pool] = {}
        self._settings: dict = {}

    def _embed(self, table: ItemTable, key: EmbeddingKey, label: str, dtype: str = "float32"):
        """Embeddings as searched (unit rows for cosine models), through the cache: float32, or for a
        pool with ``--embed-dtype float16`` float16 (half the memory; searched in float32 block by block)."""
        cfg = self.config
        emb, stats = embed_table(table, key, self.encoder, cache_dir=cfg.cache_dir, batch_size=cfg.batch_size,
                                 chunk_size=cfg.chunk_size, overwrite=cfg.overwrite,
                                 progress=self.reporter.progress(label, len(table)), writer=self.writer,
                                 normalize=self.meta.similarity == "cosine", normalized_dtype=dtype,
                                 message=self.reporter.message)
        return np.asarray(emb, dtype), stats

    def local(self, spec: TaskSpec) -> Pool:
        td = self.data[spec.name]
        if td.pool_key not in self._pools:
            emb, stats = self._embed(td.pool, pool_key(self.meta, self.config, td), f"{spec.name}: encode candidates",
                                     dtype=self.config.embed_dtype)
            self._pools[td.pool_key] = Pool(spec.name, td.pool, [emb], stats.seconds, stats.cached)
        return self._pools[td.pool_key]

    def union(self) -> Pool:
        """The union of the suite's distinct local pools (identical pool files enter it once)."""
        if "global" not in self._pools:
            parts: list[Pool] = []
            for spec in self.pool_specs:
                p = self.local(spec)
                if all(p is not q for q in parts):
                    parts.append(p)
            table = ItemTable.concat([p.table for p in parts], source="union")
            if len(set(table.ids)) != len(table.ids):
                raise DataError("global pool", "candidate ids are not unique across the union of the local pools")
            self._pools["global"] = Pool("global", table, [b for p in parts for b in p.blocks],
                                         sum(p.encode_seconds for p in parts), sum(p.from_cache for p in parts))
        return self._pools["global"]

    def for_task(self, spec: TaskSpec) -> Pool:
        """The pool ``spec`` searches, with its candidate ids' lookups built once."""
        from mmbench.metrics.scoring import CandidateIds

        pool = self.union() if self.pool_mode == "global" else self.local(spec)
        if pool.candidate_ids is None:
            pool.candidate_ids = CandidateIds(pool.table.ids)
        return pool

    def queries(self, spec: TaskSpec) -> Queries:
        td = self.data[spec.name]
        emb, stats = self._embed(td.queries, query_key(self.meta, self.config, td), f"{spec.name}: encode queries")
        return Queries(emb, stats)

    def model_settings(self, queries: Queries) -> dict:
        """The encoder's settings: the loaded model's, else those cached with the queries, else the
        last ones seen in this run (a fully cached task never loads the model)."""
        self._settings = self.encoder.settings() or queries.stats.settings or self._settings
        return self._settings


__all__ = ["LazyEncoder", "Pool", "Pools", "Queries", "as_searched", "pool_key", "query_key"]
