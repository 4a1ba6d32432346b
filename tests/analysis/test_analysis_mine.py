"""`mmbench mine`: hard negatives from a run (analysis/mine.py).

The rule is checked as properties over generated rankings (hypothesis): no positive, no copy of a
positive, only the target modality, every negative within the sampled ranks, as many as asked where
that many are eligible, rank order, and the same negatives whatever the order or company of the
queries. Then real runs through the CLI: an M-BEIR task whose local pool mixes images and captions
(the output read back with the M-BEIR loader, from a gzip and from a plain run file), an MTEB task
(BEIR-style lines) and the refusals.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from mmbench.analysis.mine import MiningRecipe, mine_negatives, parse_window, query_rng
from mmbench.errors import MmbenchError
from result_files import mmbench

MODALITIES = ("text", "image", "image,text")


# ------------------------------------------------------------------------------ the rule, as properties
@st.composite
def mining_cases(draw):
    n_cands = draw(st.integers(1, 40))
    cands = [f"c{i}" for i in range(n_cands)]
    modality = {c: draw(st.sampled_from(MODALITIES)) for c in cands}
    content = {c: draw(st.integers(0, n_cands)) for c in cands}        # shared values: copies of each other
    n_queries = draw(st.integers(1, 8))
    qids = [f"q{i}" for i in range(n_queries)]
    ranked = [draw(st.permutations(cands)).copy()[:draw(st.integers(0, n_cands))] for _ in qids]
    positives = {q: set(draw(st.lists(st.sampled_from(cands), max_size=3))) for q in qids}
    a = draw(st.integers(1, n_cands + 2))
    b = draw(st.integers(a, n_cands + 5))
    skip = draw(st.integers(0, b - 1))
    recipe = MiningRecipe(skip_top=skip, window=(a, b), per_query=draw(st.integers(1, 6)), seed=draw(st.integers(0, 3)))
    target = draw(st.sampled_from(MODALITIES))
    return qids, ranked, positives, modality, content, target, recipe


def _mine(qids, ranked, positives, modality, content, target, recipe):
    return mine_negatives(qids, ranked, positives, modality.get, target, recipe, content_of=content.get)


@settings(max_examples=300, deadline=None)
@given(mining_cases(), st.randoms(use_true_random=False))
def test_negatives_obey_the_rule_whatever_the_query_order(case, rnd):
    qids, ranked, positives, modality, content, target, recipe = case
    mined = _mine(*case)
    for qid, row in zip(qids, ranked):
        rank = {c: r for r, c in enumerate(row, 1)}
        negs = mined[qid]
        pos_content = {content[p] for p in positives[qid]}
        eligible = [c for c in row[recipe.first_rank - 1: recipe.last_rank]
                    if c not in positives[qid] and modality[c] == target and content[c] not in pos_content]
        if not positives[qid]:
            eligible = []                               # unjudged: no candidate can be called a negative
        assert len(negs) == min(recipe.per_query, len(eligible)) and set(negs) <= set(eligible)
        for c in negs:
            assert c not in positives[qid] and content[c] not in pos_content and modality[c] == target
            assert recipe.first_rank <= rank[c] <= recipe.last_rank
        assert [rank[c] for c in negs] == sorted(rank[c] for c in negs)        # rank order, no repeats
    # the same negatives in any order of the queries, and for any subset of them
    order = list(range(len(qids)))
    rnd.shuffle(order)
    keep = order[: rnd.randint(1, len(order))]
    again = _mine([qids[i] for i in keep], [ranked[i] for i in keep], positives, modality, content, target, recipe)
    assert again == {qids[i]: mined[qids[i]] for i in keep}


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**31), st.text(min_size=1, max_size=12))
def test_the_draw_depends_on_seed_and_query_id_only(seed, qid):
    a, b = query_rng(seed, qid).random(4), query_rng(seed, qid).random(4)
    assert (a == b).all()


def test_a_copy_of_a_positive_or_the_query_itself_is_never_a_negative():
    ranked = [["q1", "d1", "d2", "d3", "d4"]]
    content = {"q1": 0, "d1": 1, "d2": 1, "d3": 2, "d4": 3}           # d2 is a copy of the positive d1
    recipe = MiningRecipe(skip_top=0, window=(1, 5), per_query=5)
    got = mine_negatives(["q1"], ranked, {"q1": {"d1"}}, lambda c: "text", "text", recipe, content_of=content.get,
                         skip_identical_ids=True)
    assert got == {"q1": ["d3", "d4"]}
    assert mine_negatives(["q1"], ranked, {"q1": {"d1"}}, lambda c: "text", "text", recipe)["q1"] == ["q1", "d2", "d3", "d4"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(window=(0, 5)), "1 <= A <= B"), (dict(window=(6, 5)), "1 <= A <= B"), (dict(per_query=0), "per-query"),
    (dict(skip_top=-1), "skip-top"), (dict(skip_top=50, window=(1, 50)), "leaves no rank"), (dict(seed=-1), "seed"),
])
def test_a_recipe_that_selects_nothing_is_refused(kwargs, message):
    with pytest.raises(MmbenchError, match=message):
        MiningRecipe(**kwargs)


def test_window_parsing():
    assert parse_window("46:50") == (46, 50)
    for bad in ("46", "a:b", "1:2:3", ""):
        with pytest.raises(ValueError, match="A:B"):
            parse_window(bad)


# ------------------------------------------------------------------------------ real runs through the CLI
def ok(*args) -> str:
    rc, out, err = mmbench(*args)
    assert rc == 0, f"{' '.join(map(str, args))} failed ({rc}):\n{out}\n{err}"
    return out


@pytest.fixture(scope="module")
def shared_cache():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMBENCH_HOME", os.environ["MMBENCH_TEST_CACHE"])
        mp.setenv("MMBENCH_NO_PROGRESS", "1")
        yield


@pytest.fixture(scope="module")
def mixed_runs(tmp_path_factory, shared_cache):
    """The fixture's MSCOCO text->image task with the captions of task 3 added to its pool (a local pool
    of images and texts, so a ranking holds candidates of the wrong modality), run by the default model
    once per run-file form: {form: run folder}, and the data root."""
    from mbeir_fixture import build_fixture

    base = tmp_path_factory.mktemp("mine")
    root = build_fixture(base / "M-BEIR")
    pool = root / "cand_pool/local/mbeir_mscoco_task0_test_cand_pool.jsonl"
    pool.write_text(pool.read_text() + (root / "cand_pool/local/mbeir_mscoco_task3_test_cand_pool.jsonl").read_text())
    folders = {}
    for fmt in ("trec.gz", "trec"):                    # both run-file forms, read through the one reader
        out = base / f"r-{fmt}"
        ok("run", "--tasks", "mscoco_task0", "--data-root", root, "--output", out, "--run-format", fmt)
        (record,) = out.rglob("mscoco_task0.json")
        folders[fmt] = record.parent
        assert (record.parent / f"mscoco_task0.{fmt}").is_file()
    return root, folders


def test_mined_mbeir_negatives_read_back_with_the_mbeir_loader(mixed_runs, tmp_path):
    from mmbench.data.families.mbeir import load_pool, load_qrels, load_queries
    from mmbench.results.trec import read_run

    root, folders = mixed_runs
    shipped_path = root / "query/test/mbeir_mscoco_task0_test.jsonl"
    pool = load_pool(root / "cand_pool/local/mbeir_mscoco_task0_test_cand_pool.jsonl", root)
    modality = dict(zip(pool.ids, pool.modalities))
    assert set(modality.values()) == {"image", "text"}
    qrels, _ = load_qrels(root / "qrels/test/mbeir_mscoco_task0_test_qrels.txt")
    written = {}
    for fmt, folder in folders.items():
        args = ["mine", folder, "--task", "mscoco_task0", "--skip-top", "1", "--window", "1:11", "--per-query", "3",
                "--seed", "7"]
        assert "negatives for" in ok(*args, "--out", tmp_path / f"neg-{fmt}")
        path = tmp_path / f"neg-{fmt}" / "mscoco_task0.hard_negatives.jsonl"
        queries = load_queries(path, root)                      # M-BEIR's query format, read by its loader
        original = load_queries(shipped_path, root)
        assert queries.ids == original.ids and queries.texts == original.texts
        qids, ranked, _ = read_run(folder / f"mscoco_task0.{fmt}")
        rows = dict(zip(qids, ranked))
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        shipped = [json.loads(line) for line in shipped_path.read_text().splitlines()]
        assert [{k: v for k, v in q.items() if k != "neg_cand_list"} for q in lines] == \
               [{k: v for k, v in q.items() if k != "neg_cand_list"} for q in shipped]
        assert sum(len(q["neg_cand_list"]) for q in lines) > 0
        for q in lines:
            negs = q["neg_cand_list"]
            assert len(negs) <= 3 and len(set(negs)) == len(negs)
            assert not set(negs) & set(qrels[q["qid"]]) and not set(negs) & set(q["pos_cand_list"])
            assert all(modality[d] == "image" for d in negs)                     # never a caption
            assert all(2 <= rows[q["qid"]].index(d) + 1 <= 11 for d in negs)
        recipe = json.loads((tmp_path / f"neg-{fmt}" / "mscoco_task0.recipe.json").read_text())
        assert recipe["recipe"]["sampled_ranks"] == [2, 11] and recipe["recipe"]["seed"] == 7
        assert recipe["source"]["run_file"] == f"mscoco_task0.{fmt}" and recipe["source"]["config_hash"]
        assert recipe["source"]["model"] and recipe["output"]["negatives"] == sum(len(q["neg_cand_list"]) for q in lines)
        ok(*args, "--out", tmp_path / f"again-{fmt}")                 # deterministic: the same bytes again
        assert (tmp_path / f"again-{fmt}" / path.name).read_bytes() == path.read_bytes()
        written[fmt] = path.read_bytes()
    assert written["trec"] == written["trec.gz"]


def test_mine_refuses_what_it_cannot_do(mixed_runs, tmp_path):
    root, folders = mixed_runs
    folder, out = folders["trec.gz"], tmp_path / "n"
    rc, _, err = mmbench("mine", folder, "--task", "mscoco_task0", "--out", out, "--window", "1:500")
    assert rc == 1 and "--run-depth" in err and err.count("\n") == 1
    rc, _, err = mmbench("mine", folder, "--task", "mscoco_task0", "--out", out, "--skip-top", "9", "--window", "1:9")
    assert rc == 2 and "leaves no rank" in err
    rc, _, err = mmbench("mine", folder, "--task", "mscoco_task3", "--out", out)
    assert rc == 1 and "mscoco_task3.json" in err
    # the data changed since the run: the negatives would be judged against other qrels
    qrels = root / "qrels/test/mbeir_mscoco_task0_test_qrels.txt"
    before = qrels.read_text()
    try:
        qrels.write_text(before + "9:2 0 9:3 1 0\n")
        rc, _, err = mmbench("mine", folder, "--task", "mscoco_task0", "--out", out)
        assert rc == 1 and "qrels file changed since the run" in err
    finally:
        qrels.write_text(before)
    assert not out.exists()


WORDS = ["red fox", "grey wolf", "brown bear", "white owl", "green frog", "black cat", "small mouse"]
PLACES = ["in the forest", "near the river", "on the hill", "under the bridge", "by the lake"]


def test_mined_mteb_negatives_are_beir_style_lines(tmp_path, shared_cache):
    """A BEIR folder read through QuoraRetrieval's spec (mteb's ignore_identical_ids: the queries are
    documents too): a query is never its own negative."""
    from fidelity_tasks import IDENTICAL_IDS_TASK, write_beir

    from mmbench.results.trec import read_run

    corpus = [{"id": f"d{i}-{j}", "title": "", "text": f"The {w} sleeps {p}."}
              for i, w in enumerate(WORDS) for j, p in enumerate(PLACES)]
    queries = [{"id": f"d{i}-0", "text": f"The {w} sleeps {PLACES[0]}."} for i, w in enumerate(WORDS)]
    qrels = [(f"d{i}-0", f"d{i}-1", 1) for i in range(len(WORDS))]
    write_beir(tmp_path / "beir" / IDENTICAL_IDS_TASK, IDENTICAL_IDS_TASK, corpus, queries, qrels)
    ok("run", "--model", "minilm", "--tasks", IDENTICAL_IDS_TASK, "--data-root", tmp_path / "beir",
       "--output", tmp_path / "r")
    (record,) = [p for p in (tmp_path / "r").rglob(f"{IDENTICAL_IDS_TASK}.json") if p.parent.name == "local"]
    ok("mine", record.parent, "--task", IDENTICAL_IDS_TASK, "--out", tmp_path / "n", "--skip-top", "0",
       "--window", "1:12", "--per-query", "4")
    lines = [json.loads(x) for x in (tmp_path / "n" / f"{IDENTICAL_IDS_TASK}.hard_negatives.jsonl").read_text().splitlines()]
    qids, ranked, _ = read_run(record.parent / json.loads(record.read_text())["files"]["run"])
    rows = dict(zip(qids, ranked))
    assert [q["query-id"] for q in lines] == [q["id"] for q in queries]
    assert all(set(q) == {"query-id", "positives", "negatives"} for q in lines)
    for q in lines:
        assert len(q["negatives"]) == 4 and q["query-id"] not in q["negatives"]
        assert q["positives"] == [q["query-id"].replace("-0", "-1")] and not set(q["negatives"]) & set(q["positives"])
        assert all(rows[q["query-id"]].index(d) + 1 <= 12 for d in q["negatives"])
    recipe = json.loads((tmp_path / "n" / f"{IDENTICAL_IDS_TASK}.recipe.json").read_text())
    assert recipe["format"] == "beir-hard-negatives-jsonl" and recipe["family"] == "mteb"
