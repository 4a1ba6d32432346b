"""Writes off the caller's thread: :class:`BackgroundWriter`, and :class:`StagingBuffers` for the
chunks on their way to it (bounded, so a slow disk slows the encoder instead of filling memory)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

__all__ = ["BackgroundWriter", "StagingBuffers"]


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

    def then(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the writer thread after every write submitted so far, even after a failed
        one (releasing a lock that those writes needed); its own failure is ignored."""
        def call() -> None:
            try:
                fn()
            except Exception:
                pass
        self._pool.submit(call)

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


class StagingBuffers:
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
