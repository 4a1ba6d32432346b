"""compare, leaderboard build and regress name runs from their records (never from folder names);
chart labels are whole; regress at 80 columns names each failing task on a line of its own."""

import json
import os
import re
import shutil

import pytest

from analysis_runs import DEFAULT_MODEL, REPO, cli, copy_run, needs_stamps, real_runs
from mmbench.analysis.compare import compare, load_run
from mmbench.errors import MmbenchError

pytestmark = [needs_stamps, pytest.mark.slow]
EXPERIMENT = "rerank=a-reranker-with-a-long-name__top10"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return real_runs(tmp_path_factory)


def as_rerank_experiment(first_stage, dst):
    """A copy of a real first-stage run laid out and recorded as the rerank stage writes one: task
    records name the model under ``first_stage`` and the reranker under ``rerank``; summary.json names
    the experiment. The folder names say nothing about the model ("mbeir-mini/experiments/...")."""
    exp = copy_run(first_stage, dst / "mbeir-mini" / "experiments" / EXPERIMENT)
    summary = {}
    for path in exp.glob("*.json"):
        if path.name == "summary.json":
            summary = json.loads(path.read_text())
            continue
        rec = json.loads(path.read_text())
        model = rec.pop("model")
        rec["first_stage"] = {"model": model["name"], "revision": model["revision"]}
        rec["rerank"] = {"reranker": {"name": "a-reranker-with-a-long-name", "revision": "r1"}, "top_k": 10}
        path.write_text(json.dumps(rec))
    summary.update(experiment=EXPERIMENT)
    (exp / "summary.json").write_text(json.dumps(summary))
    return exp


def test_a_rerank_experiment_shows_its_model_not_its_folders(runs, tmp_path):
    exp = as_rerank_experiment(runs["default"], tmp_path / "other")
    run = load_run(exp)
    first = load_run(runs["default"])
    assert (run.model, run.revision, run.suite) == (first.model, first.revision, "mbeir-mini")
    assert run.model == DEFAULT_MODEL and run.experiment == EXPERIMENT
    c = compare([runs["default"], exp], n_resamples=200)
    assert c.runs[0].label.startswith(f"{DEFAULT_MODEL} + {EXPERIMENT}")
    assert c.to_dict()["runs"][0]["experiment"] == EXPERIMENT
    assert "experiments" not in c.runs[0].label and "mbeir-mini/" not in c.runs[0].label.split("/")[0]

    # the leaderboard: the row is the model + experiment, and its chart label is whole ("…__top10", not "…__top1")
    results = tmp_path / "results"
    copy_run(runs["default"], results / "a" / "b" / "mbeir-mini")
    as_rerank_experiment(runs["default"], results / "a" / "b")
    out = tmp_path / "boards"
    cli("leaderboard", "build", "--results", results, "--out", out)
    rows = (out / "mbeir-mini.csv").read_text()
    assert f"{DEFAULT_MODEL} + {EXPERIMENT}" in rows and ",experiments," not in rows and "\nmbeir-mini," not in rows
    html = (out / "mbeir-mini.html").read_text()
    labels = re.findall(r'text-anchor="end">([^<]*)</text>', html)
    assert f"{DEFAULT_MODEL} + {EXPERIMENT}" in labels and DEFAULT_MODEL in labels
    assert all(not label.endswith("…") for label in labels)


def test_a_record_without_a_model_is_an_error_not_a_folder_name(runs, tmp_path):
    run = copy_run(runs["minilm"], tmp_path / "m" / "r" / "mbeir-mini")
    path = run / "tuxpaint_task1.json"
    rec = json.loads(path.read_text())
    del rec["model"]
    path.write_text(json.dumps(rec))
    (run / "summary.json").unlink(missing_ok=True)
    with pytest.raises(MmbenchError, match="names no model"):
        load_run(run)


def test_regress_at_80_columns_names_each_failing_task(runs, tmp_path):
    results = tmp_path / "results"          # the real tree of the default model, where regress looks for it
    shutil.copytree(runs["results"] / DEFAULT_MODEL, results / DEFAULT_MODEL)
    run = results / runs["default"].relative_to(runs["results"])
    for task in ("tuxpaint_task3", "tuxpaint_task4"):
        path = run / f"{task}.json"
        rec = json.loads(path.read_text())
        rec["main_score"] = round(rec["main_score"] - 0.02, 6)
        path.write_text(json.dumps(rec))
    env = {**os.environ, "MMBENCH_NO_PROGRESS": "1", "COLUMNS": "80"}
    proc = cli("regress", "--baseline", REPO / "leaderboards" / "baselines" / "mbeir-mini.json", "--results", results,
               env=env, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "tuxpaint_task3: CHANGED" in lines and "tuxpaint_task4: CHANGED" in lines
    assert "tuxpaint_task0: CHANGED" not in lines and "tuxpaint…" not in proc.stdout and "…" not in proc.stdout
    assert all(len(line) <= 80 for line in lines if line.startswith(("┃", "│", "┏", "┡", "└")))
    # the reason sits under its task; the hint keeps --results
    i = lines.index("tuxpaint_task3: CHANGED")
    assert lines[i + 1].startswith("  down 0.02")
    hint = [line for line in lines if line.strip().startswith("mmbench regress")]
    assert hint and f"--results {results}" in hint[0] and "--update" in hint[0]
