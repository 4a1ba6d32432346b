"""mmbench.metrics: equality with pytrec_eval on random runs with ties, for every family in the table, and
hand-computed cases.

The equivalence check reads :data:`mmbench.metrics.families.FAMILIES` when it runs: each entry's
``trec_eval`` measure (and ``cut``) says what pytrec_eval must agree with, so a family added to the table is
checked without a change here (``test_a_registered_family_is_checked`` proves it with throw-away families).
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import pytrec_eval
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbench.metrics.families import (
    FAMILIES,
    Matched,
    MetricFamily,
    parse_metric,
    register_metric_family,
    unregister_metric_family,
)
from mmbench.metrics.scoring import CandidateIds, Run, evaluate, tiebreak_ranks

KS = (1, 3, 5, 10, 20)

# Short ids over digits, letters and a non-ASCII letter: string order differs from numeric order.
doc_ids = st.text(alphabet="019aZé", min_size=1, max_size=3)
scores = st.sampled_from([-1.5, 0.0, 0.5, 1.0, 2.0])     # few values: many ties


@st.composite
def cases(draw) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]], list[int]]:
    """A run with ties, graded qrels (0..3) over a larger id set, and cut-offs.

    Some queries are only in the run, some only in the qrels, some have empty rows or no judgments,
    and some relevant documents are retrieved for no query at all.
    """
    docs = draw(st.lists(doc_ids, min_size=1, max_size=30, unique=True))
    run: dict[str, dict[str, float]] = {}
    qrels: dict[str, dict[str, int]] = {}
    for q in draw(st.permutations([f"q{i}" for i in range(draw(st.integers(1, 8)))])):
        if draw(st.integers(0, 4)):
            row = draw(st.lists(st.sampled_from(docs), unique=True, max_size=25))
            run[q] = {d: draw(scores) for d in row}
        if draw(st.integers(0, 4)):
            qrels[q] = draw(st.dictionaries(st.sampled_from(docs), st.integers(0, 3), max_size=8))
    ks = draw(st.lists(st.sampled_from(KS), min_size=1, max_size=len(KS), unique=True))
    return run, qrels, ks


def truncated(run: dict[str, dict[str, float]], k: int) -> dict[str, dict[str, float]]:
    """Each row's top k in trec_eval's order (score descending, then document id descending; Python's
    string order is codepoint order, which is the byte order of trec_eval's strcmp on UTF-8)."""
    return {q: dict(sorted(row.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:k]) for q, row in run.items()}


def pytrec_scores(run, qrels, ks, families: list[MetricFamily]) -> dict[str, dict[str, float]]:
    """pytrec_eval's value of ``FAMILY@K`` for each family and k, per query it reports: ``trec_eval_k``
    for a family with ``cut``, else its measure on the run truncated to the top k."""
    out: dict[str, dict[str, float]] = {}
    cut = ",".join(map(str, ks))
    with_cut = [f for f in families if f.cut]
    if with_cut:
        measures = {f"{f.trec_eval}.{cut}" for f in with_cut}
        for q, m in pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run).items():
            out.setdefault(q, {}).update({f"{f.name}@{k}": m[f"{f.trec_eval}_{k}"] for f in with_cut for k in ks})
    for f in families:
        if not f.cut:
            for k in ks:
                for q, m in pytrec_eval.RelevanceEvaluator(qrels, {f.trec_eval}).evaluate(truncated(run, k)).items():
                    out.setdefault(q, {})[f"{f.name}@{k}"] = m[f.trec_eval]
    return out


def check_against_pytrec_eval(run_dict, qrels, ks) -> list[str]:
    """Assert that ``evaluate`` equals pytrec_eval on ``FAMILY@K`` for every family in the table and every
    k in ``ks``, per query; return the metric names checked."""
    families = list(FAMILIES.values())
    names = [f"{f.name}@{k}" for f in families for k in ks]
    run = Run.from_dict(run_dict)
    result = evaluate(run, qrels, names)

    judged = [q for q, docs in qrels.items() if docs]
    assert result.query_ids == [q for q in run_dict if q in judged] + [q for q in judged if q not in run_dict]
    expected = pytrec_scores(run_dict, qrels, ks, families)
    for i, q in enumerate(result.query_ids):
        for name in names:
            want = expected[q][name] if q in run_dict else 0.0     # pytrec_eval drops queries not in the run
            assert result.per_query[name][i] == pytest.approx(want, abs=1e-6), (q, name)
    for name in names:
        assert result.mean[name] == pytest.approx(np.mean(result.per_query[name]) if judged else 0.0)
    return names


