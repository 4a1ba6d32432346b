"""Modality report: how much of each query's top-k is of a modality other than the task's target.

This is the failure the MM-Embed paper calls modality bias: in the global pool (which mixes text,
image and image+text candidates) a model asked for images may return captions. In a local pool,
which holds one modality, the share is 0 by construction.
"""

from __future__ import annotations

import numpy as np


def modality_report(indices: np.ndarray, pool_modalities: np.ndarray, target: str, ks: list[int]) -> dict:
    """``indices`` (Q, k) into the pool (-1 = empty); ``pool_modalities`` a str array of the pool.

    Returns ``{"target": ..., "at": {k: {"wrong_modality_share": x, "by_modality": {m: share}}}}``
    where shares are fractions of all retrieved slots within the top k.
    """
    out: dict = {"target": target, "at": {}}
    labels, codes = np.unique(pool_modalities, return_inverse=True)
    for k in ks:
        top = indices[:, :k]
        valid = top >= 0
        n = int(valid.sum())
        if n == 0:
            out["at"][str(k)] = {"wrong_modality_share": 0.0, "by_modality": {}}
            continue
        counts = np.bincount(codes[top[valid]], minlength=len(labels))
        by = {str(m): round(float(c) / n, 6) for m, c in zip(labels, counts) if c}
        out["at"][str(k)] = {"wrong_modality_share": round(1.0 - by.get(target, 0.0), 6), "by_modality": by}
    return out
