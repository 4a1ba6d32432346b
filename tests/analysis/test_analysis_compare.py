"""`mmbench compare` on real runs: alignment, refusal of incomparable runs, outputs."""

import json
import shutil

import pytest

from analysis_runs import cli, copy_run, edit_per_query, needs_stamps, real_runs
from mmbench.analysis.compare import compare
from mmbench.errors import MmbenchError

pytestmark = [needs_stamps, pytest.mark.slow]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return real_runs(tmp_path_factory)


def test_two_real_models_on_the_same_task(runs):
    # minilm and the default model both encode text with all-MiniLM-L6-v2: identical per-query scores
    c = compare([runs["minilm"], runs["default"]])
    assert [r.task for r in c.rows] == ["tuxpaint_task1"]
    row = c.rows[0]
    assert row.result.n == 297 and row.result.delta == 0 and row.result.ties == 297
    assert row.result.p_randomization == 1.0 and not row.significant
    assert set(c.skipped_tasks) == {"tuxpaint_task0", "tuxpaint_task3", "tuxpaint_task4"}
    assert c.baseline.model == "minilm" and c.runs[0].model == "effnet-lite0-imagenet-labels-minilm"


def test_improvement_is_significant_reproducible_and_written_everywhere(runs, tmp_path):
    better = copy_run(runs["default"], tmp_path / "better" / "mbeir-mini")
    # 40 queries that missed now hit; another task is shuffled so that its mean does not move
    edit_per_query(better, "tuxpaint_task1", "hit@5", lambda i, v: 1.0 if v == 0 and i % 4 == 0 else v)
    edit_per_query(better, "tuxpaint_task0", "hit@5", lambda i, v: v)
    c1 = compare([runs["default"], better], seed=3, n_resamples=2000)
    c2 = compare([runs["default"], better], seed=3, n_resamples=2000)
    assert c1.to_dict()["rows"] == c2.to_dict()["rows"]            # same seed, same numbers
    rows = {r.task: r for r in c1.rows}
    assert set(rows) == {"tuxpaint_task0", "tuxpaint_task1", "tuxpaint_task3", "tuxpaint_task4"}
    t1 = rows["tuxpaint_task1"]
    assert t1.significant and t1.result.delta > 0.05 and t1.result.losses == 0
    assert t1.result.ci_low > 0 and t1.result.p_t < 1e-6
    assert not rows["tuxpaint_task0"].significant and rows["tuxpaint_task0"].result.delta == 0
    # Holm over 4 tests: the smallest p is multiplied by 4
    assert t1.p_adjusted == pytest.approx(min(1.0, 4 * t1.result.p_randomization))

    out = tmp_path / "out"
    proc = cli("compare", runs["default"], better, "--seed", "3", "--resamples", "2000", "--markdown", out / "c.md",
               "--json", out / "c.json", "--plot", out / "c.png")
    assert "tuxpaint_task1" in proc.stdout and "+" in proc.stdout
    data = json.loads((out / "c.json").read_text())
    assert data["settings"]["seed"] == 3 and len(data["rows"]) == 4
    assert any(r["task"] == "tuxpaint_task1" and r["significant"] for r in data["rows"])
    md = (out / "c.md").read_text()
    assert "| tuxpaint_task1 |" in md and "Holm" in md
    png = (out / "c.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    from PIL import Image

    with Image.open(out / "c.png") as im:
        assert im.size[0] >= 600 and im.size[1] >= 100
    js = json.loads(cli("compare", runs["default"], better, "--format", "json", "--resamples", "500").stdout)
    assert js["baseline"]["model"] == "effnet-lite0-imagenet-labels-minilm"


def _set(record_path, fn):
    rec = json.loads(record_path.read_text())
    fn(rec)
    record_path.write_text(json.dumps(rec))


@pytest.mark.parametrize("what", ["pool", "qrels", "queries"])
def test_refuses_different_pools_qrels_or_query_sets_unless_forced(runs, tmp_path, what):
    other = copy_run(runs["default"], tmp_path / "other" / "mbeir-mini")
    path = other / "tuxpaint_task1.json"
    if what == "pool":
        _set(path, lambda r: r.update(n_candidates=578, pool="global") or r["provenance"]["data_fingerprints"].update(pool="f" * 64))
    elif what == "qrels":
        _set(path, lambda r: r["provenance"]["data_fingerprints"].update(qrels="0" * 64))
    else:
        tsv = other / "tuxpaint_task1.per_query.tsv"
        tsv.write_text("\n".join(tsv.read_text().splitlines()[:-5]) + "\n")     # 5 queries fewer
    with pytest.raises(MmbenchError) as err:
        compare([runs["default"], other])
    msg = str(err.value)
    assert "tuxpaint_task1" in msg and "--force" in msg
    assert {"pool": "pools (", "qrels": "qrels (", "queries": "query sets ("}[what] in msg
    assert "tuxpaint_task0" not in msg                     # only the task that differs is named
    proc = cli("compare", runs["default"], other, check=False)
    assert proc.returncode == 1 and "not comparable" in proc.stderr
    forced = compare([runs["default"], other], force=True, n_resamples=500)
    row = [r for r in forced.rows if r.task == "tuxpaint_task1"][0]
    assert row.forced and row.result.n == (292 if what == "queries" else 297)


def test_run_folder_discovery_and_errors(runs, tmp_path):
    # a folder above exactly one run is accepted; an experiments/ subfolder is a run of its own
    c = compare([runs["default"].parent, runs["minilm"]], n_resamples=500)
    assert c.baseline.path == runs["default"]
    exp = tmp_path / "m" / "rev" / "mbeir-mini"
    shutil.copytree(runs["default"], exp)
    shutil.copytree(runs["default"], exp / "experiments" / "rerank=x__depth=10")
    c = compare([exp, exp / "experiments" / "rerank=x__depth=10"], n_resamples=500)
    assert len(c.rows) == 4 and c.runs[0].label != c.baseline.label
    (tmp_path / "empty").mkdir()
    with pytest.raises(MmbenchError, match="no task results"):
        compare([tmp_path / "empty", runs["minilm"]])
    with pytest.raises(MmbenchError, match="at least two"):
        compare([runs["minilm"]])
    with pytest.raises(MmbenchError, match="no column"):
        compare([runs["minilm"], runs["default"]], metric="nope@3")


def test_a_non_default_configuration_is_named_from_the_record_not_the_folder(tmp_path):
    """Two runs of one model and suite, the default and --top-k 50: compare labels them apart, and the
    label comes from the records' provenance.config (the folders are given misleading names)."""
    import json as _json

    from mmbench.analysis.compare import load_run, record_variant
    from mmbench.config import RunConfig
    from result_files import TASKS, write_run

    default = write_run(tmp_path / "x", "model-a", 1)
    other = write_run(tmp_path / "y", "model-a", 2)
    for task in TASKS:
        for folder, config in ((default, RunConfig(tasks=("t",))), (other, RunConfig(top_k=50, run_depth=20))):
            path = folder / f"{task}.json"
            record = _json.loads(path.read_text())
            record["provenance"]["config"] = config.to_dict()
            path.write_text(_json.dumps(record))
    assert record_variant(_json.loads((other / f"{TASKS[0]}.json").read_text())) == "topk=50__depth=20"
    assert record_variant({"provenance": {}}) == ""
    a, b = load_run(default), load_run(other)
    assert (a.name, b.name) == ("model-a", "model-a [topk=50__depth=20]")
    result = compare([default, other])
    labels = {r.run for r in result.rows}
    assert labels == {"model-a [topk=50__depth=20]/synth-suite"}
    assert result.baseline.label == "model-a/synth-suite"
