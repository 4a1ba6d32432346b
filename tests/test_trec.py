"""The TREC run writer: every hit written, in rank order, and its float32 score read back exactly."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.results import read_trec, trec_tag, write_trec


@settings(max_examples=40, deadline=None)
@given(q=st.integers(0, 6), k=st.integers(0, 7), n=st.integers(1, 30), seed=st.integers(0, 2**31 - 1),
       odd_ids=st.booleans(), part_hits=st.integers(1, 20))
def test_write_trec_round_trips(tmp_path_factory, q, k, n, seed, odd_ids, part_hits):
    rng = np.random.default_rng(seed)
    k = min(k, n)
    ids = [f'd"{i},x' if odd_ids else f"d{i}" for i in range(n)]       # quotes/commas are written as they are
    qids = [f"q{i}" for i in range(q)]
    idx = np.stack([rng.permutation(n)[:k] for _ in range(q)]) if q else np.empty((0, k), np.int64)
    scores = rng.standard_normal((q, k)).astype(np.float32)
    if q and k:
        cut = rng.integers(0, k + 1, q)                                  # empty slots at the row ends
        for r, c in enumerate(cut):
            idx[r, c:] = -1
            scores[r, c:] = -np.inf
    path = tmp_path_factory.mktemp("trec") / "run.trec"
    write_trec(path, qids, ids, idx, scores, "tag%1")
    lines = [ln.split(" ") for ln in path.read_text(encoding="utf-8").splitlines()]
    expected = [(qids[r], ids[i], c + 1, scores[r, c]) for r in range(q) for c, i in enumerate(idx[r]) if i >= 0]
    assert len(lines) == len(expected)
    for line, (qid, did, rank, score) in zip(lines, expected):
        assert line[0] == qid and line[1] == "Q0" and line[2] == did and int(line[3]) == rank
        assert np.float32(line[4]) == score and line[5] == "tag%1"
    back = read_trec(path)
    assert sum(map(len, back.values())) == len(expected)
    # written in parts of queries, on threads: the same bytes
    parted = path.with_name("parted.trec")
    write_trec(parted, qids, ids, idx, scores, "tag%1", part_hits=part_hits, threads=3)
    assert parted.read_bytes() == path.read_bytes()


def test_a_model_name_with_spaces_still_gives_six_fields_per_line(tmp_path):
    tag = trec_tag("st:/models/my model", "rerank", "cross encoder")
    assert tag.startswith("mmbench.") and len(tag.split()) == 1
    path = tmp_path / "run.trec"
    write_trec(path, ["q"], ["d1", "d2"], np.array([[1, 0]]), np.array([[0.5, 0.25]], np.float32), tag)
    assert read_trec(path) == {"q": {"d2": 0.5, "d1": 0.25}}
    assert {len(line.split()) for line in path.read_text().splitlines()} == {6}
