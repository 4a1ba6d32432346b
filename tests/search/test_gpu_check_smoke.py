"""bench/gpu_check.py runs end to end with ``--smoke`` (tiny shapes, on the CPU here), so the GPU check
does not crash when a GPU is finally lent to it; its JSON has every part and its byte checks hold."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"


def test_gpu_check_smoke_runs_every_part(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "check.json"
    assert module.main(["--smoke", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["errors"] == []
    encoded = {(r["model"].split()[0], r["modality"]) for r in report["encode"]}
    assert encoded == {(m, x) for m in ("clip", "mm-embed") for x in ("text", "image", "image,text")}
    assert all(r["items_per_s"] > 0 for r in report["encode"])
    checks = [r["check"] for r in report["search"]]
    assert checks.count("gemm-floor") == 2
    timed = {r["backend"] for r in report["search"] if r["check"] == "search"}
    assert {"sharded float16 resident", "sharded streamed"} <= timed
    storage = {r["backend"]: r["storage"] for r in report["search"] if r["check"] == "search"}
    assert storage["sharded float16 resident"] == ["float16"] and storage["sharded streamed"] == ["streamed"]
    assert all(r["identical"] for r in report["search"] if "identical" in r)
    assert report["same_bytes"] and all(r["identical"] for r in report["same_bytes"])
    assert any("sharded@cpu" in r["runs"] for r in report["same_bytes"])
    assert "same-bytes" in capsys.readouterr().out          # the closing table
