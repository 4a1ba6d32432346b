"""Embedding with an on-disk cache that survives kills.

An entry is a folder ``<cache>/embeddings/<model>/<key digest>/`` holding ``manifest.json`` (the
key, item count, chunk size) and ``chunk_NNNNNN.npy`` files of ``chunk_size`` rows each, every one
written atomically. A killed run leaves only complete chunks, so the next run encodes just the
missing ones: at most the chunk that was in flight is redone. The model is loaded only when some
chunk is missing, so a fully cached run never loads weights.

Chunks are not fsynced: the cache is a cache, and a flush per chunk made encoding wait for the
disk (a 6 MB chunk took 30-40 ms to write and flush on this project's virtual disk, where a fast
encoder makes one in 10 ms: the 180 MB of a 118k-document pool held encoding back by ~0.3 s). A
process that is killed loses nothing written (the data is in the OS's page cache); an OS crash
or power loss can leave a renamed chunk empty or short. So a chunk is reused only when its
``.npy`` header reads back, declares the chunk's row count, and the file's size is the header's
plus that array's: otherwise it is encoded again, with a message that names the file. (A file
system that can leave a file at its full size with its data never written, as ext4 mounted
``data=writeback`` can, is not covered: delete the model's cache folder after such a crash.)

The key holds model name and revision, role (query/candidate), the instruction policy, and the
fingerprint of the data (file hashes and, for queries, the resolved per-query instructions).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from mmbench.data.types import ItemTable
from mmbench.util.io import save_npy, write_json
from mmbench.models.base import l2_normalize
from mmbench.embeddings.mapping import DATA_OFFSET, MAP_MIN_BYTES, can_map, map_chunk_files
from mmbench.embeddings.prefault import prepare_pool_memory

CACHE_FORMAT = 1
CHUNK_ABSENT = "absent"      # EmbeddingStore.chunk_problem of a chunk with no file


@dataclass(frozen=True)
class EmbeddingKey:
    model: str
    revision: str
    role: str                 # "query" | "candidate"
    instruction_policy: str   # "first" | "random:<seed>" | "none" | "n/a" for candidates
    data_fingerprint: str
    dtype: str = "float32"
    rows: str = "raw"         # "raw": the encoder's output; "unit": those rows at unit L2 norm

    def fields(self) -> dict:
        """The key as stored and hashed; ``rows`` only when not "raw", so that the caches of raw
        rows written before the field existed keep their folder and manifest."""
        fields = asdict(self)
        if fields["rows"] == "raw":
            del fields["rows"]
        return fields

    def digest(self) -> str:
        blob = json.dumps({"format": CACHE_FORMAT, **self.fields()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


def ids_digest(ids: list[str]) -> str:
    """sha256 of every id followed by a NUL byte (hashed in one call: same digest as id by id)."""
    return hashlib.sha256(("\0".join(ids) + "\0" if ids else "").encode()).hexdigest()


def slug(name: str) -> str:
    """A file-system-safe version of a model or revision name."""
    keep = "".join(c if c.isalnum() or c in "-_.=+" else "_" for c in name)
    return keep.strip("._") or "_"


@dataclass
class EncodeStats:
    encoded: int = 0        # items encoded now
    cached: int = 0         # items taken from the cache
    seconds: float = 0.0
    settings: dict | None = None   # the encoder settings that produced these embeddings


class EmbeddingStore:
    """The cache folder of one key."""

    def __init__(self, cache_dir: Path, key: EmbeddingKey, n_items: int, ids_hash: str, chunk_size: int):
        self.key, self.n, self.chunk_size = key, n_items, chunk_size
        self.dir = Path(cache_dir) / "embeddings" / slug(key.model) / key.digest()
        self.manifest = {"format": CACHE_FORMAT, "key": key.fields(), "n_items": n_items,
                         "ids_sha256": ids_hash, "chunk_size": chunk_size}

    @property
    def n_chunks(self) -> int:
        return -(-self.n // self.chunk_size)

    def chunk_path(self, i: int) -> Path:
        return self.dir / f"chunk_{i:06d}.npy"

    def open(self, overwrite: bool) -> None:
        path = self.dir / "manifest.json"
        if overwrite and self.dir.exists():
            shutil.rmtree(self.dir)
        if path.exists():
            stored = json.loads(path.read_text())
            if stored != self.manifest:   # same key, different content: never mix
                shutil.rmtree(self.dir)
        if not path.exists():
            write_json(path, self.manifest)

    def missing_chunks(self) -> list[int]:
        """The chunks to encode: absent, or present but incomplete (:meth:`chunk_problem`)."""
        return [i for i in range(self.n_chunks) if self.chunk_problem(i) is not None]

    def chunk_problem(self, i: int) -> str | None:
        """None when chunk ``i``'s file is complete, else why not (``CHUNK_ABSENT`` when there is none).

        Complete: its ``.npy`` header reads back and declares ``(rows of chunk i, ...)``, and the
        file is exactly the header plus that array long. Chunks are not fsynced (module docstring),
        so after an OS crash a chunk may be empty or short; the data itself is not read here.
        """
        path = self.chunk_path(i)
        try:
            header = self.chunk_header(i)
        except FileNotFoundError:
            return CHUNK_ABSENT
        except ValueError as exc:
            return f"{path} has no readable .npy header ({exc})"
        offset, shape, dtype, size = header
        expected = offset + math.prod(shape) * dtype.itemsize
        rows = _chunk_len(self, i)
        if not shape or shape[0] != rows:
            return f"{path} declares shape {shape}, expected {rows} rows"
        if size != expected:
            return f"{path} is {size} bytes, its header declares {expected}"
        return None

    def chunk_header(self, i: int) -> tuple[int, tuple[int, ...], np.dtype, int]:
        """(data offset, shape, dtype, file size) from chunk ``i``'s ``.npy`` header; raises
        FileNotFoundError (no file), or ValueError for a header that does not read back."""
        with open(self.chunk_path(i), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            try:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(f)
            except (ValueError, OSError, SyntaxError) as exc:
                raise ValueError(f"{size} bytes; {exc}") from None
            return f.tell(), shape, dtype, size

    def load(self) -> np.ndarray:
        parts = [np.load(self.chunk_path(i)) for i in range(self.n_chunks)]
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if out.shape[0] != self.n:
            raise RuntimeError(f"embedding cache {self.dir} holds {out.shape[0]} rows, expected {self.n}")
        return out

    def load_chunk(self, i: int) -> np.ndarray:
        arr = np.load(self.chunk_path(i))
        if arr.ndim < 1 or arr.shape[0] != _chunk_len(self, i):
            raise RuntimeError(f"embedding cache chunk {self.chunk_path(i)} holds {arr.shape[0] if arr.ndim else 0} "
                               f"rows, expected {_chunk_len(self, i)}")
        return arr


class BackgroundWriter:
    """One background thread that writes files (each atomically), in submission order,
    while the caller goes on: cache chunks while encoding goes on, a task's result files while its
    hits are scored and the next task loads.

    ``close`` (or leaving the ``with`` block, also on an exception) waits for every write and
    raises the first failure; a failure seen earlier is raised at the next ``submit``. Once a write
    has failed, the writes queued after it are not run (their futures raise): a task's JSON, which
    marks it finished, is never written after its run file failed. A run keeps one writer open
    across its tasks, so the last chunks of a pool are written while it is searched. Callers must
    not change an array they passed to ``submit`` before its future is done.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmbench-writer")
        self._pending: list = []
        self._failure: BaseException | None = None     # read and set on the writer thread only

    def submit(self, fn: Callable, *args, **kwargs) -> Future:
        for done in [f for f in self._pending if f.done()]:   # surface a failed write early
            self._pending.remove(done)
            done.result()
        future = self._pool.submit(self._write, fn, args, kwargs)
        self._pending.append(future)
        return future

    def _write(self, fn: Callable, args: tuple, kwargs: dict) -> object:
        if self._failure is not None:
            raise RuntimeError(f"not written: an earlier background write failed ({self._failure!r})")
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            self._failure = exc
            raise

    def drain(self) -> None:
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def embed_table(table: ItemTable, key: EmbeddingKey, get_encoder: Callable[[], object], *,
                cache_dir: Path, batch_size: int, chunk_size: int = 4096, overwrite: bool = False,
                progress: Callable[[int, int], None] | None = None,
                writer: BackgroundWriter | None = None, normalize: bool = False,
                normalized_dtype: str = "float32",
                message: Callable[[str], None] | None = None,
                map_min_bytes: int = MAP_MIN_BYTES) -> tuple[np.ndarray, EncodeStats]:
    """Embeddings of every item of ``table``, encoding only what is not cached.

    Returned: the encoder's output (in the key's dtype), or with ``normalize`` its rows at unit L2
    norm in float32 (chunk by chunk: the bits of normalising the whole), or, with
    ``normalized_dtype="float16"``, those float32 unit rows rounded to float16 (half the memory of a
    large pool; the search computes in float32 block by block). The cache holds the rows as
    returned when they are the encoder's float32 output at unit norm (``rows="unit"`` in the key:
    the default for cosine models) or the raw output itself; otherwise (a float16 cache) the raw
    output. Items with identical content (:meth:`ItemTable.duplicate_rows`) get the embedding of
    the first of them: encoded in different batches, with other padding, they would differ in the
    last bits, and float noise, not the tie-break rule, would order them (measured: the duplicate
    captions of mbeir-mini's t->t task swapped places between two CPU kinds).

    A table of at least ``map_min_bytes`` whose cached rows are the returned rows is returned as a
    private mapping of its chunk files (:mod:`mmbench.embeddings.mapping`): no copy, no second 180 MB for a
    118k x 384 pool; elsewhere the chunks are copied into a new array as they are encoded or read.
    Chunk files are written by ``writer`` when one is given, else by a writer of this call, without
    an fsync (module docstring); the cache is complete when the caller's writer is closed, or on
    return. ``message`` receives a line for each incomplete chunk file found (encoded again).
    """
    unit = normalize and key.dtype == "float32" and normalized_dtype == "float32"
    if unit:
        key = replace(key, rows="unit")
    store = EmbeddingStore(cache_dir, key, len(table), ids_digest(table.ids), chunk_size)
    store.open(overwrite)
    problems = {i: store.chunk_problem(i) for i in range(store.n_chunks)}
    missing = [i for i, problem in problems.items() if problem is not None]
    if message:
        for problem in problems.values():
            if problem not in (None, CHUNK_ABSENT):
                message(f"embedding cache chunk {problem} (not written to the disk before an OS crash?): encoded again")
    stats = EncodeStats(cached=len(table) - sum(_chunk_len(store, i) for i in missing))
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
            # every file's header is checked once, when mapping (``_mapped``); a chunk of another
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
        staging = _StagingBuffers(chunk_size)
        try:
            for i in missing:
                lo = i * chunk_size
                items = table.items(lo, lo + chunk_size)
                emb = np.asarray(encoder.encode(items, role=key.role, batch_size=batch_size))
                if emb.shape[0] != len(items):
                    raise RuntimeError(f"model {key.model!r} returned {emb.shape[0]} embeddings for {len(items)} items")
                _check_finite(emb, items, key)           # a NaN row would sort anywhere: never cache one
                raw = staging.take(emb.shape, key.dtype)  # our own memory: the encoder may reuse its buffer
                raw[...] = emb
                if unit and raw.ndim == 2:
                    l2_normalize(raw, inplace=True)      # the bits of normalising the float32 output
                if not decide(raw.shape[1:], raw.dtype):
                    place(i, raw)
                written.append(chunks.submit(save_npy, store.chunk_path(i), raw, fsync=False, data_offset=DATA_OFFSET))
                staging.hand_over(raw, written[-1])
                stats.encoded += len(items)
                done += len(items)
                if progress:
                    progress(done, len(table))
        finally:
            if own:
                chunks.close()
        stats.seconds = time.perf_counter() - start
        settings = getattr(encoder, "settings", None)
        if callable(settings):
            write_json(store.dir / "settings.json", settings())
    settings_path = store.dir / "settings.json"
    if settings_path.exists():
        stats.settings = json.loads(settings_path.read_text())
    if plan.get("map"):
        for future in written:                   # this table's chunk files are on the page cache
            future.result()
        out = _mapped(store, *plan["row"])
        if out is None:                          # the mapping failed: read the files back
            for i in range(store.n_chunks):
                place(i, store.load_chunk(i))
    if out is None:                              # an empty table (no chunks)
        return np.zeros((0, 0), dtype=out_dtype or key.dtype), stats
    rows, sources = table.duplicate_rows()
    out[rows] = out[sources]        # identical items, identical bits: their ties are exact, whatever the batching
    return out, stats


