r"""Modality report: how much of each query's top-k is of a modality other than the task's target, and
the score the task would get if those candidates were not in the ranking.

This is the failure the MM-Embed paper calls modality bias: in the global pool (which mixes text,
image and image+text candidates) a model asked for images may return captions. In a local pool,
which holds one modality, the share is 0 by construction and the two scores are equal.

**The score without wrong-modality candidates** (:func:`without_wrong_modality`). For a query with
ranked run :math:`d_1, d_2, \dots, d_D` (the run as searched, :math:`D` = its depth) and target modality
:math:`m^*`, the filtered run is the subsequence :math:`(d_i : \mathrm{mod}(d_i) = m^*)` in the same
order: candidates of another modality are dropped and the others move up. Every metric of the task is
then computed on the filtered run by the same code as the headline (:func:`mmbench.metrics.scoring.evaluate`),
and the gap is filtered minus unfiltered. The filtered run keeps the tie rule's order (a subsequence of
a rule-ordered row is rule-ordered).

*Exactness.* Let :math:`K` be the largest cut-off of the task's metrics. The filtered run's first
:math:`K` entries are the top :math:`K` target-modality candidates of the whole pool when the filtered
row holds at least :math:`K` entries (every target candidate ranked above them is in the run) or when
the run row is not full (the search returned every candidate it had). Otherwise (a row full to
:math:`D` with fewer than :math:`K` target candidates) target candidates beyond rank :math:`D` could
move up; the filtered value of such a query is then a lower bound, and the report counts these queries
(``short_queries``).

*Properties* (tested). When every relevant candidate has the target modality, dropping other
candidates only moves relevant ones up, so hit@k, recall@k, precision@k and mrr@k never decrease
(ndcg@k and map@k as well: each relevant candidate's rank can only improve). When no retrieved
candidate is of another modality, the filtered run is the run and the scores are equal. A relevant
candidate of another modality (a qrels entry outside the target) is dropped like any other: the
filtered score counts it as not retrieved.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def same_modality(a: str, b: str) -> bool:
    """Whether two modality labels name the same modality (``"text,image"`` is ``"image,text"``); labels
    that are no modality compare as strings."""
    from mmbench.data.types import modality_parts

    try:
        return modality_parts(a) == modality_parts(b)
    except ValueError:
        return a == b


def is_target(indices: np.ndarray, pool_modalities: np.ndarray, target: str) -> np.ndarray:
    """bool, the shape of ``indices``: the slot holds a candidate of modality ``target`` (empty slots,
    index -1, are False). Modalities compare as sets of parts (``"text,image"`` is ``"image,text"``).
    The labels are matched where there are fewer of them: over the pool, or over the retrieved slots'
    labels (a global pool has millions of candidates and a handful of distinct labels)."""
    indices = np.asarray(indices)
    pool_modalities = np.asarray(pool_modalities)
    valid = indices >= 0
    n_valid = int(valid.sum())
    if pool_modalities.size == 0 or n_valid == 0:
        return np.zeros(indices.shape, dtype=bool)
    if pool_modalities.size <= n_valid:
        return np.append(_matching(pool_modalities, target), False)[indices]     # index -1 -> False
    return _matching(pool_modalities[np.where(valid, indices, 0)], target) & valid


def _matching(labels: np.ndarray, target: str) -> np.ndarray:
    """bool, the shape of ``labels``: the label is ``target``'s modality; one vectorised comparison per
    distinct label."""
    match = np.zeros(labels.shape, dtype=bool)
    todo = np.ones(labels.shape, dtype=bool)
    while todo.any():
        label = labels[np.unravel_index(np.argmax(todo), todo.shape)]
        same = labels == label
        if same_modality(str(label), target):
            match |= same
        todo &= ~same
    return match


def target_only(indices: np.ndarray, scores: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's slots where ``keep`` holds, moved to the front in their order; the freed slots at the
    end are empty (index -1, score -inf). Same shapes as the inputs."""
    order = np.argsort(~keep, axis=1, kind="stable")             # kept slots first, each group in order
    kept = np.take_along_axis(keep, order, axis=1)
    out_i = np.where(kept, np.take_along_axis(indices, order, axis=1), -1)
    out_s = np.where(kept, np.take_along_axis(scores, order, axis=1), -np.inf)
    return out_i, out_s


def filtered_scores(ranked, qrels, pool_modalities: np.ndarray, target: str, metrics: Sequence[str]):
    """The :class:`~mmbench.metrics.scoring.MetricResult` of ``ranked`` (a
    :class:`~mmbench.metrics.scoring.Run`) with every candidate whose modality is not ``target`` removed
    (module docstring), and the filtered run's index matrix."""
    return _evaluate_kept(ranked, qrels, is_target(ranked.indices, pool_modalities, target), metrics)


def _evaluate_kept(ranked, qrels, keep: np.ndarray, metrics: Sequence[str]):
    from mmbench.metrics.scoring import Run, evaluate

    indices, scores = target_only(ranked.indices, ranked.scores, keep)
    filtered = Run(list(ranked.query_ids), ranked.candidate_ids, indices, scores)
    return evaluate(filtered, qrels, metrics), indices


def without_wrong_modality(ranked, qrels, pool_modalities: np.ndarray, target: str, metrics: Sequence[str],
                           main_metric: str, base: dict[str, float]) -> dict:
    """The record's ``modality_report.without_wrong_modality``: every metric of the task on the run
    with wrong-modality candidates removed (module docstring), its headline, the gap to the run's own
    headline (``base``: the run's metric means), the run depth and ``short_queries`` (rows whose filtered
    value may be a lower bound). When no retrieved candidate is of another modality the filtered run is
    the run, and ``base`` is returned as it is."""
    from mmbench.metrics.families import parse_metric

    depth = int(ranked.indices.shape[1]) if ranked.indices.ndim == 2 else 0
    keep = is_target(ranked.indices, pool_modalities, target)
    valid = ranked.indices >= 0
    removed = int((valid & ~keep).sum())
    if removed:
        result, indices = _evaluate_kept(ranked, qrels, keep, metrics)
        mean = result.mean
        need = max((parse_metric(m)[1] for m in metrics), default=0)
        short_rows = ((indices >= 0).sum(axis=1) < min(need, depth)) & (valid.sum(axis=1) == depth)
        short = int(short_rows.sum())
    else:
        mean, short = base, 0
    values = {m: round(float(mean[m]), 6) for m in metrics}
    return {"target": target, "main_metric": main_metric, "main_score": values[main_metric],
            "gap": round(float(mean[main_metric]) - float(base[main_metric]), 6), "metrics": values,
            "removed_slots": removed, "depth": depth, "short_queries": short}


__all__ = ["filtered_scores", "is_target", "modality_report", "same_modality", "target_only",
           "without_wrong_modality"]
