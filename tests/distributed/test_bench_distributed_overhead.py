"""bench/bench_distributed_overhead.py runs end to end on a tiny CLIP (one round: plain, torchrun with one
rank, the launcher alone), and its comparison finds the two arms' results and cache chunks equal."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dist_helpers import build_tiny_clip, mmbench_env

pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_distributed_overhead.py"

pytestmark = [pytest.mark.slow,        # three subprocesses, each importing torch: ~20 s on 2 cores
              pytest.mark.skipif(not Path("/usr/share/tuxpaint/stamps").is_dir(),
                                 reason="needs Debian's tuxpaint-stamps-default (make setup installs it)")]


def test_bench_distributed_overhead_smoke(tmp_path: Path, shared_test_cache: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    model = build_tiny_clip(tmp_path / "tiny-clip")
    data = Path(shared_test_cache) / "data"
    if not (data / "mbeir-mini" / "MANIFEST.json").exists():
        build = subprocess.run([sys.executable, "-m", "mmbench", "data", "build-mini", "--out",
                                str(data / "mbeir-mini")], env=mmbench_env(tmp_path / "build-cache", data),
                               capture_output=True, text=True, timeout=300)
        assert build.returncode == 0, build.stderr
    spec = importlib.util.spec_from_file_location("bench_distributed_overhead_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module                     # its dataclasses look their module up there
    spec.loader.exec_module(module)
    report_path = tmp_path / "report.json"
    status = module.main(["--model", f"clip:{model}", "--tasks", "tuxpaint_task0", "--chunk-size", "64",
                          "--batch-size", "16", "--repeats", "1", "--warmup", "0", "--threads", "1",
                          "--data", str(data), "--scratch", str(tmp_path), "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert status == 0 and report["identical"] is True and report["differences"] == []
    assert report["compared"]["run files"] == 1 and report["compared"]["cache chunks"] > 1
    assert sorted(r["arm"] for r in report["runs"]) == ["launcher", "plain", "torchrun"]
    assert all(r["wall_s"] > 0 and r["cpu_s"] > 0 for r in report["runs"])
    assert all(r["encode_s"] is not None for r in report["runs"] if r["arm"] != "launcher")
    assert set(report["summary"]["wall_s"]) == {"ratio_of_medians", "median_of_ratios",
                                                "ratio_of_medians_without_launcher",
                                                "median_of_ratios_without_launcher"}
    assert "results identical to the first plain run's" in capsys.readouterr().out
    assert not list(tmp_path.glob("bench_dist_*"))          # the runs' folders are removed
