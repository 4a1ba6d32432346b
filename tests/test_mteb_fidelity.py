"""mteb.evaluate and `mmbench run` give the same numbers on both offline text tasks (same MiniLM weights).

mteb loads each task with its own loader from the local folder mmbench built; mmbench runs the same
sentence-transformers model (``st:<all-MiniLM-L6-v2 folder>``). mteb rounds to 5 decimals, so equal
means within 1e-5.
"""

import pytest

METRICS = ("ndcg@10", "map@100", "recall@100", "mrr@10", "hit@5", "precision@10", "ndcg@1000")
TASKS = ("TuxPaintXLingualRetrieval", "WordNetGlossRetrieval-5k")


@pytest.mark.slow
def test_mmbench_equals_mteb_evaluate(tmp_path, monkeypatch):
    pytest.importorskip("mteb")
    from mmbench.data.builders import text_tasks as tt

    if not tt.STAMPS_ROOT.is_dir() or not (tt.WORDNET_ROOT / "data.noun").is_file():
        pytest.skip("tuxpaint-stamps-default / wordnet-base not installed")
    monkeypatch.setenv("MMBENCH_DATA", str(tmp_path / "data"))
    import mteb
    from sentence_transformers import SentenceTransformer

    from mmbench import api
    from mmbench.data.families.mteb import local_mteb_task
    from mmbench.models.minilm import package_model_path

    folder = package_model_path()
    out = api.run(api.RunConfig(model=f"st:{folder}", suite="mteb-mini", output=tmp_path / "results",
                                cache_dir=tmp_path / "cache", device="cpu"))
    ours = {t.task: t.metrics for t in out.tasks}
    model = SentenceTransformer(str(folder), device="cpu")
    for name in TASKS:
        task = local_mteb_task(name, tt.ensure_text_task(name))
        scores = mteb.evaluate(model, task, cache=None, show_progress_bar=False).task_results[0].scores["test"][0]
        for m in METRICS:
            key = m.replace("hit@", "hit_rate@").replace("@", "_at_")
            assert ours[name][m] == pytest.approx(scores[key], abs=1e-5), (name, m)
    # mteb's results format was written too, and mteb reads it back
    written = sorted((tmp_path / "results" / "mteb" / "results").rglob("*Retrieval*.json"))
    assert [p.stem for p in written] == sorted(TASKS)
    assert mteb.TaskResult.from_disk(written[0]).get_score() == pytest.approx(ours[written[0].stem]["ndcg@10"], abs=1e-5)


@pytest.mark.slow
def test_mmbench_equals_mteb_evaluate_on_duplicates_and_identical_ids(tmp_path, monkeypatch):
    """The cases real data brings (tests/fidelity_tasks.py): a BEIR corpus with documents repeated under
    new ids at random positions (qrels on copies, originals or both), and a task with mteb's
    ``ignore_identical_ids`` whose queries are also documents. mmbench reads them as BEIR folders through
    ``--data-root`` and the tasks' own specs; mteb through its loader, with the task attribute set."""
    pytest.importorskip("mteb")
    from mmbench.data.builders import text_tasks as tt

    if not tt.STAMPS_ROOT.is_dir() or not (tt.WORDNET_ROOT / "data.noun").is_file():
        pytest.skip("tuxpaint-stamps-default / wordnet-base not installed")
    import fidelity_tasks as ft

    monkeypatch.setenv("MMBENCH_DATA", str(tmp_path / "data"))
    root = tmp_path / "beir"
    built = {ft.DUPLICATES_TASK: ft.build_duplicates(root), ft.IDENTICAL_IDS_TASK: ft.build_identical_ids(root)}
    assert built[ft.DUPLICATES_TASK]["copies"] >= 150 and built[ft.DUPLICATES_TASK]["qrels_on_copies"] >= 30
    import mteb
    from sentence_transformers import SentenceTransformer

    from mmbench import api
    from mmbench.data.families.mteb import local_mteb_task
    from mmbench.models.minilm import package_model_path

    folder = package_model_path()
    out = api.run(api.RunConfig(model=f"st:{folder}", suite=None, tasks=tuple(built), data_root=root,
                                output=tmp_path / "results", cache_dir=tmp_path / "cache", device="cpu"))
    ours = {t.task: t.metrics for t in out.tasks}
    assert set(ours) == set(built)
    model = SentenceTransformer(str(folder), device="cpu")
    for name in built:
        ignore = name == ft.IDENTICAL_IDS_TASK
        assert mteb.get_task(name).ignore_identical_ids is ignore      # the spec's mteb metadata, as applied
        task = local_mteb_task(name, root / name, ignore_identical_ids=ignore)
        scores = mteb.evaluate(model, task, cache=None, show_progress_bar=False).task_results[0].scores["test"][0]
        for m in METRICS:
            key = m.replace("hit@", "hit_rate@").replace("@", "_at_")
            assert ours[name][m] == pytest.approx(scores[key], abs=1e-5), (name, m, ours[name][m], scores[key])
