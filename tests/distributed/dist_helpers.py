"""Helpers of the distributed-run tests: a tiny random-weight CLIP checkpoint (real architecture, CPU
in milliseconds) and the commands that run mmbench as one process or as torchrun ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tiny_clip import build_tiny_clip

LAUNCH = Path(__file__).with_name("dist_launch.py")

__all__ = ["build_tiny_clip", "mmbench_env", "single", "torchrun", "torchrun_cmd"]


def mmbench_env(cache: Path, data: Path, **extra: str) -> dict:
    """The environment of one run: its own cache, the shared built data, one thread per process (the
    same float arithmetic in every process, so a chunk's bits do not depend on who encodes it)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(MMBENCH_HOME=str(cache), MMBENCH_CACHE=str(cache), MMBENCH_DATA=str(data), MMBENCH_NO_PROGRESS="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", **extra)
    return env


def single(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m mmbench ARGS``, one process."""
    return subprocess.run([sys.executable, "-m", "mmbench", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def torchrun_cmd(ranks: int, args: list[str], *, launcher: bool = False) -> list[str]:
    """``torchrun --nproc-per-node RANKS -m mmbench ARGS`` (or the fault-injecting launcher script)."""
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
            "--monitor-interval", "0.1"]
    return [*head, str(LAUNCH), *args] if launcher else [*head, "-m", "mmbench", *args]


def torchrun(ranks: int, args: list[str], env: dict, *, launcher: bool = False,
             timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun_cmd(ranks, args, launcher=launcher), env=env, capture_output=True, text=True,
                          timeout=timeout)
