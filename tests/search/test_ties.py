"""THE tie rule (mmbench.search.ties): its fast paths equal the plain lexsort, and its users call it."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbench.search import ties


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 6), cols=st.integers(1, 40),
       key_range=st.sampled_from([50, 2**32, 2**40]))
def test_rule_order_equals_two_key_lexsort(seed: int, rows: int, cols: int, key_range: int) -> None:
    """The packed-key argsort orders exactly as lexsort by (score desc, key desc): negative scores,
    -0.0 against +0.0, infinities and many exact ties included; keys past 32 bits and NaN scores
    (ranked last, as lexsort does) take the lexsort."""
    rng = np.random.default_rng(seed)
    pool = np.array([-np.inf, -1.5, -1e-30, -0.0, 0.0, 1e-30, 0.25, 0.5, 3.0, np.inf]
                    + ([np.nan] if seed % 5 == 0 else []), np.float32)
    scores = rng.choice(pool, (rows, cols)).astype(np.float32)
    keys = np.stack([rng.choice(key_range, cols, replace=False) if key_range >= cols else rng.permutation(cols)
                     for _ in range(rows)]).astype(np.int64)
    got = ties.rule_order(scores, keys)
    want = np.lexsort((-keys, -scores), axis=-1)
    np.testing.assert_array_equal(np.take_along_axis(keys, got, 1), np.take_along_axis(keys, want, 1))


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_rows=st.integers(1, 30), n=st.integers(1, 8),
       per_thread=st.sampled_from([1, 5, 1 << 16]), skew=st.booleans())
def test_select_ragged_equals_one_lexsort_of_the_list(seed: int, n_rows: int, n: int, per_thread: int,
                                                      skew: bool) -> None:
    """Per row, the first n entries by (score desc, tiebreak desc), rows in any order and of any
    length (one row holding most entries included), split into any number of parts."""
    rng = np.random.default_rng(seed)
    counts = n + rng.integers(0, 500 if skew else 20, n_rows) * (rng.random(n_rows) < (0.1 if skew else 1.0))
    rows = rng.permutation(np.repeat(np.arange(n_rows), counts))
    idx = rng.permutation(rows.size * 2)[:rows.size].astype(np.int64)     # distinct candidates
    scores = rng.choice(np.array([-np.inf, -0.0, 0.0, 0.5, 1.0], np.float32), rows.size)
    tiebreak = rng.permutation(rows.size * 2).astype(np.int64)
    order = np.lexsort((-tiebreak[idx], -scores, rows))
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    want = order[first[:, None] + np.arange(n)]
    got_i, got_s = ties.select_ragged(rows, idx, scores, n_rows, n, tiebreak, entries_per_thread=per_thread)
    np.testing.assert_array_equal(got_i, idx[want])
    np.testing.assert_array_equal(got_s, scores[want])


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 5), cols=st.integers(1, 30))
def test_rule_order_with_groups_and_float64(seed: int, rows: int, cols: int) -> None:
    """float64 scores and a group key (the rerank stage's order) take the lexsort: group ascending,
    then score descending, then key descending."""
    rng = np.random.default_rng(seed)
    scores = rng.choice(np.array([-1.0, -0.0, 0.0, 0.1, 0.1 + 1e-12, 2.0]), (rows, cols))
    keys = np.stack([rng.permutation(cols) - cols // 2 for _ in range(rows)]).astype(np.int64)
    groups = rng.integers(0, 3, (rows, cols))
    got = ties.rule_order(scores, keys, groups=groups)
    for r in range(rows):
        want = sorted(range(cols), key=lambda c: (groups[r, c], -scores[r, c], -keys[r, c]))
        assert got[r].tolist() == want
    plain = ties.rule_order(scores, keys)
    for r in range(rows):
        assert plain[r].tolist() == sorted(range(cols), key=lambda c: (-scores[r, c], -keys[r, c]))


def test_tiebreak_ranks_is_codepoint_order() -> None:
    ids = ["b", "a", "ab", "é", "B", "Z"]
    assert [ids[i] for i in np.argsort(ties.tiebreak_ranks(ids))] == sorted(ids)


def test_metrics_and_rerank_use_the_rule() -> None:
    """The metrics' row order and the search's merge are the same function (one definition)."""
    from mmbench.metrics import scoring

    assert scoring.tiebreak_ranks is ties.tiebreak_ranks
    scores = np.array([[0.5, 0.5, 0.7, 0.5]], np.float32)
    keys = np.array([[3, 9, 0, 4]])
    assert scoring.rank_order(scores, keys).tolist() == ties.rule_order(scores, keys).tolist() == [[2, 1, 3, 0]]
