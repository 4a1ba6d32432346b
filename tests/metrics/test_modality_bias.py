"""mmbench.metrics.modality.without_wrong_modality: the score a run would get without its wrong-modality
candidates (issue #27), checked by hand and by properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbench.metrics.modality import filtered_scores, is_target, target_only, without_wrong_modality
from mmbench.metrics.scoring import CandidateIds, Run, evaluate

METRICS = ["hit@1", "hit@2", "hit@3", "recall@2", "ndcg@3", "mrr@3", "map@3", "precision@2"]


def _run(rows: list[list[int]], ids: CandidateIds) -> Run:
    width = max(len(r) for r in rows)
    idx = np.full((len(rows), width), -1, dtype=np.int64)
    sc = np.full((len(rows), width), -np.inf)
    for i, r in enumerate(rows):
        idx[i, :len(r)] = r
        sc[i, :len(r)] = np.arange(len(r), 0, -1, dtype=float)    # descending: already rule-ordered
    return Run([f"q{i}" for i in range(len(rows))], ids, idx, sc)


def test_hand_case():
    # pool: c0 image, c1 text, c2 image, c3 text, c4 image; the task wants images
    ids = CandidateIds(["c0", "c1", "c2", "c3", "c4"])
    pool = np.array(["image", "text", "image", "text", "image"])
    # q0: text, text, image(relevant) -> hit@1 0, hit@2 0; filtered: image(relevant) first -> hit@1 1
    # q1: image(relevant), text, image -> already hit@1; filtered the same
    # q2: text, image, text (relevant c4 never retrieved) -> 0 either way
    ranked = _run([[1, 3, 2], [0, 1, 4], [3, 0, 1]], ids)
    qrels = {"q0": {"c2": 1}, "q1": {"c0": 1}, "q2": {"c4": 1}}
    base = evaluate(ranked, qrels, ["hit@1", "hit@2", "mrr@3"]).mean
    assert base == pytest.approx({"hit@1": 1 / 3, "hit@2": 1 / 3, "mrr@3": (1 / 3 + 1 + 0) / 3})
    out = without_wrong_modality(ranked, qrels, pool, "image", ["hit@1", "hit@2", "mrr@3"], "hit@1", base)
    assert out["metrics"] == {"hit@1": round(2 / 3, 6), "hit@2": round(2 / 3, 6), "mrr@3": round(2 / 3, 6)}
    assert out["main_score"] == round(2 / 3, 6) and out["gap"] == round(1 / 3, 6)
    assert out["removed_slots"] == 5 and out["depth"] == 3
    # every row is full to depth 3 and keeps fewer than 3 images (mrr@3 reads 3): each may be a lower bound
    assert out["short_queries"] == 3
    two = without_wrong_modality(ranked, qrels, pool, "image", ["hit@1", "hit@2"], "hit@1", base)
    assert two["short_queries"] == 2                     # with k <= 2 only q0 and q2 (one image each) are short
    # the filtered rows themselves
    keep = is_target(ranked.indices, pool, "image")
    idx, sc = target_only(ranked.indices, ranked.scores, keep)
    assert idx.tolist() == [[2, -1, -1], [0, 4, -1], [0, -1, -1]]
    assert sc[0].tolist() == [1.0, -np.inf, -np.inf] and sc[1].tolist() == [3.0, 1.0, -np.inf]


def test_modality_labels_compare_as_sets():
    pool = np.array(["text,image", "image", "image,text"])
    assert is_target(np.array([[0, 1, 2, -1]]), pool, "image,text").tolist() == [[True, False, True, False]]


def test_local_pool_shortcut_returns_the_run_scores():
    ids = CandidateIds(["a", "b", "c"])
    ranked = _run([[0, 1, 2], [2, 1]], ids)
    qrels = {"q0": {"b": 1}, "q1": {"a": 1}}
    base = evaluate(ranked, qrels, METRICS).mean
    out = without_wrong_modality(ranked, qrels, np.array(["text"] * 3), "text", METRICS, "ndcg@3", base)
    assert out["gap"] == 0.0 and out["removed_slots"] == 0 and out["short_queries"] == 0
    assert out["metrics"] == {m: round(v, 6) for m, v in base.items()}


MODALITIES = ["image", "text", "image,text"]


@st.composite
def cases(draw):
    """A pool of mixed modalities, a run over it (rows of distinct candidates, some short) and qrels."""
    n = draw(st.integers(2, 12))
    pool = np.array(draw(st.lists(st.sampled_from(MODALITIES), min_size=n, max_size=n)))
    ids = CandidateIds([f"c{i:02d}" for i in range(n)])
    n_q = draw(st.integers(1, 5))
    depth = draw(st.integers(1, n))
    rows = [draw(st.lists(st.integers(0, n - 1), min_size=0, max_size=depth, unique=True)) for _ in range(n_q)]
    target = draw(st.sampled_from(MODALITIES))
    qrels = {}
    for q in range(n_q):
        rel = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3, unique=True))
        qrels[f"q{q}"] = {ids[i]: draw(st.integers(1, 2)) for i in rel}
    return pool, ids, rows, target, qrels, depth


def _ranked(ids: CandidateIds, rows: list[list[int]], depth: int) -> Run:
    idx = np.full((len(rows), depth), -1, dtype=np.int64)
    sc = np.full((len(rows), depth), -np.inf)
    for i, r in enumerate(rows):
        idx[i, :len(r)] = r
        sc[i, :len(r)] = np.linspace(1.0, 0.5, len(r)) if r else []
    return Run([f"q{i}" for i in range(len(rows))], ids, idx, sc).sort_rows()


@settings(max_examples=200, deadline=None)
@given(cases())
def test_removing_wrong_modality_never_lowers_a_score_when_positives_are_of_the_target(case):
    pool, ids, rows, target, qrels, depth = case
    # relevant candidates of the target modality only (M-BEIR's case): drop the others from the qrels
    want = is_target(np.arange(len(ids))[None, :], pool, target)[0]
    qrels = {q: {d: r for d, r in docs.items() if want[ids.position[d]]} for q, docs in qrels.items()}
    qrels = {q: docs for q, docs in qrels.items() if docs}
    ranked = _ranked(ids, rows, depth)
    base = evaluate(ranked, qrels, METRICS)
    filtered, _ = filtered_scores(ranked, qrels, pool, target, METRICS)
    for m in METRICS:
        assert np.all(filtered.per_query[m] >= base.per_query[m] - 1e-12), m
    out = without_wrong_modality(ranked, qrels, pool, target, METRICS, "hit@2", base.mean)
    assert out["gap"] >= 0


@settings(max_examples=200, deadline=None)
@given(cases())
def test_with_no_wrong_modality_in_the_pool_the_scores_are_equal(case):
    pool, ids, rows, target, qrels, depth = case
    pool = np.full(len(ids), target)                    # every candidate of the target modality
    ranked = _ranked(ids, rows, depth)
    base = evaluate(ranked, qrels, METRICS)
    filtered, indices = filtered_scores(ranked, qrels, pool, target, METRICS)   # the real filter, no shortcut
    assert np.array_equal(indices, ranked.indices)
    for m in METRICS:
        assert np.array_equal(filtered.per_query[m], base.per_query[m]), m


@settings(max_examples=100, deadline=None)
@given(cases())
def test_filtered_run_equals_ranking_the_target_candidates_alone(case):
    """The filter is the ranking a search over the target-modality candidates alone would give, within
    the run's depth: evaluate that ranking built independently, per query, in Python."""
    pool, ids, rows, target, qrels, depth = case
    ranked = _ranked(ids, rows, depth)
    want = is_target(np.arange(len(ids))[None, :], pool, target)[0]
    alone = {}
    for q, row, srow in zip(ranked.query_ids, ranked.indices.tolist(), ranked.scores.tolist()):
        alone[q] = {ids[j]: s for j, s in zip(row, srow) if j >= 0 and want[j]}
    alone_run = Run.from_dict(alone) if any(alone.values()) else None
    filtered, _ = filtered_scores(ranked, qrels, pool, target, METRICS)
    if alone_run is None:
        assert all(v == 0 for v in filtered.mean.values())
        return
    expected = evaluate(alone_run, qrels, METRICS)
    assert filtered.query_ids == expected.query_ids or sorted(filtered.query_ids) == sorted(expected.query_ids)
    for m in METRICS:
        got = dict(zip(filtered.query_ids, filtered.per_query[m]))
        exp = dict(zip(expected.query_ids, expected.per_query[m]))
        assert got == pytest.approx(exp), m
