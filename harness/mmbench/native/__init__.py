"""mmbench's C helpers (``_native.c`` beside this module), loaded with ctypes.

They are compiled when mmbench is installed, as an optional extension: without a C compiler the
install still succeeds, :func:`library` returns None, and each caller takes its numpy, Arrow or
faiss path instead (same results). ctypes releases the GIL during every call, so the helpers run
on several threads at once.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
from pathlib import Path

__all__ = ["library"]


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled helpers (``_native*.so`` beside this module) with their signatures, or None where they were not built."""
    folder = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / f"_native{suffix}"
        if path.exists():
            try:
                return _declare(ctypes.CDLL(str(path)))
            except (OSError, AttributeError):      # not loadable, or an older build without a function
                return None
    return None


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    signatures = {
        "mmb_topk_new": (ptr, [i64, i64]),
        "mmb_topk_free": (None, [ptr]),
        "mmb_topk_seed": (None, [ptr, i64, i64, ptr]),
        "mmb_topk_scan": (i32, [ptr, i64, i64, ptr, i64, i64, i64]),
        "mmb_topk_finish": (i64, [ptr, i64, i64, ptr, i64, ptr, ptr, ptr]),
        "mmb_trec_lines": (i64, [i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ctypes.c_char_p, i64, ptr, i64]),
    }
    optional = {
        "mmb_rescore_grouped": (i32, [ptr, ptr, ctypes.c_int32, i64, i64, i64, i64, ptr, ptr, ptr, ptr]),
        "mmb_set_simd": (i32, [i32]),
        "mmb_block_order": (i32, [ptr, i64, i64, i64, ptr]),
        "mmb_rank_rescored": (i32, [i64, ptr, ptr, ptr, ptr, i64, ptr, ptr]),
        "mmb_half_rows": (None, [ptr, i64, i64, i64, ptr]),
        "mmb_max_sumsq": (ctypes.c_double, [ptr, ctypes.c_int32, i64, i64, i64]),
        "mmb_topk_slack": (i32, [ptr, i64, i64, ptr]),
        "mmb_topk_floor": (i32, [ptr, i64, i64, i64, ptr, ptr]),
        "mmb_topk_ids": (None, [ptr, i64, i64, ptr, ptr]),
    }
    for name, (restype, argtypes) in optional.items():     # absent from a build older than the function
        function = getattr(lib, name, None)
        if function is not None:
            function.restype, function.argtypes = restype, argtypes
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib
