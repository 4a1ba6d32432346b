"""`mmbench run` end to end with the real packaged models on the real embedded suite, resume, errors.

Golden scores were produced by this harness on the 2-core CPU CI machine kind and are checked to
1e-6; a change in any of them means a change in data, model, search or metrics and must be
explained (regenerate with `python tests/golden/regenerate.py`).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmbench.results.trec import read_run_text

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "mbeir_mini.json").read_text())
DEFAULT_MODEL = "effnet-lite0-imagenet-labels-minilm"
pytestmark = pytest.mark.skipif(not Path("/usr/share/tuxpaint/stamps").is_dir(),
                                reason="needs Debian's tuxpaint-stamps-default (make setup installs it)")


def mmbench(*args, env: dict, check: bool = True, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mmbench", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


@pytest.fixture(scope="module")
def shared_env(tmp_path_factory):
    """The session's shared cache (with the built mini suite; see conftest.shared_test_cache)."""
    root = tmp_path_factory.mktemp("e2e")
    env = {**os.environ, "MMBENCH_CACHE": os.environ["MMBENCH_TEST_CACHE"], "MMBENCH_NO_PROGRESS": "1"}
    return root, env


def results_of(out_dir: Path, model: str, suite: str) -> Path:
    (model_dir,) = [p for p in (out_dir / model).iterdir()]
    return model_dir / suite


def test_default_run_matches_golden_and_writes_every_file(shared_env):
    root, env = shared_env
    proc = mmbench("run", "--output", str(root / "r1"), env=env)
    assert "average" in proc.stdout and "results (mbeir-mini)" in proc.stdout
    d = results_of(root / "r1", DEFAULT_MODEL, "mbeir-mini")
    summary = json.loads((d / "summary.json").read_text())
    assert summary["complete"] and set(summary["tasks"]) == set(GOLDEN[DEFAULT_MODEL])
    for task, golden in GOLDEN[DEFAULT_MODEL].items():
        rec = json.loads((d / f"{task}.json").read_text())
        for metric, value in golden.items():
            assert rec["metrics"][metric] == pytest.approx(value, abs=1e-6), (task, metric)
        assert rec["main_score"] == rec["metrics"]["hit@5"]
        prov = rec["provenance"]
        assert prov["config_hash"] and prov["harness_version"] and "torch" in prov["packages"]
        assert set(prov["data_fingerprints"]) == {"queries", "pool", "qrels", "instructions"}
        assert rec["instructions"] == {"policy": "first", "seed": None}
        assert rec["model"]["settings"]
        # the TREC run: qid Q0 did rank score tag, ranks 1..k, scores non-increasing
        lines = read_run_text(d / f"{task}.trec.gz").splitlines()
        first = [ln.split() for ln in lines if ln.split()[0] == lines[0].split()[0]]
        assert [int(c[3]) for c in first] == list(range(1, len(first) + 1)) and first[0][1] == "Q0"
        scores = [float(c[4]) for c in first]
        assert scores == sorted(scores, reverse=True)
        # per-query file averages to the reported metrics
        rows = [ln.split("\t") for ln in (d / f"{task}.per_query.tsv").read_text().splitlines()]
        col = rows[0].index("ndcg@10")
        assert sum(float(r[col]) for r in rows[1:]) / (len(rows) - 1) == pytest.approx(rec["metrics"]["ndcg@10"], abs=1e-5)
    mean = sum(v["hit@5"] for v in GOLDEN[DEFAULT_MODEL].values()) / len(GOLDEN[DEFAULT_MODEL])
    assert summary["average_main_score"] == pytest.approx(mean, abs=1e-6)


def test_second_identical_run_encodes_nothing_and_never_loads_the_model(shared_env):
    root, env = shared_env
    proc = mmbench("run", "--output", str(root / "r2"), env=env)
    assert "loading model" not in proc.stderr
    d = results_of(root / "r2", DEFAULT_MODEL, "mbeir-mini")
    for task in GOLDEN[DEFAULT_MODEL]:
        rec = json.loads((d / f"{task}.json").read_text())
        t = rec["timings_s"]
        assert t["queries_from_cache"] == rec["n_queries_in_file"] and t["candidates_from_cache"] == rec["n_candidates"]
        assert rec["metrics"]["hit@5"] == pytest.approx(GOLDEN[DEFAULT_MODEL][task]["hit@5"], abs=1e-6)
    # the same output folder again: finished results are reused, nothing is recomputed
    proc = mmbench("run", "--output", str(root / "r2"), env=env)
    assert proc.stderr.count("finished result found") == 4 + 2      # mbeir-mini, then mteb-mini's 2 text tasks


