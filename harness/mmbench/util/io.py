"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename over.

A killed process never leaves a half-written file under the final name (the rename is atomic).
The fsync also makes the content durable before the rename, against an OS crash or power loss;
:func:`atomic_open` with ``fsync=False`` skips it for a large file whose completeness the reader
checks another way: the run file (its size is recorded in the task JSON and checked on reuse) and
the embedding cache's chunks (each ``.npy`` header's shape is checked against the file's size).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: Path, mode: str = "w", *, fsync: bool = True) -> Iterator[IO]:
    """Yield a file object; on success the content replaces ``path`` at once, on failure nothing
    changes. ``fsync=False``: not flushed to the disk before the rename (see the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new file beside ``path`` (``.<name>.<random>.tmp``), open for writing, with the permissions
    of any new file (0666 less the umask; ``tempfile.mkstemp`` would make it 0600, and the rename
    would leave results and cache files unreadable to the user's group)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def write_json(path: Path, obj: Any) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False, ensure_ascii=False)
        f.write("\n")


def save_npy(path: Path, array, *, fsync: bool = True, data_offset: int | None = None) -> None:
    """``np.save`` of ``array``, atomically; with ``data_offset``, a version 1.0 ``.npy`` whose
    header is padded so the data starts at that byte (a C-contiguous array; any numpy reads it)."""
    import numpy as np

    with atomic_open(path, "wb", fsync=fsync) as f:
        if data_offset is None:
            np.save(f, array)
            return
        array = np.ascontiguousarray(array)
        f.write(npy_header(array.dtype, array.shape, data_offset))
        if array.size:
            f.write(memoryview(array).cast("B"))


def npy_header(dtype, shape: tuple[int, ...], data_offset: int) -> bytes:
    """The bytes of a version 1.0 ``.npy`` header for a C-order array, padded to ``data_offset`` bytes."""
    import numpy as np

    text = repr({"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                 "shape": tuple(int(n) for n in shape)})
    pad = data_offset - 10 - len(text) - 1      # magic (6) + version (2) + header length (2), then "\n"
    if pad < 0 or data_offset - 10 > 0xFFFF:
        raise ValueError(f"a .npy header for shape {shape} cannot end at byte {data_offset}")
    return b"\x93NUMPY\x01\x00" + (data_offset - 10).to_bytes(2, "little") + (text + " " * pad + "\n").encode("latin1")


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (hex), read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
