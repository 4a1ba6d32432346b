"""The pipeline is generic: what differs between task families is asked of the family (data/families)."""

import ast
from pathlib import Path

import numpy as np
import pytest

from mmbench import catalog
from mmbench.config import RunConfig
from mmbench.data.families.base import BaseFamily, TaskFamily
from mmbench.pipeline.score import ScoredTask, task_record

PACKAGE = Path(__file__).resolve().parents[2] / "harness" / "mmbench"


def test_the_generic_pipeline_names_no_family():
    """No ``spec.loader == "mteb"`` or ``default_data_root == "mbeir-mini"`` left: no code in pipeline/ names
    a family or reads a family-only field."""
    for path in (PACKAGE / "pipeline").glob("*.py"):
        tree = ast.parse(path.read_text())
        strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                   and not _is_docstring(tree, n)]
        assert not [s for s in strings if s in ("mteb", "mbeir", "mbeir-mini")], path.name
        attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not attributes & {"ignore_identical_ids", "default_data_root", "mteb"}, path.name


def _is_docstring(tree, node) -> bool:
    return any(isinstance(d, (ast.Module, ast.FunctionDef, ast.ClassDef)) and d.body and isinstance(d.body[0], ast.Expr)
               and d.body[0].value is node for d in ast.walk(tree))


def test_the_rerank_stage_does_not_import_the_run():
    tree = ast.parse((PACKAGE / "rerank" / "stage.py").read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "mmbench.pipeline.run" not in modules
    assert {"mmbench.pipeline.score", "mmbench.pipeline.write", "mmbench.pipeline.types"} <= modules


def test_builtin_families_implement_the_protocol():
    families = catalog.task_families()
    assert {"mbeir", "mteb"} <= set(families.names())
    for name in ("mbeir", "mteb"):
        family = families.get(name)
        assert isinstance(family, TaskFamily) and family.name == name
    for spec in (catalog.tasks().get(n) for n in catalog.tasks().names()):
        assert isinstance(catalog.task_family(spec), TaskFamily), spec.name


def test_mbeir_family_asks_for_the_data_root_it_needs(tmp_path, monkeypatch):
    from mmbench.errors import MmbenchError

    monkeypatch.delenv("MMBENCH_MBEIR_ROOT", raising=False)
    spec = next(s for s in map(catalog.tasks().get, catalog.tasks().names())
                if s.loader == "mbeir" and s.default_data_root is None)
    family = catalog.task_family(spec)
    with pytest.raises(MmbenchError, match="--data-root"):
        family.data_root(spec, RunConfig())
    assert family.data_root(spec, RunConfig(data_root=tmp_path)) == tmp_path


def test_mteb_family_rule_drops_the_query_itself_and_base_family_changes_nothing():
    from mmbench.data.types import ItemTable, TaskData

    queries = ItemTable(["q1", "q2"], ["text"] * 2, ["a", "b"], [None] * 2, root=Path("."))
    data = TaskData("t", queries, queries, {}, {}, "k", ignore_identical_ids=True)
    ids = ["d0", "q1", "d2"]
    idx, sc = np.array([[1, 0, 2], [0, 2, 1]]), np.array([[0.9, 0.5, 0.1], [0.8, 0.4, 0.2]], np.float32)
    out_idx, out_sc = catalog.task_families().get("mteb").after_search(data, ids, idx, sc)
    assert out_idx.tolist() == [[0, 2, -1], [0, 2, 1]] and out_sc[0, -1] == -np.inf
    same = BaseFamily().after_search(data, ids, idx, sc)
    assert same[0] is idx and same[1] is sc


class _Result:
    def __init__(self, mean, query_ids):
        self.mean, self.query_ids = mean, query_ids


def test_one_record_builder_orders_both_stages_keys():
    scored = ScoredTask("hit@5", _Result({"hit@5": 0.1234567, "ndcg@10": 0.5}, ["q1", "q2"]), {"k": 1})
    first = task_record(scored, head={"task": {}, "suite": "s", "pool": "local"}, definitions={"hit@k": "..."},
                        n_queries_in_file=3, n_candidates=9, top_k=100, stage={"timings_s": {}, "notes": []},
                        files={"run": "t.trec"}, provenance={})
    assert list(first) == ["task", "suite", "pool", "main_metric", "main_score", "metrics", "metric_definitions",
                           "n_queries", "n_queries_in_file", "n_candidates", "top_k", "modality_report",
                           "timings_s", "notes", "files", "provenance"]
    assert first["main_score"] == 0.123457 and first["n_queries"] == 2
    rerank = task_record(scored, head={"task": {}, "suite": "s", "pool": "local", "notes": []}, n_candidates=9,
                         top_k=100, stage={"rerank": {}, "first_stage": {}}, files={}, provenance={})
    assert list(rerank) == ["task", "suite", "pool", "notes", "main_metric", "main_score", "metrics", "n_queries",
                            "n_candidates", "top_k", "modality_report", "rerank", "first_stage", "files", "provenance"]
