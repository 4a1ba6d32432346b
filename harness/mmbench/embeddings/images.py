"""What the images of an item table are, so that embeddings and results always match them.

The data fingerprints of a task cover its JSONL files, which name the images but do not hold them:
an image replaced under the same name would leave every fingerprint as it was. Two fingerprints of
the images a table reads, in the order of the table:

* :func:`images_fingerprint` (cheap, every run): the sha256 of each image's path, size and
  ``st_mtime_ns``. It enters the embedding cache key of the table (a changed image gives another
  cache entry: the table is encoded again) and the task record's provenance (a finished result of
  other images is not reused). Replacing, rewriting or touching a file changes its mtime (or size),
  so it is noticed; a copy that keeps both size and mtime (``cp -p``, ``rsync -t``) is not: that
  is what :func:`images_sha256` is for.
* :func:`images_sha256` (``--verify-data``): the sha256 of every image's bytes. Recorded in the
  provenance, and stored in the cache entry when it is encoded with it; a cache entry whose stored
  content digest is absent or other is encoded again (:func:`mmbench.embeddings.embed_table`).

A table without images has no image fingerprint (None): its cache key and record stay as they
were before images were fingerprinted. A missing image file enters as ``missing`` (the encoder
reports it when it reads it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mmbench.data.types import ItemTable
from mmbench.util.io import file_sha256

__all__ = ["image_files", "images_fingerprint", "images_sha256"]


def image_files(table: ItemTable) -> list[Path]:
    """The image file of every item that has one, in the order of the table."""
    root = Path(table.root)
    return [root / p for p in table.image_paths if p]


def images_fingerprint(table: ItemTable) -> str | None:
    """sha256 over ``path NUL size NUL mtime_ns NUL`` of each image (table order); None without images."""
    files = image_files(table)
    if not files:
        return None
    h = hashlib.sha256()
    for path in files:
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}\0{st.st_mtime_ns}"
        except OSError:
            stamp = "missing\0"
        h.update(f"{path}\0{stamp}\0".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def images_sha256(table: ItemTable) -> str | None:
    """sha256 over ``path NUL sha256(bytes) NUL`` of each image (table order); None without images.
    Reads every byte of every image (a file read once however often the table names it)."""
    files = image_files(table)
    if not files:
        return None
    seen: dict[Path, str] = {}
    h = hashlib.sha256()
    for path in files:
        if path not in seen:
            seen[path] = _file_sha256(path)
        h.update(f"{path}\0{seen[path]}\0".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError:
        return "missing"
