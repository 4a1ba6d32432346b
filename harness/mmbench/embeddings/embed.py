"""Embedding an item table through the cache: :func:`embed_table`, the only caller of ``Encoder.encode``
for first-stage embeddings.

The table is cut into chunks of ``chunk_size`` items (the unit of resume); chunks whose file in the
key's :class:`~mmbench.embeddings.store.EmbeddingStore` is complete are reused, the others are encoded
and written by a :class:`~mmbench.embeddings.writer.BackgroundWriter` while the next chunk encodes. The
model is loaded only when some chunk is missing, so a fully cached run never loads weights.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mmbench.data.types import ItemTable
from mmbench.embeddings.key import EmbeddingKey, ids_digest
from mmbench.embeddings.mapping import MAP_MIN_BYTES, can_map
from mmbench.embeddings.prefault import prepare_pool_memory
from mmbench.embeddings.store import CHUNK_ABSENT, EmbeddingStore
from mmbench.embeddings.writer import BackgroundWriter, StagingBuffers
from mmbench.models.base import l2_normalize
from mmbench.models.progress import metered, tracking
from mmbench.util.io import atomic_open, write_json

__all__ = ["EmbedJob", "EncodeStats", "cache_entry", "embed_table", "encode_chunks", "missing_chunks",
           "write_images_digest", "write_settings"]


@dataclass
class EncodeStats:
    encoded: int = 0        # items encoded now
    cached: int = 0         # items taken from the cache
    seconds: float = 0.0
    settings: dict | None = None   # the encoder settings that produced these embeddings
    by_modality: dict = field(default_factory=dict)   # modality -> (items encoded, seconds): models.progress.metered


@dataclass(frozen=True)
class EmbedJob:
    """One table a run embeds, with the arguments of its :func:`embed_table` call that vary per table
    (:meth:`mmbench.pipeline.pools.Pools.jobs`; a group of ranks encodes a run's jobs together)."""

    table: ItemTable
    key: EmbeddingKey
    label: str                          # the progress line's description
    normalize: bool = False
    normalized_dtype: str = "float32"
    images_sha256: str | None = None    # --verify-data: the content digest of the table's images


def embed_table(table: ItemTable, key: EmbeddingKey, get_encoder: Callable[[], object], *,
                cache_dir: Path, batch_size: int, chunk_size: int = 4096, overwrite: bool = False,
                progress: Callable[[int, int], None] | None = None,
                writer: BackgroundWriter | None = None, normalize: bool = False,
                normalized_dtype: str = "float32",
                message: Callable[[str], None] | None = None,
                map_min_bytes: int = MAP_MIN_BYTES, images_sha256: str | None = None) -> tuple[np.ndarray, EncodeStats]:
    """Embeddings of every item of ``table``, encoding only what is not cached.

    Returned: the encoder's output (in the key's dtype), or with ``normalize`` its rows at unit L2
    norm in float32 (chunk by chunk: the bits of normalising the whole), or, with
    ``normalized_dtype="float16"``, those float32 unit rows rounded to float16 (half the memory of a
    large pool; the search computes in float32 block by block). The cache holds the rows as
    returned when they are the encoder's float32 output at unit norm (``rows="unit"`` in the key:
    the default for cosine models) or the raw output itself; otherwise (a float16 cache) the raw
    output. Items with identical content (:meth:`ItemTable.duplicate_rows`) get the embedding of
    the first of them: encoded in different batches, with other padding, they would differ in the
    last bits, and float noise, not the tie-break rule, would order them (observed: the duplicate
    captions of mbeir-mini's t->t task swapped places between two CPU kinds).

    A table of at least ``map_min_bytes`` whose cached rows are the returned rows is returned as a
    private mapping of its chunk files (:mod:`mmbench.embeddings.mapping`): no copy, no second 180 MB for a
    118k x 384 pool; elsewhere the chunks are copied into a new array as they are encoded or read.
    Chunk files are written by ``writer`` when one is given, else by a writer of this call, without
    an fsync (:mod:`mmbench.embeddings.store`); the cache is complete when the caller's writer is
    closed, or on return. ``message`` receives a line for each incomplete chunk file found (encoded again).

    The entry's lock (:meth:`EmbeddingStore.lock`) is held from before the manifest is read until
    every chunk file of this call is written: another run on the same entry waits (``message`` says
    so once), then finds the chunks written. ``images_sha256`` (``--verify-data``): the content digest
    of the table's images; an entry not encoded from exactly those bytes (no digest stored, or
    another) is encoded again, and the digest is stored with the rows.
    """
    store, unit = cache_entry(table, key, cache_dir=cache_dir, chunk_size=chunk_size, normalize=normalize,
                              normalized_dtype=normalized_dtype)
    lock = store.lock(message).acquire()
    try:
        return _embed_locked(table, store, get_encoder, batch_size=batch_size, chunk_size=chunk_size,
                             overwrite=overwrite, progress=progress, writer=writer, normalize=normalize,
                             unit=unit, normalized_dtype=normalized_dtype, message=message,
                             map_min_bytes=map_min_bytes, images_sha256=images_sha256)
    finally:
        if writer is not None:
            writer.then(lock.release)           # once this table's chunk files are written
        else:
            lock.release()                      # this call's own writer is closed


def cache_entry(table: ItemTable, key: EmbeddingKey, *, cache_dir: Path, chunk_size: int, normalize: bool,
                normalized_dtype: str = "float32") -> tuple[EmbeddingStore, bool]:
    """The cache entry :func:`embed_table` reads and writes for these arguments, and whether its rows are
    stored at unit norm (``rows="unit"`` in the key: float32 rows of a normalising caller)."""
    unit = normalize and key.dtype == "float32" and normalized_dtype == "float32"
    if unit:
        key = replace(key, rows="unit")
    return EmbeddingStore(cache_dir, key, len(table), ids_digest(table.ids), chunk_size), unit


def missing_chunks(store: EmbeddingStore, *, overwrite: bool = False, images_sha256: str | None = None,
                   message: Callable[[str], None] | None = None) -> list[int]:
    """Open ``store`` (with ``overwrite``: empty) and return the chunks to encode, in order: absent or
    incomplete (:meth:`EmbeddingStore.chunk_problem`; ``message`` names each incomplete file), or all of
    them when ``images_sha256`` is given and the entry was not encoded from exactly those image bytes.
    Call with the entry's lock held; when chunks are missing, the stored image digest is removed (the
    rows about to be written were encoded from these bytes only when they were hashed now)."""
    store.open(overwrite)
    if images_sha256 is not None and _stored_content(store) != images_sha256 and store.n_chunks:
        if any(store.chunk_problem(i) is None for i in range(store.n_chunks)) and message:
            message(f"embedding cache {store.dir}: not encoded from these image bytes (--verify-data): encoded again")
        store.open(overwrite=True)
    problems = {i: store.chunk_problem(i) for i in range(store.n_chunks)}
    missing = [i for i, problem in problems.items() if problem is not None]
    if message:
        for problem in problems.values():
            if problem not in (None, CHUNK_ABSENT):
                message(f"embedding cache chunk {problem} (cut short by an OS crash, or changed outside mmbench?): "
                        "encoded again")
    if missing:
        store.content_path.unlink(missing_ok=True)
    return missing


def encode_chunks(table: ItemTable, store: EmbeddingStore, chunks: list[int], encoder, *, batch_size: int,
                  unit: bool, writer: BackgroundWriter, stats: EncodeStats,
                  progress: Callable[[int], None] | None = None,
                  keep: Callable[[int, np.ndarray], None] | None = None) -> list[Future]:
    """Encode ``chunks`` of ``table`` with ``encoder`` and submit each chunk file to ``writer``; returns
    the writes' futures. Rows are the encoder's output in the key's dtype, at unit norm when ``unit``.
    ``stats`` counts the items encoded (and their time per modality); ``progress(n)`` receives the items
    of this call encoded so far (per batch); ``keep(i, rows)`` sees chunk ``i``'s rows before they are
    handed to the writer (they are reused once written: copy what is kept). The encoder is called once
    per chunk with the chunk's items only, so a chunk's rows do not depend on which process encodes it
    or on the other chunks encoded with it."""
    key, chunk_size = store.key, store.chunk_size
    staging = StagingBuffers(chunk_size)
    written: list[Future] = []
    done = 0
    for i in chunks:
        lo = i * chunk_size
        items = table.items(lo, lo + chunk_size)
        with tracking(len(items), _within(progress, done)), metered(stats.by_modality, items):   # per batch
            emb = np.asarray(encoder.encode(items, role=key.role, batch_size=batch_size))
        if emb.shape[0] != len(items):
            raise RuntimeError(f"model {key.model!r} returned {emb.shape[0]} embeddings for {len(items)} items")
        _check_finite(emb, items, key)           # a NaN row would sort anywhere: never cache one
        raw = staging.take(emb.shape, key.dtype)  # our own memory: the encoder may reuse its buffer
        raw[...] = emb
        if unit and raw.ndim == 2:
            l2_normalize(raw, inplace=True)      # the bits of normalising the float32 output
        if keep is not None:
            keep(i, raw)
        written.append(writer.submit(store.write_chunk, i, raw))
        staging.hand_over(raw, written[-1])
        stats.encoded += len(items)
        done += len(items)
        if progress:
            progress(done)
    return written


def write_settings(store: EmbeddingStore, encoder) -> None:
    """Store the encoder's settings with the entry (``settings.json``), when it has any."""
    settings = getattr(encoder, "settings", None)
    if callable(settings):
        write_json(store.settings_path, settings())


def write_images_digest(store: EmbeddingStore, digest: str) -> None:
    """Store the content digest of the images the entry's rows were encoded from (``--verify-data``);
    write it only once every chunk of the entry is written."""
    _write_content(store.content_path, digest)


def _within(progress, done: int):
    """``progress`` for the items of one chunk: ``done`` before it, plus the chunk's items encoded."""
    if not progress:
        return lambda n: None
    return lambda n: progress(done + n)


def _embed_locked(table: ItemTable, store: EmbeddingStore, get_encoder: Callable[[], object], *,
                  batch_size: int, chunk_size: int, overwrite: bool, progress, writer: BackgroundWriter | None,
                  normalize: bool, unit: bool, normalized_dtype: str, message, map_min_bytes: int,
                  images_sha256: str | None) -> tuple[np.ndarray, EncodeStats]:
    """:func:`embed_table` with the entry's lock held (the caller releases it)."""
    missing = missing_chunks(store, overwrite=overwrite, images_sha256=images_sha256, message=message)
    stats = EncodeStats(cached=len(table) - sum(store.chunk_len(i) for i in missing))
    done = stats.cached
    if progress:
        progress(done, len(table))
    as_cached = unit or not normalize         # the rows returned are the rows in the cache files
    out_dtype = np.dtype(normalized_dtype) if normalize else None
    # Either the result is mapped from the chunk files at the end (``plan["map"]``), or it is
    # assembled in memory: cached chunks read, chunks encoded now placed as encoded, never read back.
    plan: dict = {}
    out: np.ndarray | None = None

    def decide(row_shape: tuple[int, ...], dtype: np.dtype) -> bool:
        if "map" not in plan:
            row_bytes = dtype.itemsize * math.prod(row_shape)
            # every file's header is checked once, when mapping (``store.mapped``); a chunk of another
            # layout (an older cache's) makes it read the files back instead
            plan["map"] = as_cached and store.n * row_bytes >= map_min_bytes and can_map(chunk_size * row_bytes)
            plan["row"] = (tuple(row_shape), np.dtype(dtype))
        return plan["map"]

    def place(i: int, arr: np.ndarray) -> None:
        nonlocal out
        if out is None:
            out = np.empty((store.n, *arr.shape[1:]), dtype=out_dtype or arr.dtype)
            prepare_pool_memory(out)      # no huge pages; mapped on another core while chunks arrive
        lo = i * chunk_size
        if normalize and not unit and arr.ndim == 2 and out.dtype == np.float32:
            l2_normalize(arr, out=out[lo: lo + arr.shape[0]])
        elif normalize and not unit and arr.ndim == 2:
            out[lo: lo + arr.shape[0]] = l2_normalize(arr)        # float32 arithmetic, then rounded
        else:
            out[lo: lo + arr.shape[0]] = arr

    missing_set = set(missing)
    cached = [i for i in range(store.n_chunks) if i not in missing_set]
    if cached:
        _, shape, dtype, _ = store.chunk_header(cached[0])
        if not decide(shape[1:], dtype):
            for i in cached:
                place(i, store.load_chunk(i))
    written: list[Future] = []
    if missing:
        encoder = get_encoder()
        start = time.perf_counter()
        # Chunk files are written by one background thread while the next chunk encodes; if
        # encoding fails, every chunk encoded before the failure is still saved.
        own = writer is None
        chunks = BackgroundWriter() if own else writer

        def keep(i: int, raw: np.ndarray) -> None:
            if not decide(raw.shape[1:], raw.dtype):
                place(i, raw)

        try:
            written = encode_chunks(table, store, missing, encoder, batch_size=batch_size, unit=unit,
                                    writer=chunks, stats=stats, keep=keep,
                                    progress=(lambda n: progress(done + n, len(table))) if progress else None)
        finally:
            if own:
                chunks.close()
        stats.seconds = time.perf_counter() - start
        write_settings(store, encoder)
        if images_sha256 is not None:           # after every chunk of this call, in the writer's order
            write = chunks.submit if not own else (lambda fn, *a: fn(*a))
            write(_write_content, store.content_path, images_sha256)
    if store.settings_path.exists():
        stats.settings = json.loads(store.settings_path.read_text())
    if plan.get("map"):
        for future in written:                   # this table's chunk files are on the page cache
            future.result()
        out = store.mapped(*plan["row"])
        if out is None:                          # the mapping failed: read the files back
            for i in range(store.n_chunks):
                place(i, store.load_chunk(i))
    if out is None:                              # an empty table (no chunks)
        return np.zeros((0, 0), dtype=out_dtype or key.dtype), stats
    rows, sources = table.duplicate_rows()
    out[rows] = out[sources]        # identical items, identical bits: their ties are exact, whatever the batching
    return out, stats


def _stored_content(store: EmbeddingStore) -> str | None:
    try:
        return store.content_path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _write_content(path: Path, digest: str) -> None:
    with atomic_open(path) as f:
        f.write(digest + "\n")


def _check_finite(emb: np.ndarray, items: list, key: EmbeddingKey) -> None:
    """Raise, naming the first item, when the model returned NaN or infinite values."""
    if emb.dtype.kind == "f" and not np.isfinite(emb).all():
        row = int(np.flatnonzero(~np.isfinite(emb.reshape(len(items), -1)).all(axis=1))[0])
        raise RuntimeError(f"model {key.model!r} returned non-finite values (NaN or inf) for {key.role} "
                           f"{items[row].id!r}; nothing of this chunk was cached")
