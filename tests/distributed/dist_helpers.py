"""Helpers of the distributed-run tests: a tiny random-weight CLIP checkpoint (real architecture, CPU
in milliseconds) and the commands that run mmbench as one process or as torchrun ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LAUNCH = Path(__file__).with_name("dist_launch.py")


def build_tiny_clip(folder: Path) -> Path:
    """A CLIP with 2 layers of width 32 and 32 px images, random weights from seed 0, saved with
    MiniLM's BERT tokenizer (offline)."""
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    from mmbench.models.minilm import package_model_path

    if (folder / "config.json").exists():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(package_model_path(), local_files_only=True)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(small, vocab_size=tokenizer.vocab_size, max_position_embeddings=77,
                         bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(small, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


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
