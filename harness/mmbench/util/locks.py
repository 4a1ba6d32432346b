"""One writer per folder: an exclusive ``fcntl.flock`` on a lock file, and the cleanup it makes safe.

A run holds the lock of its results folder for the whole run, and the lock of each embedding cache
entry while it reads and writes that entry (:mod:`mmbench.embeddings.embed`). A second run that
needs a folder held by another process waits for it, after one message through the caller's
``message`` callback ("waiting for ..."); it never deletes or rewrites a folder under a running
writer. The kernel drops a ``flock`` when its process ends, however it ends (SIGKILL included), so
a lock is never left stale.

Holding the lock makes the folder's ``.<file>.<hex>.tmp`` files (:func:`mmbench.util.io.atomic_open`)
provably orphans: only a writer of that folder creates them, every writer holds the lock, and a
writer removes its temporary file or renames it before it releases the lock (or it was killed).
:func:`FolderLock.acquire` therefore removes them.

Locks are re-entrant within a process (a second acquire of a path this process holds only counts):
``flock`` locks belong to open files, and a process opening the same lock file twice would wait for
itself. Locks on a file system without ``flock`` (some network file systems) are skipped with a
message rather than failing the run. POSIX only; elsewhere locking is a no-op.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["FolderLock", "TEMP_FILE", "remove_stale_temp_files"]

TEMP_FILE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")     # util.io._create_temp's names

_held: dict[str, list] = {}          # lock path -> [fd, count]: this process's locks
_guard = threading.Lock()


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Remove the temporary files of atomic writes in ``folder`` (not below it); call only with the
    folder's lock held. Returns the files removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if TEMP_FILE.match(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


class FolderLock:
    """The exclusive lock of ``folder``, held on ``lock_file`` (default ``folder/.mmbench.lock``).

    ``what`` names the folder in the waiting message; ``clean`` lists the folders whose stale
    temporary files are removed once the lock is held (default: ``folder``). Use as a context
    manager, or :meth:`acquire` and :meth:`release` (release may run on another thread).
    """

    def __init__(self, folder: Path, what: str, message: Callable[[str], None] | None = None, *,
                 lock_file: Path | None = None, clean: tuple[Path, ...] | None = None):
        self.folder = Path(folder)
        self.path = Path(lock_file) if lock_file is not None else self.folder / ".mmbench.lock"
        self.what, self.message = what, message
        self.clean = (self.folder,) if clean is None else clean
        self.removed: list[Path] = []
        self._acquired = False

    def acquire(self) -> FolderLock:
        try:
            import fcntl
        except ImportError:                      # not POSIX: no locking
            return self
        key = os.path.abspath(self.path)
        with _guard:
            held = _held.get(key)
            if held is not None:
                held[1] += 1
                self._acquired = True
                return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if self.message:
                    self.message(f"waiting for {self.what} {self.folder}: another mmbench run is using it")
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:                   # no flock here (ENOLCK, EINVAL on some file systems)
            os.close(fd)
            if self.message:
                self.message(f"{self.what} {self.folder}: cannot lock {self.path} ({exc.strerror}); "
                             "concurrent runs into it are not detected")
            return self
        except BaseException:
            os.close(fd)
            raise
        with _guard:
            _held[key] = [fd, 1]
        self._acquired = True
        for folder in self.clean:
            self.removed += remove_stale_temp_files(folder)
        return self

    def release(self) -> None:
        """Release once (later calls do nothing); the last holder in this process drops the flock."""
        key = os.path.abspath(self.path)
        with _guard:
            if not self._acquired:
                return
            self._acquired = False
            held = _held.get(key)
            if held is None:
                return
            held[1] -= 1
            if held[1]:
                return
            del _held[key]
        os.close(held[0])                        # closing the last descriptor drops the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