def test_global_pool_reuses_local_embeddings_and_reports_modality(shared_env):
    root, env = shared_env
    proc = mmbench("run", "--suite", "mbeir-mini-global", "--output", str(root / "g"), env=env)
    assert "loading model" not in proc.stderr            # the union pool is built from cached local pools
    d = results_of(root / "g", DEFAULT_MODEL, "mbeir-mini-global")
    wrong = {}
    for task in GOLDEN[DEFAULT_MODEL]:
        rec = json.loads((d / f"{task}.json").read_text())
        assert rec["pool"] == "global" and rec["n_candidates"] == 578
        wrong[task] = rec["modality_report"]["at"]["10"]["wrong_modality_share"]
        local = json.loads((results_of(root / "r1", DEFAULT_MODEL, "mbeir-mini") / f"{task}.json").read_text())
        assert rec["metrics"]["hit@5"] <= local["metrics"]["hit@5"] + 1e-9 or wrong[task] == 0
    assert any(v > 0 for v in wrong.values())             # a mixed pool exposes modality bias


def test_killed_run_resumes_without_redoing_finished_chunks(tmp_path, shared_env):
    _, env0 = shared_env
    env = {**env0, "MMBENCH_CACHE": str(tmp_path / "cache")}
    # share the built mini data with the module's cache so only embeddings start from nothing
    env["MMBENCH_DATA"] = str(Path(env0["MMBENCH_CACHE"]) / "data")
    args = ["run", "--model", DEFAULT_MODEL, "--tasks", "tuxpaint_task4", "--suite", "mbeir-mini",
            "--chunk-size", "16", "--output", str(tmp_path / "out")]
    mmbench("data", "build-mini", "--out", str(Path(env["MMBENCH_DATA"]) / "mbeir-mini"), env=env) \
        if not (Path(env["MMBENCH_DATA"]) / "mbeir-mini" / "MANIFEST.json").exists() else None
    proc = subprocess.Popen([sys.executable, "-m", "mmbench", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    emb = tmp_path / "cache" / "embeddings"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(emb.rglob("chunk_*.npy"))) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.parent.name: len(list(p.parent.glob("chunk_*.npy"))) for p in emb.rglob("manifest.json")}
    assert sum(done.values()) >= 3
    assert not list(emb.rglob("*.tmp"))                   # no half-written chunk survives
    mmbench(*args, env=env)
    (rec_path,) = list((tmp_path / "out").rglob("tuxpaint_task4.json"))
    t = json.loads(rec_path.read_text())["timings_s"]
    assert t["candidates_from_cache"] + t["queries_from_cache"] >= 16 * sum(done.values()) - 16
    assert t["candidates_from_cache"] + t["queries_from_cache"] > 0
    rec = json.loads(rec_path.read_text())
    assert rec["metrics"]["hit@5"] == pytest.approx(GOLDEN[DEFAULT_MODEL]["tuxpaint_task4"]["hit@5"], abs=1e-6)
    # --overwrite recomputes everything
    mmbench(*args, "--overwrite", env=env)
    t = json.loads(rec_path.read_text())["timings_s"]
    assert t["candidates_from_cache"] == 0 and t["queries_from_cache"] == 0


def test_fixture_tasks_run_with_cross_dataset_positive(mbeir_root, shared_env, tmp_path):
    _, env = shared_env
    proc = mmbench("run", "--tasks", "mscoco_task0,mscoco_task3,oven_task6", "--data-root", str(mbeir_root),
                   "--output", str(tmp_path / "out"), env=env)
    assert "mscoco_task0" in proc.stdout
    d = results_of(tmp_path / "out", DEFAULT_MODEL, "local")
    oven = json.loads((d / "oven_task6.json").read_text())
    assert any("another dataset" in n for n in oven["notes"])
    assert oven["n_candidates"] == 2 and oven["metrics"]["recall@5"] <= 0.5  # the InfoSeek positive is unreachable
    assert json.loads((d / "mscoco_task0.json").read_text())["n_candidates"] == 6