def shuffled_copy(run: Run, seed: int) -> Run:
    """The same run with candidate ids permuted, columns shuffled and an empty column added, re-sorted."""
    rng = np.random.default_rng(seed)
    n = len(run.candidate_ids)
    perm = rng.permutation(n)                       # old index -> new index
    ids = [""] * n
    for old, new in enumerate(perm.tolist()):
        ids[new] = run.candidate_ids[old]
    indices = np.where(run.indices >= 0, perm[np.maximum(run.indices, 0)], -1)
    indices = np.hstack([indices, np.full((len(indices), 1), -1)])
    scores = np.hstack([run.scores, np.full((len(indices), 1), -np.inf)])
    cols = rng.permutation(indices.shape[1])
    return Run(run.query_ids, ids, indices[:, cols], scores[:, cols]).sort_rows()


@settings(max_examples=150, deadline=None)
@given(cases(), st.integers(0, 2**32 - 1))
def test_matches_pytrec_eval(case, seed):
    run_dict, qrels, ks = case
    names = check_against_pytrec_eval(run_dict, qrels, ks)
    assert {parse_metric(name)[0] for name in names} == set(FAMILIES)      # every family in the table

    # from_dict gave a CandidateIds; the shuffled copy has a plain list (the other lookup path).
    run = Run.from_dict(run_dict)
    result, other = evaluate(run, qrels, names), evaluate(shuffled_copy(run, seed), qrels, names)
    assert other.query_ids == result.query_ids
    for name in names:
        np.testing.assert_allclose(other.per_query[name], result.per_query[name], atol=1e-12)


@contextmanager
def registered(*families: MetricFamily) -> Iterator[None]:
    """The table with ``families`` added for the duration."""
    for family in families:
        register_metric_family(family)
    try:
        yield
    finally:
        for family in families:
            unregister_metric_family(family.name)


def _relret(m: Matched) -> np.ndarray:
    return m.count()


def _relative_precision(m: Matched) -> np.ndarray:
    den = np.minimum(m.n_rel, m.k)
    return np.divide(m.count(), den, out=np.zeros(m.n), where=den > 0)


# Two throw-away families: trec_eval's relative_P (takes the cut-off) and num_rel_ret (on the top k).
THROWAWAY = (
    MetricFamily("relp", "relative_P", True, "relative_precision",
                 "relevant candidates in the top k / min(k, relevant candidates in qrels)", _relative_precision),
    MetricFamily("relret", "num_rel_ret", False, "relevant_retrieved", "relevant candidates in the top k", _relret),
)


def test_a_registered_family_is_checked():
    """One table entry is all a family needs: parse_metric, evaluate and the equivalence check pick it up."""
    with registered(*THROWAWAY):
        assert parse_metric("relp@7") == ("relp", 7) and parse_metric("relret@3") == ("relret", 3)

        @settings(max_examples=60, deadline=None)
        @given(cases())
        def check(case):
            names = check_against_pytrec_eval(*case)
            assert {"relp", "relret"} <= {parse_metric(name)[0] for name in names}

        check()
    with pytest.raises(ValueError, match="bad metric"):
        parse_metric("relp@7")


def test_the_equivalence_check_catches_a_wrong_scorer():
    """A family whose scorer disagrees with its trec_eval measure fails the check (here: counting hits
    where trec_eval's success is 0 or 1)."""
    wrong = MetricFamily("badhit", "success", True, "bad_hit", "not success", _relret)
    run, qrels = {"q": {"a": 2.0, "b": 1.0, "c": 0.5}}, {"q": {"a": 1, "b": 1}}
    with registered(wrong), pytest.raises(AssertionError, match="badhit@3"):
        check_against_pytrec_eval(run, qrels, [3])
    check_against_pytrec_eval(run, qrels, [3])                 # the built-in table passes


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(["q1", "q2", "10", "9"]),
                       st.dictionaries(doc_ids, st.floats(-5, 5, allow_nan=False), max_size=6), max_size=4))
def test_from_dict_to_dict_round_trip(run_dict):
    assert Run.from_dict(run_dict).to_dict() == run_dict


