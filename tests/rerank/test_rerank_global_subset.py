"""A ``--tasks`` subset of a global-pool suite needs only its own tasks' files in every stage that reads
the pool: the second stage (``rerank_suite`` on its own, as after a reused first stage), ``mmbench
inspect`` and ``mmbench mine`` load the suite's global pool as the first stage does
(:func:`mmbench.pipeline.plan.load_global_pool`), never another task's queries (issue #26)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mmbench import api, catalog
from mmbench.data.families.mbeir import UNION_POOL_FILE
from recorder import Recorder

HAS_STAMPS = Path("/usr/share/tuxpaint/stamps").is_dir()
SUITE = "mbeir-mini-global"
TASK = "tuxpaint_task1"


@pytest.fixture
def mini_without_other_queries(tmp_path) -> Path:
    """A copy of the built mbeir-mini without the query and qrels files of the suite's other tasks (its
    manifest without them, so that the copy counts as a finished build)."""
    from mmbench.data.builders.mini import MANIFEST_FILE, ensure_mini

    root = shutil.copytree(ensure_mini(), tmp_path / "mbeir-mini")
    assert (root / UNION_POOL_FILE).is_file()
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    removed = []
    for name in catalog.suites().get(SUITE).tasks:
        if name == TASK:
            continue
        files = catalog.tasks().get(name).files
        for rel in (files.queries, files.qrels):
            if (root / rel).exists():
                (root / rel).unlink()
                removed.append(rel)
            manifest["files"].pop(rel, None)
    assert removed
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    return root


@pytest.mark.slow
@pytest.mark.skipif(not HAS_STAMPS, reason="needs Debian's tuxpaint-stamps-default (make setup installs it)")
def test_rerank_inspect_and_mine_of_a_global_subset_read_only_its_own_tasks(tmp_path, mini_without_other_queries):
    from mmbench.analysis.inspect import build_gallery
    from mmbench.analysis.mine import MiningRecipe, mine
    from mmbench.rerank.stage import rerank_suite

    cache = Path(os.environ["MMBENCH_TEST_CACHE"])
    base = dict(suite=SUITE, tasks=(TASK,), output=tmp_path / "results", cache_dir=cache,
                mini_root=mini_without_other_queries)
    outcome = api.run(api.RunConfig(**base, rerank="rescore:minilm", rerank_top_k=10), Recorder())
    (task,) = outcome.tasks
    assert outcome.pool == "global" and task.n_candidates == 578
    exp = outcome.experiment.directory
    (run_name,) = [p.name for p in exp.glob(f"{TASK}.trec*")]
    in_run = (exp / run_name).read_bytes()

    # the second stage on its own (no task data handed over): it loads the global pool itself
    shutil.rmtree(exp)
    again = rerank_suite(outcome, api.RunConfig(**base, rerank="rescore:minilm", rerank_top_k=10), Recorder())
    assert [t.task for t in again.tasks] == [TASK] and not again.tasks[0].reused
    assert (exp / run_name).read_bytes() == in_run       # the same pool, so the same rerank

    # the gallery of the first stage and of the experiment against it: no data warning
    gallery = build_gallery(outcome.directory, TASK, against=exp, limit=5)
    assert gallery.warnings == [] and gallery.n_queries > 0
    assert all(c.modality != "?" for c in gallery.candidates.values())      # every shown id found in the pool

    # mining reads the same pool
    mined = mine(outcome.directory, TASK, tmp_path / "mined", MiningRecipe(skip_top=5, window=(1, 50)))
    assert mined.queries > 0 and mined.negatives > 0
