"""results/: one reader of run files, the UTF-8 id table cached per pool, dependencies pointing one way."""

import ast
import gc
from pathlib import Path

import numpy as np
import pytest

from mmbench.errors import MmbenchError
from mmbench.metrics.scoring import CandidateIds
from mmbench.results import trec
from mmbench.results.layout import experiment_dir, per_query_file, record_file, result_dir, run_file, slug, trec_tag

PACKAGE = Path(__file__).resolve().parents[2] / "harness" / "mmbench"


def test_read_run_keeps_the_file_order_and_names_a_bad_line(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text("q2 Q0 b 1 0.5 t\nq1 Q0 z 1 2 t\nq2 Q0 a 2 0.5 t\nq1 Q0 y 2 -1e-07 t\n")
    qids, dids, scores = trec.read_run(path)
    assert qids == ["q2", "q1"] and dids == [["b", "a"], ["z", "y"]] and scores == [[0.5, 0.5], [2.0, -1e-07]]
    assert trec.read_trec(path) == {"q2": {"b": 0.5, "a": 0.5}, "q1": {"z": 2.0, "y": -1e-07}}
    path.write_text("q1 Q0 a 1 0.5 t\nq1 Q0 b 2 t\n")
    with pytest.raises(MmbenchError, match=r"run\.trec:2: expected 'qid Q0 did rank score tag'"):
        trec.read_run(path)
    path.write_text("q1 Q0 a 1 high t\n")
    with pytest.raises(MmbenchError, match=r"run\.trec:1: score 'high' is not a number"):
        trec.read_run(path)


def test_ids_utf8_is_built_once_per_ids_object_and_dropped_with_it():
    ids = CandidateIds(["b", "é", ""])
    data, offsets = first = trec.ids_utf8(ids)
    assert bytes(data[: offsets[-1]]).decode() == "bé" and offsets.tolist() == [0, 1, 3, 3]
    assert trec.ids_utf8(ids) is first                                      # cached by the object
    plain = trec.ids_utf8(["b", "é", ""])                                   # a list: built each time
    assert np.array_equal(plain[1], offsets) and trec.ids_utf8(["b", "é", ""]) is not plain
    before = len(trec._UTF8_TABLES)
    del ids, first, data, offsets
    gc.collect()
    assert len(trec._UTF8_TABLES) == before - 1


def test_layout_names_every_file_as_the_results_format_says(tmp_path):
    d = result_dir(tmp_path, "clip:/models/my clip", "v1", "mbeir-mini")
    assert d == tmp_path / "clip__models_my_clip" / "v1" / "mbeir-mini"
    assert (record_file("t"), run_file("t"), per_query_file("t")) == ("t.json", "t.trec.gz", "t.per_query.tsv")
    assert run_file("t", "trec") == "t.trec"
    assert experiment_dir(d, "rerank=x__top10") == d / "experiments" / "rerank=x__top10"
    assert trec_tag("st:/models/my model", "rerank") == "mmbench.st__models_my_model.rerank"
    assert slug("..a b..") == "a_b"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("folder, forbidden", [
    ("results", "mmbench.embeddings"),          # results name folders with util.text.slug, not the cache's
    ("metrics", "mmbench.results"),             # the TREC writer keeps its own id table
])
def test_dependencies_point_one_way(folder, forbidden):
    bad = {f"{p.name}: {m}" for p in (PACKAGE / folder).rglob("*.py") for m in _imports(p)
           if m == forbidden or m.startswith(forbidden + ".")}
    assert not bad
