"""Step 2 of a run: the embeddings searched, through the cache (:mod:`mmbench.embeddings`).

The model is loaded on first use only (:class:`LazyEncoder`: a fully cached run never loads weights).
A task searches its local pool, or the union of the suite's distinct local pools (a global suite);
each pool is embedded once per run and shared by the tasks that search it.

The cache keys (:func:`query_key`, :func:`pool_key`) hold everything that can change an embedding:
the data files, the images' fingerprint (:func:`image_fingerprints`; a replaced image gives another
key, so the table is encoded again), the instructions, the dtype and the batching (batch and chunk
size, when not the defaults: a real model's output depends on its batch's other items).
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
from mmbench.data.types import ItemTable, PoolData, TaskData
from mmbench.embeddings import BackgroundWriter, EmbeddingKey, EncodeStats, embed_table
from mmbench.embeddings.embed import EmbedJob
from mmbench.embeddings.images import images_fingerprint, images_sha256
from mmbench.embeddings.key import batching
from mmbench.errors import MmbenchError
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


def image_fingerprints(data: TaskData, verify: bool = False, memo: dict | None = None) -> dict[str, str]:
    """The fingerprints of the images a task reads (:mod:`mmbench.embeddings.images`): ``queries`` and
    ``pool`` (path, size and mtime of each image, in table order), and with ``verify`` (``--verify-data``)
    ``queries_sha256`` and ``pool_sha256`` (every byte). Only the tables that have images appear: a
    text task gets ``{}``. ``memo`` (shared across a run's tasks) computes a shared pool's once."""
    memo = {} if memo is None else memo
    out: dict[str, str] = {}
    for role, table, shared in (("queries", data.queries, None), ("pool", data.pool, data.pool_key)):
        fns = {role: images_fingerprint, **({f"{role}_sha256": images_sha256} if verify else {})}
        for name, fn in fns.items():
            memo_key = (name, shared, str(table.root)) if shared else None
            if memo_key is not None and memo_key in memo:
                value = memo[memo_key]
            else:
                value = fn(table)
                if memo_key is not None:
                    memo[memo_key] = value
            if value is not None:
                out[name] = value
    return out


def query_key(meta: ModelMeta, config: RunConfig, data: TaskData, *, images: dict | None = None,
              batch_size: int | None = None) -> EmbeddingKey:
    """The cache key of a task's queries: their file, their images, their instructions, the instruction
    policy and the batching (``batch_size``: the encoding batch size, default ``config.batch_size``)."""
    h = hashlib.sha256(data.fingerprints["queries"].encode())
    h.update(json.dumps(data.queries.instructions).encode())
    images = image_fingerprints(data) if images is None else images
    if "queries" in images:                       # a text table's key stays as it was
        h.update(f"\0images:{images['queries']}".encode())
    policy = f"random:{config.seed}" if config.instructions == "random" else config.instructions
    return EmbeddingKey(meta.name, meta.revision, "query", policy, h.hexdigest(), config.embed_dtype,
                        batching=batching(batch_size or config.batch_size, config.chunk_size))


def pool_key(meta: ModelMeta, config: RunConfig, data: TaskData, *, images: dict | None = None) -> EmbeddingKey:
    """The cache key of a task's pool: its file(s) (``data.pool_key``), its images and the batching."""
    images = image_fingerprints(data) if images is None else images
    return candidate_key(meta, config, data.pool_key, images)


def candidate_key(meta: ModelMeta, config: RunConfig, pool_fingerprint: str, images: dict) -> EmbeddingKey:
    """The cache key of candidates read from bytes with sha256 ``pool_fingerprint``, with the images
    fingerprint ``images["pool"]`` (absent or None: no images) and the batching."""
    fingerprint = pool_fingerprint
    if images.get("pool"):
        fingerprint = hashlib.sha256(f"{pool_fingerprint}\0images:{images['pool']}".encode()).hexdigest()
    return EmbeddingKey(meta.name, meta.revision, "candidate", "n/a", fingerprint, config.embed_dtype,
                        batching=batching(config.batch_size, config.chunk_size))


@dataclass
class Pool:
    """The candidates searched by a task: one local pool, or the union of the suite's distinct pools."""

    label: str
    table: ItemTable
    blocks: list[np.ndarray]           # embeddings as searched, block by block (row order = table)
    encode_seconds: float
    from_cache: int = 0                # candidates whose embeddings came from the cache
    candidate_ids: object = None       # metrics.CandidateIds: id -> index and tie-break ranks, built once
    encode_stats: tuple = ()           # the EncodeStats of each local pool in it (the efficiency report)
    norm_bound: float | None = None    # search.pool_norm_bound of the blocks, computed once (retrieve)

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
                 pool_mode: str, encoder: LazyEncoder, reporter: Reporter, writer: BackgroundWriter | None,
                 images: dict[str, dict] | None = None, shared=None, global_pool: PoolData | None = None):
        """``shared``: what a group of ranks encoded for this run before it
        (:class:`mmbench.distributed.encode.SharedEncode`): its counts and times replace those of
        the tables read back from the cache, and ``--overwrite`` has been applied by the group."""
        self.meta, self.config, self.data = meta, config, data
        self.shared = shared
        self.pool_specs, self.pool_mode = pool_specs, pool_mode
        self.encoder, self.reporter, self.writer = encoder, reporter, writer
        self.images = images if images is not None else {}    # task -> image_fingerprints (the plan's)
        self.global_pool = global_pool                         # a global suite's pool (Plan.global_pool)
        self._memo: dict = {}
        self._pools: dict[str, Pool] = {}
        self._settings: dict = {}

    def _images(self, spec: TaskSpec) -> dict[str, str]:
        if spec.name not in self.images:
            self.images[spec.name] = image_fingerprints(self.data[spec.name], self.config.verify_data, self._memo)
        return self.images[spec.name]

    def _job(self, table: ItemTable, key: EmbeddingKey, label: str, dtype: str = "float32",
             content: str | None = None) -> EmbedJob:
        """Embeddings as searched (unit rows for cosine models), through the cache: float32, or for a
        pool with ``--embed-dtype float16`` float16 (half the memory; searched in float32 block by block).
        ``content``: the images' content digest (``--verify-data``)."""
        return EmbedJob(table, key, label, normalize=self.meta.similarity == "cosine", normalized_dtype=dtype,
                        images_sha256=content)

    def _embed(self, job: EmbedJob):
        cfg = self.config
        emb, stats = embed_table(job.table, job.key, self.encoder, cache_dir=cfg.cache_dir, batch_size=cfg.batch_size,
                                 chunk_size=cfg.chunk_size, overwrite=cfg.overwrite and self.shared is None,
                                 progress=self.reporter.progress(job.label, len(job.table)), writer=self.writer,
                                 normalize=job.normalize, normalized_dtype=job.normalized_dtype,
                                 message=self.reporter.message, images_sha256=job.images_sha256)
        group = self.shared.take(job) if self.shared is not None else None
        if group is not None:
            stats.encoded, stats.cached, stats.seconds, stats.by_modality = (
                group.encoded, group.cached, group.seconds, group.by_modality)
        return np.asarray(emb, job.normalized_dtype), stats

    def pool_job(self, spec: TaskSpec) -> EmbedJob:
        """The embedding of ``spec``'s local pool."""
        td = self.data[spec.name]
        images = self._images(spec)
        return self._job(td.pool, pool_key(self.meta, self.config, td, images=images),
                         f"{spec.name}: encode candidates", dtype=self.config.embed_dtype,
                         content=images.get("pool_sha256"))

    def query_job(self, spec: TaskSpec) -> EmbedJob:
        """The embedding of ``spec``'s queries."""
        td = self.data[spec.name]
        images = self._images(spec)
        return self._job(td.queries, query_key(self.meta, self.config, td, images=images),
                         f"{spec.name}: encode queries", content=images.get("queries_sha256"))

    def jobs(self, specs: list[TaskSpec]) -> list[EmbedJob]:
        """Every table that evaluating ``specs`` embeds, in the order it does (each pool once), without
        embedding anything: what a group of ranks encodes before rank 0 evaluates."""
        out, pools = (self.global_jobs() if self.pool_mode == "global" and specs else []), set()
        for spec in specs:
            if self.pool_mode != "global" and self.data[spec.name].pool_key not in pools:
                pools.add(self.data[spec.name].pool_key)
                out.append(self.pool_job(spec))
            out.append(self.query_job(spec))
        return out

    def local(self, spec: TaskSpec) -> Pool:
        td = self.data[spec.name]
        if td.pool_key not in self._pools:
            emb, stats = self._embed(self.pool_job(spec))
            self._pools[td.pool_key] = Pool(spec.name, td.pool, [emb], stats.seconds, stats.cached,
                                            encode_stats=(stats,))
        return self._pools[td.pool_key]

    def global_jobs(self) -> list[EmbedJob]:
        """The embeddings of a global suite's pool (the plan's :class:`~mmbench.data.types.PoolData`:
        the suite's pool file, or the union of its distinct local pools), one job per part: each part
        a table of its own under its own key (:func:`candidate_key` of the part's key and images), so
        a part with a local pool file's bytes shares that pool's cache entry and its rows get the
        bits that pool's run gives them."""
        glob = self.global_pool
        if glob is None:
            raise MmbenchError("a global suite's pool was not loaded (pipeline.plan.Plan.load loads it)")
        jobs = []
        for i, part in enumerate(glob.part_list()):
            table = glob.table.slice(part.start, part.stop)
            images = {"pool": glob.part_images[i] if glob.part_images is not None else images_fingerprint(table)}
            content = images_sha256(table) if self.config.verify_data else None
            jobs.append(self._job(table, candidate_key(self.meta, self.config, part.key, images),
                                  f"global pool: encode candidates {part.start + 1:,}-{part.stop:,} of "
                                  f"{len(glob.table):,}", dtype=self.config.embed_dtype, content=content))
        return jobs

    def union(self) -> Pool:
        """A global suite's pool, its parts embedded one by one (:meth:`global_jobs`), the blocks in
        the table's row order."""
        if "global" not in self._pools:
            done = [self._embed(job) for job in self.global_jobs()]
            self._pools["global"] = Pool("global", self.global_pool.table, [emb for emb, _ in done],
                                         sum(s.seconds for _, s in done), sum(s.cached for _, s in done),
                                         encode_stats=tuple(s for _, s in done))
        return self._pools["global"]

    def for_task(self, spec: TaskSpec) -> Pool:
        """The pool ``spec`` searches, with its candidate ids' lookups built once."""
        from mmbench.metrics.scoring import CandidateIds

        pool = self.union() if self.pool_mode == "global" else self.local(spec)
        if pool.candidate_ids is None:
            pool.candidate_ids = CandidateIds(pool.table.ids)
        return pool

    def queries(self, spec: TaskSpec) -> Queries:
        emb, stats = self._embed(self.query_job(spec))
        return Queries(emb, stats)

    def model_settings(self, queries: Queries) -> dict:
        """The encoder's settings: the loaded model's, else those cached with the queries, else the
        last ones seen in this run (a fully cached task never loads the model)."""
        self._settings = self.encoder.settings() or queries.stats.settings or self._settings
        return self._settings


__all__ = ["LazyEncoder", "Pool", "Pools", "Queries", "as_searched", "candidate_key", "image_fingerprints", "pool_key",
           "query_key"]