def _mapped(store: EmbeddingStore, row_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """The store's rows as one private mapping of its chunk files, or None where a file's header is
    not the one mapping needs (data at ``DATA_OFFSET``, the chunk's shape and ``dtype``) or mapping fails."""
    for i in range(store.n_chunks):
        try:
            offset, shape, got, _ = store.chunk_header(i)
        except (OSError, ValueError):
            return None
        if offset != DATA_OFFSET or got != dtype or tuple(shape) != (_chunk_len(store, i), *row_shape):
            return None
    return map_chunk_files([store.chunk_path(i) for i in range(store.n_chunks)], store.n, row_shape, dtype,
                           store.chunk_size)


class _StagingBuffers:
    """Buffers for chunks on their way to the cache, reused once written.

    At most ``IN_FLIGHT`` chunks wait for the writer; the next chunk then waits for the oldest write
    and takes its buffer. That is backpressure: with a fast GPU encoder and a slow disk (a network
    file system), chunks waiting to be written would otherwise pile up in memory without bound
    (MSMARCO's 8.8M passages x 768 float32 are 27 GB); now encoding slows to the disk's pace.
    """

    IN_FLIGHT = 3

    def __init__(self, chunk_rows: int) -> None:
        self.chunk_rows = chunk_rows
        self._queue: deque[tuple[Future, np.ndarray]] = deque()

    def take(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """A writable array of ``shape`` and ``dtype`` that no pending write reads."""
        base = None
        if len(self._queue) >= self.IN_FLIGHT:
            future, base = self._queue.popleft()
            future.result()                              # its write is done (or raise its failure)
        if base is None or base.dtype != np.dtype(dtype) or base.shape[1:] != tuple(shape[1:]) or base.shape[0] < shape[0]:
            base = np.empty((max(self.chunk_rows, shape[0]), *shape[1:]), dtype)
        return base[: shape[0]]                          # always a view: ``hand_over`` keeps its base

    def hand_over(self, view: np.ndarray, future: Future) -> None:
        """``view`` (from :meth:`take`) is being written by ``future``: reuse it only after that."""
        self._queue.append((future, view.base))


def _chunk_len(store: EmbeddingStore, i: int) -> int:
    return min(store.chunk_size, store.n - i * store.chunk_size)


def _check_finite(emb: np.ndarray, items: list, key: EmbeddingKey) -> None:
    """Raise, naming the first item, when the model returned NaN or infinite values."""
    if emb.dtype.kind == "f" and not np.isfinite(emb).all():
        row = int(np.flatnonzero(~np.isfinite(emb.reshape(len(items), -1)).all(axis=1))[0])
        raise RuntimeError(f"model {key.model!r} returned non-finite values (NaN or inf) for {key.role} "
                           f"{items[row].id!r}; nothing of this chunk was cached")
