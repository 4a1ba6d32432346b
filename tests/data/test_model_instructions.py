"""A model's own MTEB instruction table fills the tasks mteb gives no prompt (MM-Embed's, on its tiny checkpoint)."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mmbench import catalog
from mmbench.config import RunConfig
from mmbench.data.families import mteb as ml
from mmbench.models.builtin import MINILM, MM_EMBED
from mmbench.models.mmembed.instructions import MTEB_INSTRUCTIONS, mteb_instruction
from mmbench.pipeline.plan import with_model_instructions as _with_model_instructions



def with_model_instructions(data, meta, config):
    """The pipeline's step, asked through the task's family (the spec named by the data)."""
    return _with_model_instructions(catalog.tasks().get(data.name), data, meta, config)


CQA = "Given a question, retrieve detailed question descriptions from Stackexchange that are duplicates to the given question"


def _write_beir(folder: Path) -> None:
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": "d1", "title": "Grub", "text": "boot loader reinstall after update"},
            {"_id": "d2", "title": "", "text": "a recipe for bread"}]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "grub broken after update"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")


def test_variants_take_their_base_tasks_instruction():
    assert mteb_instruction("CQADupstackGamingRetrieval") == CQA
    assert mteb_instruction("FEVERHardNegatives") == MTEB_INSTRUCTIONS["FEVER"]
    assert mteb_instruction("ClimateFEVERHardNegatives") == MTEB_INSTRUCTIONS["ClimateFEVER"]
    assert mteb_instruction("HotpotQAHardNegatives") == MTEB_INSTRUCTIONS["HotpotQA"]
    assert mteb_instruction("Touche2020Retrieval.v3") == MTEB_INSTRUCTIONS["Touche2020"]
    assert mteb_instruction("SciFact") == MTEB_INSTRUCTIONS["SciFact"]
    assert mteb_instruction("WordNetGlossRetrieval") is None


@pytest.mark.parametrize("suite", ["mteb-retrieval-15", "mteb-eng-v2-retrieval"])
def test_every_task_of_the_text_suites_reaches_mm_embed_with_an_instruction(suite):
    _, specs = catalog.resolve_tasks(suite, None)
    assert len(specs) >= 10
    for spec in specs:
        name, info = spec.name, ml.task_info(spec)
        prompt = ml.query_prompt(info["prompt"])
        assert prompt or mteb_instruction(info["name"]), f"{name}: neither an mteb prompt nor an MM-Embed instruction"
        if prompt and mteb_instruction(info["name"]):     # where both exist they agree (mmembed.md §5.2)
            assert prompt == mteb_instruction(info["name"]), name


def test_table_fills_only_tasks_without_a_prompt(tmp_path):
    _write_beir(tmp_path / "CQADupstackGamingRetrieval")
    _write_beir(tmp_path / "scifact")
    gaming = ml.load_task(catalog.tasks().get("CQADupstackGamingRetrieval"), tmp_path)
    assert gaming.queries.instructions is None                 # mteb has no prompt for the forums
    filled = with_model_instructions(gaming, MM_EMBED, RunConfig(model="mm-embed"))
    assert filled.queries.instructions == [CQA] and any(CQA in n for n in filled.notes)
    assert gaming.queries.instructions is None                 # the loaded data is not changed in place
    assert with_model_instructions(gaming, MM_EMBED, RunConfig(model="mm-embed", instructions="none")) is gaming
    assert with_model_instructions(gaming, MINILM, RunConfig(model="minilm")) is gaming   # no table
    scifact = ml.load_task(catalog.tasks().get("SciFact"), tmp_path)
    assert with_model_instructions(scifact, MM_EMBED, RunConfig(model="mm-embed")) is scifact   # mteb's prompt stays


def test_mm_embed_run_encodes_the_forum_queries_with_the_instruction(tmp_path, monkeypatch):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/: tiny_mmembed
    from tiny_mmembed import build_tiny_mmembed

    from mmbench import api
    from mmbench.data.types import Item
    from mmbench.models.mmembed.encoder import load_mmembed
    from mmbench.results.trec import read_trec

    folder, nv = build_tiny_mmembed(tmp_path / "ckpt")
    name = "mm-embed-tiny-instructions-test"
    meta = replace(MM_EMBED, name=name, revision="tiny", options={**MM_EMBED.options, "path": str(folder),
                                                                    "retriever": str(nv), "device": "cpu"})
    registry = catalog.models()
    registry.names()                                        # populated before the entry is added, and
    monkeypatch.setitem(registry._entries, name, meta)      # removed again after the test
    _write_beir(tmp_path / "data" / "CQADupstackGamingRetrieval")
    out = api.run(RunConfig(model=name, tasks=("CQADupstackGamingRetrieval",), suite=None, data_root=tmp_path / "data",
                            output=tmp_path / "r", cache_dir=tmp_path / "c", device="cpu", batch_size=4))
    record = json.loads(Path(out.tasks[0].path).read_text())
    assert any(CQA in n for n in record["notes"])
    run = read_trec(Path(out.tasks[0].path).with_suffix(".trec.gz"))

    encoder = load_mmembed(meta, path=str(folder), retriever=str(nv), device="cpu")
    docs = encoder.encode([Item("d1", "text", "Grub boot loader reinstall after update"),
                           Item("d2", "text", "a recipe for bread")], role="candidate", batch_size=4)
    with_instruction, without = (encoder.encode([Item("q1", "text", "grub broken after update", instruction=i)],
                                                role="query", batch_size=4) for i in (CQA, None))
    expected = (with_instruction @ docs.T)[0]
    assert np.abs(expected - (without @ docs.T)[0]).max() > 1e-4       # the instruction changes the scores
    np.testing.assert_allclose([run["q1"]["d1"], run["q1"]["d2"]], expected, atol=1e-5)

    # a reranker that rescores with MM-Embed applies MM-Embed's table too (after a first stage without one)
    reranked = api.run(RunConfig(model="minilm", tasks=("CQADupstackGamingRetrieval",), suite=None,
                                 data_root=tmp_path / "data", output=tmp_path / "r2", cache_dir=tmp_path / "c",
                                 device="cpu", batch_size=4, rerank=f"rescore:{name}", rerank_top_k=2))
    rescored = read_trec(reranked.experiment.directory / "CQADupstackGamingRetrieval.trec.gz")
    experiment = json.loads((reranked.experiment.directory / "CQADupstackGamingRetrieval.json").read_text())
    assert experiment["first_stage"]["revision"] == reranked.revision          # the run's own revision
    np.testing.assert_allclose([rescored["q1"]["d1"], rescored["q1"]["d2"]], expected, atol=1e-5)
