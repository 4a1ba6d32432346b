"""`mmbench plan` and `mmbench run --dry-run` through the real entry point."""

from __future__ import annotations

import json

from cli_helpers import invoke


def test_plan_prints_the_work_and_a_missing_file_is_exit_1(capsys, monkeypatch, mbeir_root, tmp_path):
    args = ("--tasks", "mscoco_task0,mscoco_task3", "--data-root", str(mbeir_root), "--model", "clip-vit-b-32",
            "--cache-dir", str(tmp_path / "home"), "--output", str(tmp_path / "out"))
    shown = invoke(capsys, monkeypatch, "plan", *args, columns=200)
    assert shown.code == 0, shown.err
    assert "mscoco_task0: queries" in shown.out and "cache disk" in shown.out and "GPU memory per device" in shown.out
    assert "images checked" in shown.out
    dry = invoke(capsys, monkeypatch, "run", "--dry-run", *args, columns=200)
    assert dry.code == 0 and dry.out == shown.out
    as_json = invoke(capsys, monkeypatch, "plan", "--json", *args)
    (plan,) = json.loads(as_json.out)["plans"]
    assert plan["model"] == "clip-vit-b-32" and plan["embed_dim"] == 512
    queries = {t["name"]: t["items"] for t in plan["tables"] if t["role"] == "query"}
    assert queries == {"mscoco_task0: queries": 5, "mscoco_task3: queries": 5}
    assert not (tmp_path / "out").exists()                     # a plan writes no results
    missing = mbeir_root / "query/test/mbeir_mscoco_task3_test.jsonl"
    missing.unlink()
    failed = invoke(capsys, monkeypatch, "plan", *args)
    assert failed.code == 1 and str(missing) in failed.err and "missing file" in failed.err


def test_json_without_dry_run_is_a_usage_error(capsys, monkeypatch):
    result = invoke(capsys, monkeypatch, "run", "--json")
    assert result.code == 2 and "--dry-run" in result.err
