"""The TREC run writer: every hit written, in rank order, and its float32 score read back exactly."""

import json
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbench.results.layout import trec_tag
from mmbench.results.trec import read_trec, write_trec
from recorder import Recorder


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
    size = write_trec(path, qids, ids, idx, scores, "tag%1")
    assert size == path.stat().st_size                                 # what the task JSON records
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
    assert write_trec(parted, qids, ids, idx, scores, "tag%1", part_hits=part_hits, threads=3, fsync=False) == size
    assert parted.read_bytes() == path.read_bytes()


@settings(max_examples=60, deadline=None)
@given(q=st.integers(1, 5), k=st.integers(1, 12), n=st.integers(1, 40), seed=st.integers(0, 2**31 - 1),
       part_hits=st.integers(1, 30), ids=st.sampled_from(["plain", "unicode", "empty"]))
def test_c_helper_and_arrow_write_the_same_bytes(tmp_path_factory, q, k, n, seed, part_hits, ids):
    """The C line writer (harness/native.py) and the Arrow one: byte-identical files, with empty
    slots, non-ASCII and empty ids, and every kind of float32 (inf, nan, -0.0, subnormal, huge)."""
    from mmbench import native
    from mmbench.results import trec as results
    from mmbench.metrics.scoring import CandidateIds

    assert native.library() is not None                  # built by `make test`'s install
    rng = np.random.default_rng(seed)
    k = min(k, n)
    names = {"plain": [f"d{i}" for i in range(n)], "unicode": [f"dé{i}→ü" for i in range(n)],
             "empty": ["" if i % 3 == 0 else f"d{i}" for i in range(n)]}[ids]
    qids = [f"q{i}" if i % 2 else f"é{i}" for i in range(q)]
    idx = np.stack([rng.permutation(n)[:k] for _ in range(q)])
    idx[rng.random((q, k)) < 0.2] = -1                    # empty slots anywhere
    specials = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0, 1e-45, 3.4e38, 0.1, 1 / 3], np.float32)
    scores = np.where(rng.random((q, k)) < 0.3, rng.choice(specials, (q, k)),
                      rng.standard_normal((q, k))).astype(np.float32)
    folder = tmp_path_factory.mktemp("trec")
    written = {}
    for use_c in (True, False):
        results.NATIVE_TREC = use_c
        try:
            path = folder / f"{use_c}.trec"
            ids_given = CandidateIds(names) if use_c else names      # the pool's cached UTF-8 table, or a list
            size = write_trec(path, qids, ids_given, idx, scores, "t.ag", part_hits=part_hits, fsync=False)
        finally:
            results.NATIVE_TREC = True
        assert size == path.stat().st_size
        written[use_c] = path.read_bytes()
    assert written[True] == written[False]


def test_a_model_name_with_spaces_still_gives_six_fields_per_line(tmp_path):
    tag = trec_tag("st:/models/my model", "rerank", "cross encoder")
    assert tag.startswith("mmbench.") and len(tag.split()) == 1
    path = tmp_path / "run.trec"
    write_trec(path, ["q"], ["d1", "d2"], np.array([[1, 0]]), np.array([[0.5, 0.25]], np.float32), tag)
    assert read_trec(path) == {"q": {"d2": 0.5, "d1": 0.25}}
    assert {len(line.split()) for line in path.read_text().splitlines()} == {6}


def test_a_finished_task_whose_run_file_is_short_or_missing_is_computed_again(tmp_path):
    """The run file is not fsynced; its size is recorded in the task JSON and checked on reuse."""
    from mmbench import api

    folder = tmp_path / "data" / "SciFact"
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(
        ["boot loader reinstall", "a recipe for bread", "grub rescue prompt", "sourdough starter"])]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n"
                                                  for i, t in enumerate(["grub broken", "bake bread"])))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t1\n")
    config = api.RunConfig(model="minilm", tasks=("SciFact",), suite=None, data_root=tmp_path / "data",
                           output=tmp_path / "r", cache_dir=tmp_path / "c", device="cpu")

    def run() -> tuple[list[str], Path]:
        reporter = Recorder()
        outcome = api.run(config, reporter)
        return reporter.messages, Path(outcome.tasks[0].path)

    _, record_path = run()
    record = json.loads(record_path.read_text())
    trec = record_path.with_name(record["files"]["run"])
    written = trec.read_bytes()
    assert record["files"]["run_bytes"] == len(written) > 0
    messages, _ = run()
    assert any("finished result found, reused" in m for m in messages)
    for damage in (lambda: trec.write_bytes(written[: len(written) // 2]), trec.unlink):
        damage()
        messages, _ = run()
        assert not any("reused" in m for m in messages)
        assert any("computed again" in m and str(trec) in m for m in messages), messages
        assert trec.read_bytes() == written
    # nor are cache chunks: one left short by an OS crash is encoded again, to the same run
    chunks = sorted((tmp_path / "c").rglob("chunk_*.npy"))
    assert len(chunks) == 2                                   # queries and corpus, one chunk each
    for chunk in chunks:
        chunk.write_bytes(chunk.read_bytes()[:-1])
    trec.unlink()
    messages, _ = run()
    for chunk in chunks:
        assert any(f"embedding cache chunk {chunk}" in m and "encoded again" in m for m in messages), messages
    assert trec.read_bytes() == written


@settings(max_examples=25, deadline=None)
@given(q=st.integers(1, 5), k=st.integers(1, 6), seed=st.integers(0, 2**31 - 1), part_hits=st.integers(1, 12))
def test_a_gzip_run_holds_the_plain_runs_lines_and_the_same_lines_give_the_same_bytes(tmp_path_factory, q, k, seed,
                                                                                   part_hits):
    import gzip

    from mmbench.results.trec import read_run, read_run_text

    rng = np.random.default_rng(seed)
    ids = [f"d{i}" for i in range(k + 3)]
    idx = np.stack([rng.permutation(len(ids))[:k] for _ in range(q)])
    scores = np.sort(rng.standard_normal((q, k)).astype(np.float32), axis=1)[:, ::-1]
    folder = tmp_path_factory.mktemp("gz")
    args = ([f"q{i}" for i in range(q)], ids, idx, scores, "mmbench.t")
    plain = write_trec(folder / "run.trec", *args)
    sizes = [write_trec(folder / f"run{i}.trec.gz", *args, part_hits=p) for i, p in enumerate((part_hits, 1 << 15))]
    text = (folder / "run.trec").read_bytes()
    assert plain == len(text) and sizes[0] == (folder / "run0.trec.gz").stat().st_size
    assert gzip.decompress((folder / "run0.trec.gz").read_bytes()) == text        # any gzip reader reads it
    assert (folder / "run0.trec.gz").read_bytes() == (folder / "run1.trec.gz").read_bytes()   # no time, no name
    assert read_run_text(folder / "run0.trec.gz") == text.decode()
    assert read_run(folder / "run0.trec.gz") == read_run(folder / "run.trec")


def test_a_damaged_gzip_run_names_the_file(tmp_path):
    import pytest

    from mmbench.errors import MmbenchError
    from mmbench.results.trec import read_run

    path = tmp_path / "run.trec.gz"
    n = 2000
    write_trec(path, [f"q{i}" for i in range(n)], ["a", "b"], np.zeros((n, 2), np.int64),
               np.ones((n, 2), np.float32), "t")
    path.write_bytes(path.read_bytes()[:-40])                                  # cut short: no trailer
    with pytest.raises(MmbenchError, match=r"run\.trec\.gz:\d+: cannot read the run file .*--overwrite"):
        read_run(path)
