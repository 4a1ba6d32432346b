"""`mmbench run --search-backend NAME` reaches the run, and the record names the backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import invoke

STAMPS = Path("/usr/share/tuxpaint/stamps")


@pytest.mark.skipif(not STAMPS.is_dir(), reason="needs Debian's tuxpaint-stamps-default (make setup installs it)")
def test_search_backend_is_chosen_and_recorded(shared_test_cache, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MMBENCH_CACHE", str(shared_test_cache))
    records = {}
    for backend in ("numpy", "auto"):
        out = tmp_path / backend
        r = invoke(capsys, monkeypatch, "run", "--model", "minilm", "--suite", "mbeir-mini", "--tasks", "tuxpaint_task1",
                   "--search-backend", backend, "--output", str(out), "--device", "cpu", columns=200)
        assert r.code == 0, r.out + r.err
        (path,) = out.glob("minilm/*/mbeir-mini/tuxpaint_task1.json")
        records[backend] = json.loads(path.read_text())
    assert records["numpy"]["search"]["name"] == "numpy" and records["numpy"]["search"]["exact"] is True
    assert records["auto"]["search"]["name"] != "numpy" and records["auto"]["search"]["exact"] is True
    assert records["numpy"]["metrics"] == records["auto"]["metrics"]        # two exact backends: the same numbers
