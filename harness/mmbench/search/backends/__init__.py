"""The search backends, one module each; each declares whether it is exact.

They are registered lazily (``"module:attr"`` targets: listing them imports none of faiss, torch
or the kernel) in :func:`mmbench.search.backends_registry`; a plugin adds its own through the
entry-point group ``mmbench.search_backends`` (a callable that receives the registry and registers
a :class:`mmbench.search.base.SearchBackend` instance).
"""

from __future__ import annotations

BUILTIN = {
    "scan-cpu": "mmbench.search.backends.scan_cpu:BACKEND",
    "faiss-cpu": "mmbench.search.backends.faiss_cpu:BACKEND",
    "faiss-gpu": "mmbench.search.backends.faiss_gpu:BACKEND",
    "torch": "mmbench.search.backends.torch_cuda:BACKEND",
    "numpy": "mmbench.search.backends.reference:BACKEND",
    "sharded": "mmbench.search.backends.sharded:BACKEND",
    "sharded-faiss": "mmbench.search.backends.sharded:FAISS_BACKEND",
}
"""name -> the module attribute holding the backend."""


def faiss_version() -> str | None:
    """faiss's version, or None where it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss.__version__


def faiss_gpus() -> int:
    """How many GPUs faiss sees (0 without faiss or without its GPU support)."""
    try:
        import faiss
    except ImportError:
        return 0
    return faiss.get_num_gpus()


def torch_cuda_count() -> int:
    """How many CUDA GPUs torch sees (0 when torch is not installed)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def numpy_blas() -> str | None:
    """The BLAS numpy multiplies with, as ``name version`` (None without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for lib in threadpool_info():
        if lib.get("user_api") == "blas" and "numpy" in str(lib.get("filepath", "")):
            return f"{lib.get('internal_api')} {lib.get('version')}"
    return None


def gpu_number(device: str) -> int:
    """N of "cuda:N" (0 for plain "cuda")."""
    return int(device.partition(":")[2] or 0)
