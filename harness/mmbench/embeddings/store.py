"""The on-disk cache entry of one :class:`~mmbench.embeddings.key.EmbeddingKey`: chunk files and manifest.

An entry is a folder ``<cache>/embeddings/<model slug>/<key digest>/`` holding ``manifest.json``
(the format, the key, item count, hash of the ids, chunk size), ``chunk_NNNNNN.npy`` files of
``chunk_size`` rows each (the last one shorter), every one written atomically, and, once a chunk was
encoded, ``settings.json`` (the encoder settings that produced the rows). A killed run leaves only
complete chunks, so the next run encodes just the missing ones: at most the chunk that was in flight
is redone. A manifest that differs from the one a run expects (same key, other content) removes the
folder: rows of other items are never mixed in. Every reader and writer of an entry holds its lock
(:meth:`EmbeddingStore.lock`, a file beside the folder, so removing the folder keeps it): a second run
on the same entry waits, and a folder is never removed or rewritten under a running writer; taking the
lock removes the temporary files a killed writer left in the folder.

Chunks are written with their array data at byte :data:`~mmbench.embeddings.mapping.DATA_OFFSET` (a
padded version 1.0 ``.npy`` header: any numpy reads them), so a large pool can be mapped from its files
(:mod:`mmbench.embeddings.mapping`). They are not fsynced: the cache is a cache, and a flush per chunk
made a fast encoder wait for the disk (figures in ``docs/perf.md``, "Embedding cache and encoding"). A
process that is killed loses nothing written (the data is in the OS's page cache); an OS crash or power
loss can leave a renamed chunk empty or short. So a chunk is reused only when its ``.npy`` header reads
back, declares the chunk's row count, and the file's size is the header's plus that array's: otherwise
it is encoded again, with a message that names the file. (A file system that can leave a file at its
full size with its data never written, as ext4 mounted ``data=writeback`` can, is not covered: delete
the model's cache folder after such a crash.)
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from mmbench.embeddings.key import CACHE_FORMAT, EmbeddingKey
from mmbench.embeddings.mapping import DATA_OFFSET, map_chunk_files
from mmbench.util.io import save_npy, write_json
from mmbench.util.locks import FolderLock
from mmbench.util.text import slug

__all__ = ["CHUNK_ABSENT", "EmbeddingStore"]

CHUNK_ABSENT = "absent"      # EmbeddingStore.chunk_problem of a chunk with no file


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

    def chunk_len(self, i: int) -> int:
        """The rows of chunk ``i``: ``chunk_size``, or what is left for the last chunk."""
        return min(self.chunk_size, self.n - i * self.chunk_size)

    def chunk_path(self, i: int) -> Path:
        return self.dir / f"chunk_{i:06d}.npy"

    @property
    def settings_path(self) -> Path:
        return self.dir / "settings.json"

    @property
    def content_path(self) -> Path:
        """The images' content digest the rows were encoded from (``--verify-data``;
        :func:`mmbench.embeddings.images.images_sha256`), when they were encoded with it."""
        return self.dir / "images.sha256"

    def lock(self, message=None) -> FolderLock:
        """The entry's lock: ``.<digest>.lock`` beside its folder; held, it cleans the folder's stale
        temporary files."""
        return FolderLock(self.dir, "the embedding cache entry", message,
                          lock_file=self.dir.parent / f".{self.dir.name}.lock", clean=(self.dir,))

    def open(self, overwrite: bool) -> None:
        """Create the folder and its manifest; remove it first with ``overwrite`` or when its stored
        manifest is not this one."""
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
        rows = self.chunk_len(i)
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

    def write_chunk(self, i: int, rows: np.ndarray) -> None:
        """Write chunk ``i`` atomically, its data at ``DATA_OFFSET``, without an fsync (module docstring)."""
        save_npy(self.chunk_path(i), rows, fsync=False, data_offset=DATA_OFFSET)

    def load(self) -> np.ndarray:
        parts = [np.load(self.chunk_path(i)) for i in range(self.n_chunks)]
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if out.shape[0] != self.n:
            raise RuntimeError(f"embedding cache {self.dir} holds {out.shape[0]} rows, expected {self.n}")
        return out

    def load_chunk(self, i: int) -> np.ndarray:
        arr = np.load(self.chunk_path(i))
        if arr.ndim < 1 or arr.shape[0] != self.chunk_len(i):
            raise RuntimeError(f"embedding cache chunk {self.chunk_path(i)} holds {arr.shape[0] if arr.ndim else 0} "
                               f"rows, expected {self.chunk_len(i)}")
        return arr

    def mapped(self, row_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
        """Every row as one private mapping of the chunk files (:func:`map_chunk_files`), or None where
        a file's header is not the one mapping needs (data at ``DATA_OFFSET``, the chunk's shape and
        ``dtype``) or mapping fails."""
        for i in range(self.n_chunks):
            try:
                offset, shape, got, _ = self.chunk_header(i)
            except (OSError, ValueError):
                return None
            if offset != DATA_OFFSET or got != dtype or tuple(shape) != (self.chunk_len(i), *row_shape):
                return None
        return map_chunk_files([self.chunk_path(i) for i in range(self.n_chunks)], self.n, row_shape, dtype,
                               self.chunk_size)