def test_hit_vs_recall_on_multi_positive_query():
    qrels = {"q": {f"p{i}": 1 for i in range(5)}}
    run = Run.from_dict({"q": {"p0": 0.9, "x1": 0.8, "x2": 0.7, "x3": 0.6, "x4": 0.5}})
    names = ["hit@5", "recall@5", "precision@5", "mrr@5", "map@5", "ndcg@5"]
    r = evaluate(run, qrels, names)
    idcg = sum(1 / math.log2(i + 2) for i in range(5))
    assert r.mean == pytest.approx(
        {"hit@5": 1.0, "recall@5": 0.2, "precision@5": 0.2, "mrr@5": 1.0, "map@5": 0.2, "ndcg@5": 1 / idcg}
    )


def test_ties_are_broken_by_id_descending_in_either_insertion_order():
    qrels = {"q": {"b": 1}}
    for row in ({"a": 1.0, "b": 1.0, "c": 1.0}, {"c": 1.0, "b": 1.0, "a": 1.0}):
        run = Run.from_dict({"q": row})
        assert list(run.to_dict()["q"]) == ["c", "b", "a"]
        assert evaluate(run, qrels, ["mrr@3", "hit@1"]).mean == {"mrr@3": 0.5, "hit@1": 0.0}
    # String order, not numeric: "9" > "10".
    assert list(Run.from_dict({"q": {"10": 1.0, "9": 1.0}}).to_dict()["q"]) == ["9", "10"]


def test_missing_and_empty_queries_score_zero_and_order():
    qrels = {"gone": {"a": 1}, "empty": {"a": 2}, "hit": {"a": 1}, "unjudged": {}}
    run = Run.from_dict({"extra": {"a": 1.0}, "hit": {"a": 1.0}, "empty": {}, "unjudged": {"a": 1.0}})
    r = evaluate(run, qrels, ["ndcg@10", "recall@5"])
    assert r.query_ids == ["hit", "empty", "gone"]
    np.testing.assert_array_equal(r.per_query["ndcg@10"], [1.0, 0.0, 0.0])
    assert r.mean["recall@5"] == pytest.approx(1 / 3)


def test_negative_relevance_is_not_relevant_and_has_no_gain():
    run = Run.from_dict({"q": {"y": 3.0, "x": 1.0}})
    r = evaluate(run, {"q": {"x": 2, "y": -1}}, ["ndcg@3", "mrr@3", "recall@3"])
    assert r.mean == pytest.approx({"ndcg@3": 1 / math.log2(3), "mrr@3": 0.5, "recall@3": 1.0})


def test_no_queries_gives_zero_means():
    r = evaluate(Run.from_dict({"q": {"a": 1.0}}), {}, ["hit@1"])
    assert r.query_ids == [] and r.mean == {"hit@1": 0.0}


@pytest.mark.parametrize("name", ["hit@0", "foo@5", "ndcg", "ndcg@x", "Recall@5", "mrr@-1"])
def test_bad_metric_name(name):
    with pytest.raises(ValueError):
        evaluate(Run.from_dict({"q": {"a": 1.0}}), {"q": {"a": 1}}, [name])


def test_duplicate_candidate_in_row_raises():
    run = Run(["q"], ["a", "b"], np.array([[0, 1, 0]]), np.array([3.0, 2.0, 1.0])[None])
    with pytest.raises(ValueError, match="duplicate"):
        evaluate(run, {"q": {"b": 1}}, ["hit@3"])


@pytest.mark.parametrize("ids", [["a", "a"], CandidateIds(["a", "a"])])
def test_duplicate_pool_ids_raise(ids):
    run = Run(["q"], ids, np.array([[0, 1]]), np.array([[2.0, 1.0]]))
    with pytest.raises(ValueError, match="not unique"):
        evaluate(run, {"q": {"a": 1}}, ["hit@2"])


def test_nan_scores_rejected():
    with pytest.raises(ValueError, match="NaN"):
        Run(["q"], ["a"], np.array([[0]]), np.array([[np.nan]])).sort_rows()


def test_tiebreak_ranks_is_codepoint_order():
    ids = ["b", "10", "9", "é", "Z", "a"]
    np.testing.assert_array_equal(tiebreak_ranks(ids), [4, 0, 1, 5, 2, 3])


def test_import_is_light():
    code = ("import sys, mmbench.metrics.scoring, mmbench.metrics.families;"
            "assert not {'torch', 'faiss', 'transformers'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