def test_model_options_reach_the_loader_and_keep_their_results_apart(mbeir_root, shared_env, tmp_path):
    from mmbench.models.minilm import package_model_path

    _, env = shared_env
    base = ["run", "--tasks", "mscoco_task0", "--data-root", str(mbeir_root), "--output", str(tmp_path / "out")]
    mmbench(*base, env=env)
    mmbench(*base, "--model-option", f"minilm_path={package_model_path()}", "--model-option", "device=cpu", env=env)
    plain, optioned = sorted((tmp_path / "out" / DEFAULT_MODEL).iterdir(), key=lambda d: len(d.name))
    assert "options-" in optioned.name and "options-" not in plain.name      # own revision: own cache and results
    a, b = (json.loads((d / "local" / "mscoco_task0.json").read_text()) for d in (plain, optioned))
    assert b["provenance"]["config"]["model_options"] == {"device": "cpu", "minilm_path": str(package_model_path())}
    assert a["provenance"]["config_hash"] != b["provenance"]["config_hash"]
    assert a["metrics"] == b["metrics"]                        # the same weights, given by path: the same numbers


@pytest.mark.parametrize("args, message", [
    (["run", "--model", "minilm", "--tasks", "tuxpaint_task0", "--suite", "mbeir-mini"], "has image candidates"),
    (["run", "--tasks", "mscoco_tsk0"], "Did you mean: mscoco_task0"),
    (["run", "--suite", "mbeir-mnii"], "Did you mean: mbeir-mini"),
    (["run", "--model", "clip-vit-l-41"], "Did you mean"),
    (["run", "--tasks", "mscoco_task0"], "needs M-BEIR on disk: pass --data-root"),
    (["run", "--tasks", "mscoco_task0", "--data-root", "/nonexistent/M-BEIR"], "/nonexistent/M-BEIR: data root does not exist"),
    (["run", "--model-option", "minilm_path"], "expected KEY=VALUE"),
    (["run", "--suite", "mbeir-mini", "--tasks", "tuxpaint_task1", "--model-option", "bogus=1"],
     "unexpected keyword argument 'bogus' (from --model-option; this loader takes cache_dir, device, minilm_path)"),
])
def test_user_errors_exit_non_zero_with_one_clear_line(args, message, shared_env, tmp_path):
    _, env = shared_env
    out = mmbench(*args, "--output", str(tmp_path / "o"), env=env, check=False)
    assert out.returncode == 1
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("*.json"))


def test_debug_flag_shows_the_traceback(shared_env, tmp_path):
    _, env = shared_env
    out = mmbench("--debug", "run", "--tasks", "mscoco_tsk0", env=env, check=False)
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_a_hub_model_missing_offline_is_one_clear_error(shared_env, tmp_path):
    _, env = shared_env
    out = mmbench("run", "--model", "clip-vit-b-32", "--suite", "mbeir-mini", "--tasks", "tuxpaint_task1",
                  "--output", str(tmp_path / "o"), env={**env, "HF_HUB_OFFLINE": "1"}, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "model 'clip-vit-b-32': its files are not on this machine" in out.stderr
    assert "hf download openai/clip-vit-base-patch32" in out.stderr


def test_float16_embeddings_run_end_to_end(mbeir_root, shared_env, tmp_path):
    _, env = shared_env
    base = ["run", "--tasks", "mscoco_task0,mscoco_task3", "--data-root", str(mbeir_root)]
    mmbench(*base, "--output", str(tmp_path / "a"), env=env)
    mmbench(*base, "--output", str(tmp_path / "b"), "--embed-dtype", "float16", env=env)
    for task in ("mscoco_task0", "mscoco_task3"):
        a, b = (json.loads((results_of(tmp_path / o, DEFAULT_MODEL, label) / f"{task}.json").read_text())
                for o, label in (("a", "local"), ("b", "local__dtype=float16")))   # a variant's own folder
        assert b["provenance"]["config"]["embed_dtype"] == "float16"
        assert a["provenance"]["config_hash"] != b["provenance"]["config_hash"]
        for name, value in a["metrics"].items():       # 6 candidates: float16 rounding moves no hit here
            assert b["metrics"][name] == pytest.approx(value, abs=1e-3), (task, name)
