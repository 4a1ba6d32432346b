"""Registry laziness and did-you-mean; every spec in tasks/ validates; bad specs name file and key."""

import subprocess
import sys

import pytest

from mmbench.catalog import get_model, models, resolve_tasks, suites, tasks
from mmbench.errors import DataError, UnknownNameError
from mmbench.registry import Registry
from mmbench.data.specs import load_suite_spec, load_task_spec
from mmbench.metrics.families import parse_metric


def test_import_harness_and_listing_import_no_heavy_packages():
    code = ("import sys, mmbench, mmbench.api, mmbench.cli;"
            "from mmbench import api; api.list_models(); api.list_tasks(); api.list_suites();"
            "heavy = [m for m in ('torch', 'faiss', 'transformers', 'mteb', 'sentence_transformers') if m in sys.modules];"
            "print(heavy); sys.exit(1 if heavy else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_all_sixteen_mbeir_tasks_and_metrics():
    mbeir = [n for n in tasks().names() if tasks().get(n).source == "mbeir"]
    assert len(mbeir) == 16
    for name in mbeir:
        spec = tasks().get(name)
        ks = [parse_metric(m)[1] for m in spec.metrics if m.startswith("hit@")]
        if name in ("fashion200k_task0", "fashion200k_task3", "fashioniq_task7"):
            assert ks == [10, 20, 50] and spec.main_metric == "hit@10"
        else:
            assert ks == [1, 5, 10] and spec.main_metric == "hit@5"
    assert tasks().get("mscoco_task3").files.pool.endswith("mbeir_mscoco_task3_test_cand_pool.jsonl")
    assert sum(tasks().get(n).n_candidates for n in mbeir) == 5_609_079
    assert sum(tasks().get(n).n_queries for n in mbeir) == 190_573
    assert set(suites().get("mbeir-global").tasks) == set(mbeir) and suites().get("mbeir-global").pool == "global"


def test_unknown_names_suggest_the_closest():
    with pytest.raises(UnknownNameError, match="Did you mean: mscoco_task0"):
        tasks().get("mscoco_tsk0")
    with pytest.raises(UnknownNameError, match="mbeir-local"):
        suites().get("mbeir-locl")
    with pytest.raises(UnknownNameError, match="minilm"):
        get_model("minilmm")
    with pytest.raises(UnknownNameError, match="not in suite"):
        resolve_tasks("mbeir-mini", ["mscoco_task0"])


def test_lazy_targets_and_entry_points():
    reg: Registry = Registry("thing")
    reg.register("json-dumps", "json:dumps")
    assert reg.get("json-dumps")({"a": 1}) == '{"a": 1}'
    with pytest.raises(ValueError):
        reg.register("json-dumps", "json:loads")
    assert "minilm" in models() and models().get("minilm").embed_dim == 384


def test_bad_task_spec_names_file_and_key(tmp_path):
    good = open(tasks().get("mscoco_task0").path).read()
    bad = tmp_path / "bad.toml"
    bad.write_text('colour = "red"\n' + good)
    with pytest.raises(DataError, match=r"bad.toml \(field 'colour'\): unknown key"):
        load_task_spec(bad)
    bad.write_text(good.replace('main_metric = "hit@5"', 'main_metric = "hit@7"'))
    with pytest.raises(DataError, match="main_metric 'hit@7' is not in metrics"):
        load_task_spec(bad)
    bad.write_text(good.replace('"ndcg@10"', '"ndgc@10"'))
    with pytest.raises(DataError, match="bad metric 'ndgc@10'"):
        load_task_spec(bad)
    bad.write_text(good.replace('query_modality = "text"', 'query_modality = "audio"'))
    with pytest.raises(DataError, match="query_modality"):
        load_task_spec(bad)
    bad.write_text('name = "x"\ntasks = ["a"]\npool = "both"\n')
    with pytest.raises(DataError, match="pool must be 'local' or 'global'"):
        load_suite_spec(bad)
