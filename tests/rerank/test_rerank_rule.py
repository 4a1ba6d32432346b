"""Rerank run files obey trec_eval's rule at every rank (issue #23): the file re-sorted by score
descending, then document id descending, gives exactly its rank column's order."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbench.metrics.scoring import CandidateIds
from mmbench.rerank.stage import rerank_order
from mmbench.results.trec import read_run, rule_safe_scores, write_trec

# scores that collide in float32 but not in float64: a large base plus steps of 1e-6 (the rerank
# stage's rounding) or of a fraction of a float32 step
BASES = st.sampled_from([0.0, 0.5, 7.25, 1000.0, 123456.0, -3.0])
STEPS = st.sampled_from([1e-6, 1e-7, 3e-8, 1.0, 0.0])


def trec_eval_order(dids: list[str], scores: list[float]) -> list[str]:
    """trec_eval's order of one query's hits: score descending, then docid descending."""
    by_id = sorted(zip(dids, scores), key=lambda h: h[0], reverse=True)
    return [d for d, _ in sorted(by_id, key=lambda h: -h[1])]


@st.composite
def rerank_case(draw):
    n_ids = draw(st.integers(1, 9))
    alphabet = st.sampled_from(["a", "b", "B", "é", "1", "_"])
    ids = draw(st.lists(st.text(alphabet, min_size=1, max_size=3), min_size=n_ids, max_size=n_ids, unique=True))
    q = draw(st.integers(1, 4))
    depth = draw(st.integers(1, n_ids))
    k = draw(st.integers(1, depth + 1))
    base, step = draw(BASES), draw(STEPS)
    cands = CandidateIds(ids)
    idx = np.full((q, depth), -1, np.int64)
    fs = np.full((q, depth), -np.inf)
    scored = np.zeros((q, depth), bool)
    new = np.zeros((q, depth))
    for r in range(q):
        filled = draw(st.integers(0, depth))
        row = draw(st.permutations(range(n_ids)))[:filled]
        # the first stage as its file reads: float32 scores, rows in the rule's order
        raw = np.float32([base + step * draw(st.integers(-3, 3)) for _ in row])
        order = sorted(range(filled), key=lambda i: (-float(raw[i]), -int(cands.ranks[row[i]])))
        idx[r, :filled] = [row[i] for i in order]
        fs[r, :filled] = [float(raw[i]) for i in order]
        for c in range(min(k, filled)):
            scored[r, c] = draw(st.booleans())
            new[r, c] = round(base + step * draw(st.integers(-3, 3)), 6) if scored[r, c] else 0.0
    return cands, idx, fs, scored, new


@settings(max_examples=300, deadline=None)
@given(case=rerank_case())
def test_rerank_run_file_resorted_by_trec_eval_gives_the_rank_column(tmp_path_factory, case):
    cands, idx, fs, scored, new = case
    valid = idx >= 0
    order, out = rerank_order(fs, scored, new, cands.ranks[np.maximum(idx, 0)], valid)
    out_idx = np.take_along_axis(idx, order, axis=1)
    assert out.dtype == np.float32
    path = tmp_path_factory.mktemp("rule") / "run.trec"
    qids = [f"q{r}" for r in range(len(idx))]
    write_trec(path, qids, cands, out_idx, out, "t")
    file_qids, dids, scores = read_run(path)
    for qid, row_ids, row_scores in zip(file_qids, dids, scores):
        assert trec_eval_order(row_ids, row_scores) == row_ids, qid
        r = qids.index(qid)
        assert row_ids == [cands[j] for j in out_idx[r] if j >= 0]        # the intended order, every hit


@settings(max_examples=300, deadline=None)
@given(q=st.integers(1, 4), n=st.integers(0, 10), base=BASES, step=STEPS, data=st.data())
def test_rule_safe_scores_keep_the_rule_with_the_least_change(q, n, base, step, data):
    rows, ties = [], []
    for _ in range(q):
        filled = data.draw(st.integers(0, n))
        s = sorted((base + step * data.draw(st.integers(-4, 4)) for _ in range(filled)), reverse=True)
        rows.append(s + [-np.inf] * (n - filled))
        ties.append(data.draw(st.permutations(range(n))) if n else [])
    scores, tiebreak = np.array(rows, np.float64).reshape(q, n), np.array(ties, np.int64).reshape(q, n)
    out = rule_safe_scores(scores, tiebreak)
    assert out.dtype == np.float32 and out.shape == scores.shape
    assert np.array_equal(np.isinf(out) & (out < 0), np.isinf(scores) & (scores < 0))   # empty slots stay
    for r in range(q):
        for c in range(1, n):
            if out[r, c] == -np.inf:
                continue
            assert out[r, c] < out[r, c - 1] or (out[r, c] == out[r, c - 1] and tiebreak[r, c] < tiebreak[r, c - 1])
        # a score changes only where float32 cannot keep it: the first one never does
        if n and scores[r, 0] != -np.inf:
            assert out[r, 0] == np.float32(scores[r, 0])
    # scores already apart in float32 (and equal ones in id order) are written as they are
    apart = np.float32(np.arange(n, 0, -1, dtype=np.float64) * 0.25)[None, :].repeat(q, 0)
    assert np.array_equal(rule_safe_scores(apart, tiebreak), apart)


def test_rule_safe_scores_moves_a_colliding_score_one_float32_step():
    scores = np.array([[1000.000001, 1000.000002 - 1e-6, 1000.0]])       # float64 apart, one float32 value
    out = rule_safe_scores(scores, np.array([[0, 1, 2]]))                 # ids in ascending order: wrong for ties
    assert out[0, 0] == np.float32(1000.000001)
    assert out[0, 1] == np.nextafter(out[0, 0], np.float32(-np.inf))
    assert out[0, 2] == np.nextafter(out[0, 1], np.float32(-np.inf))
    same = rule_safe_scores(scores, np.array([[2, 1, 0]]))                # ids descending: ties are fine
    assert np.all(same == np.float32(1000.0))
