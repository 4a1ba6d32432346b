"""`mmbench regress`: this repository's CI check of the default model on mbeir-mini against the
committed baseline (leaderboards/baselines/mbeir-mini.json), and the two-sided failure modes."""

import json
import shutil

import pytest

from analysis_runs import REPO, cli, copy_run, edit_per_query, needs_stamps, real_runs
from mmbench.analysis import regress as rg
from mmbench.analysis.compare import load_run

BASELINE = REPO / "leaderboards" / "baselines" / "mbeir-mini.json"
pytestmark = [needs_stamps, pytest.mark.slow]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return real_runs(tmp_path_factory)


def test_real_default_run_matches_the_committed_baseline(runs):
    """The CI regression check: a fresh real run of the default model on mbeir-mini."""
    base = json.loads(BASELINE.read_text())
    assert base["suite"] == "mbeir-mini" and set(base["tasks"]) == {"tuxpaint_task0", "tuxpaint_task1", "tuxpaint_task3", "tuxpaint_task4"}
    proc = cli("regress", "--baseline", BASELINE, "--results", runs["results"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no change beyond the tolerance" in proc.stdout
    report = rg.check(load_run(runs["default"]), base, baseline_path=BASELINE)
    assert report.passed and all(c.queries_changed == {"hit@5": 0, "ndcg@10": 0} for c in report.checks)


@pytest.mark.parametrize("sign", [+1, -1])
def test_changed_score_fails_both_ways(runs, tmp_path, sign):
    run = copy_run(runs["default"], tmp_path / "run" / "mbeir-mini")
    path = run / "tuxpaint_task3.json"
    rec = json.loads(path.read_text())
    rec["main_score"] = round(rec["main_score"] + sign * 0.01, 6)
    path.write_text(json.dumps(rec))
    proc = cli("regress", run, "--baseline", BASELINE, check=False)
    assert proc.returncode == 1, proc.stdout
    assert "CHANGED" in proc.stdout and ("up 0.01" if sign > 0 else "down 0.01") in proc.stdout
    # within the tolerance: passes (per-query files untouched)
    assert cli("regress", run, "--baseline", BASELINE, "--tolerance", "0.02", check=False).returncode == 0


@pytest.mark.parametrize("sign", [+1, -1])
def test_perturbed_per_query_scores_fail_both_ways(runs, tmp_path, sign):
    run = copy_run(runs["default"], tmp_path / "run" / "mbeir-mini")
    # a small, consistent shift of nDCG@10 (mean moves 0.004 < tolerance): only the paired test sees it
    edit_per_query(run, "tuxpaint_task0", "ndcg@10", lambda i, v: min(1.0, max(0.0, v + sign * 0.004)) if 0 < v < 1 or
                   (sign > 0 and v == 0) or (sign < 0 and v == 1) else v)
    report = rg.check(load_run(run), rg.load_baseline(BASELINE), baseline_path=BASELINE, n_resamples=2000)
    (t0,) = [c for c in report.checks if c.task == "tuxpaint_task0"]
    assert t0.changed and any("ndcg@10: per-query scores changed" in r for r in t0.reasons)
    assert t0.p_values["ndcg@10"] < 0.01 and ("mean up" if sign > 0 else "mean down") in " ".join(t0.reasons)
    assert not report.passed and all(not c.changed for c in report.checks if c.task != "tuxpaint_task0")
    assert cli("regress", run, "--baseline", BASELINE, check=False).returncode == 1


def test_noise_and_unrelated_swaps_pass_but_lost_queries_fail(runs, tmp_path):
    run = copy_run(runs["default"], tmp_path / "run" / "mbeir-mini")
    edit_per_query(run, "tuxpaint_task1", "ndcg@10", lambda i, v: v + 4e-7)          # float noise
    report = rg.check(load_run(run), rg.load_baseline(BASELINE), baseline_path=BASELINE)
    assert report.passed
    tsv = run / "tuxpaint_task4.per_query.tsv"
    tsv.write_text("\n".join(tsv.read_text().splitlines()[:-1]) + "\n")
    report = rg.check(load_run(run), rg.load_baseline(BASELINE), baseline_path=BASELINE)
    (t4,) = [c for c in report.checks if c.task == "tuxpaint_task4"]
    assert t4.changed and "scored queries differ" in " ".join(t4.reasons)


def test_update_accepts_the_change(runs, tmp_path):
    baseline = tmp_path / "baseline.json"
    shutil.copy(BASELINE, baseline)
    run = copy_run(runs["default"], tmp_path / "run" / "mbeir-mini")
    edit_per_query(run, "tuxpaint_task1", "hit@5", lambda i, v: 1.0 if i % 3 == 0 else v)
    rec = json.loads((run / "tuxpaint_task1.json").read_text())
    rec["main_score"] = 0.5
    (run / "tuxpaint_task1.json").write_text(json.dumps(rec))
    assert cli("regress", run, "--baseline", baseline, check=False).returncode == 1
    proc = cli("regress", run, "--baseline", baseline, "--update")
    assert "baseline written" in proc.stdout
    assert json.loads(baseline.read_text())["tasks"]["tuxpaint_task1"]["main_score"] == 0.5
    assert cli("regress", run, "--baseline", baseline, "--json", tmp_path / "r.json").returncode == 0
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is True
    # the committed baseline still rejects the changed run, and a missing baseline is a clear error
    assert cli("regress", run, "--baseline", BASELINE, check=False).returncode == 1
    proc = cli("regress", run, "--baseline", tmp_path / "missing.json", check=False)
    assert proc.returncode == 1 and "baseline not found" in proc.stderr
