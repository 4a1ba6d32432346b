"""The process group of a run launched by ``torchrun``: detection, set-up, tear-down, collectives.

A process started by ``torchrun`` (or any launcher that sets torch's ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; ``LOCAL_RANK`` defaults to 0) is one rank of a group:
:func:`process_group` initialises ``torch.distributed`` from those variables (the ``env://``
rendezvous), with NCCL when the run's device is a GPU (``--device cuda``, or ``auto`` where CUDA is
available; each rank then uses ``cuda:LOCAL_RANK``) and gloo otherwise, and destroys it on exit.
Without those variables nothing happens and a run takes the single-process path: the library stays
usable from a notebook. ``torchrun --nproc-per-node 1`` gives a group of one, which takes the
group's path (the same code as N ranks).

mmbench's collectives carry small Python objects (the missing-chunk list, counts), always over gloo
on the CPU: with NCCL as the group's backend a gloo group of the same ranks carries them, so no GPU
memory or stream is involved. Every collective has a timeout (``MMBENCH_DIST_TIMEOUT_S``, default
:data:`DEFAULT_TIMEOUT_S`); when it expires, or a peer's connection closes because its process died,
the rank raises :class:`DistributedError` (one line, exit status 1) instead of waiting forever, and
``torchrun`` ends the other ranks when one fails.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from mmbench.errors import MmbenchError

__all__ = ["DEFAULT_TIMEOUT_S", "DistributedError", "RankInfo", "TIMEOUT_ENV", "all_gather", "broadcast", "collective",
           "current", "launched", "process_group", "receive", "send"]

LAUNCH_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT_ENV = "MMBENCH_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0     # the longest a rank waits for the others at one step


class DistributedError(MmbenchError):
    """A rank of the group failed, is stuck, or disagrees with rank 0."""


@dataclass(frozen=True)
class RankInfo:
    """This process's place in the group. ``control``: the group mmbench's collectives use (gloo)."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    timeout_s: float
    control: object = field(default=None, compare=False, repr=False)

    @property
    def lead(self) -> bool:
        """Rank 0: the rank that reads the cache's state, searches, scores, writes and prints."""
        return self.rank == 0


_state: dict = {}          # "info": the RankInfo of the group this module initialised


def launched(env: dict | None = None) -> bool:
    """Whether this process was started as a rank by torchrun (or a launcher with its variables)."""
    env = os.environ if env is None else env
    return all(env.get(name) for name in LAUNCH_ENV)


def timeout_s(env: dict | None = None) -> float:
    env = os.environ if env is None else env
    raw = env.get(TIMEOUT_ENV, "")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise MmbenchError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds above 0")
    return value


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None and default is not None:
        return default
    try:
        return int(raw or "")
    except ValueError:
        raise MmbenchError(f"environment variable {name}={raw!r}: expected an integer (set by torchrun)") from None


def _uses_cuda(device: str) -> bool:
    if device.startswith("cuda"):
        return True
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return False


@contextmanager
def process_group(device: str = "auto") -> Iterator[RankInfo | None]:
    """The run's group while the block runs: None when the process was not launched as a rank; the
    group already initialised by the caller, if any (left as it is); else a new one, destroyed on exit.
    ``device``: the run's ``--device``; ``cuda:N`` is refused with several ranks (each rank uses
    ``cuda:LOCAL_RANK``)."""
    if not launched():
        yield None
        return
    import torch.distributed as dist

    if dist.is_initialized():
        yield current()
        return
    rank, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK", 0)
    if device.startswith("cuda:") and world > 1:
        raise MmbenchError(f"--device {device} names one GPU, but this run has {world} ranks (each uses "
                           "cuda:LOCAL_RANK): pass --device cuda or auto")
    from datetime import timedelta

    seconds = timeout_s()
    backend = "gloo"
    if _uses_cuda(device):
        import torch

        torch.cuda.set_device(local)
        backend = "nccl"
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=seconds))
        control = dist.new_group(backend="gloo", timeout=timedelta(seconds=seconds)) if backend != "gloo" else None
    except (RuntimeError, ValueError) as exc:
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        raise DistributedError(f"rank {rank}: could not join the process group at {where} "
                               f"({_first_line(exc)})") from None
    info = RankInfo(rank, world, local, backend, seconds, control)
    _state["info"] = info
    try:
        yield info
    finally:
        _state.pop("info", None)
        try:
            dist.destroy_process_group()
        except Exception:              # a peer already gone: nothing left to release
            pass


def current() -> RankInfo | None:
    """The group this process is a rank of, or None: the one :func:`process_group` made, else one a
    caller initialised (torch.distributed imported and initialised), else None. Never imports torch."""
    if "info" in _state:
        return _state["info"]
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    backend = str(dist.get_backend())
    control = None
    if backend != "gloo":
        from datetime import timedelta

        control = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s()))
    info = RankInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), backend, timeout_s(), control)
    _state["info"] = info
    return info


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def collective(info: RankInfo, step: str, fn) -> None:
    """Run ``fn`` (a torch.distributed call), turning a timeout or a closed peer into
    :class:`DistributedError` naming this rank and ``step``."""
    try:
        fn()
    except RuntimeError as exc:                   # gloo's timeouts and closed connections, DistBackendError
        raise DistributedError(
            f"rank {info.rank} of {info.world_size}: at {step}: {_first_line(exc)}; another rank failed, or "
            f"has not reached this step within {info.timeout_s:g} s ({TIMEOUT_ENV})") from None


def broadcast(info: RankInfo, obj: object, step: str) -> object:
    """Rank 0's ``obj`` on every rank (``step`` names the wait in errors)."""
    import torch.distributed as dist

    box = [obj if info.lead else None]
    collective(info, step, lambda: dist.broadcast_object_list(box, src=0, group=info.control))
    return box[0]


def all_gather(info: RankInfo, obj: object, step: str) -> list:
    """Every rank's ``obj``, in rank order, on every rank; returns once every rank has called it."""
    import torch.distributed as dist

    out: list = [None] * info.world_size
    collective(info, step, lambda: dist.all_gather_object(out, obj, group=info.control))
    return out


def send(info: RankInfo, obj: object, dst: int, step: str) -> None:
    """Send ``obj`` to rank ``dst`` (which calls :func:`receive`)."""
    import torch.distributed as dist

    collective(info, step, lambda: dist.send_object_list([obj], dst=dst, group=info.control))


def receive(info: RankInfo, src: int, step: str) -> object:
    """The object rank ``src`` sends with :func:`send`."""
    import torch.distributed as dist

    box = [None]
    collective(info, step, lambda: dist.recv_object_list(box, src=src, group=info.control))
    return box[0]
