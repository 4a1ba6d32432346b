"""`mmbench run --devices ...` shards the search (backend ``sharded``) and writes the same run as one device."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from cli_helpers import invoke

STAMPS = Path("/usr/share/tuxpaint/stamps")


def _run_text(folder: Path) -> bytes:
    (path,) = folder.glob("minilm/*/mbeir-mini*/tuxpaint_task1.trec*")
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


@pytest.mark.skipif(not STAMPS.is_dir(), reason="needs Debian's tuxpaint-stamps-default (make setup installs it)")
def test_devices_shard_the_search_and_change_no_byte(shared_test_cache, tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("MMBENCH_CACHE", str(shared_test_cache))
    records, runs = {}, {}
    for label, extra in (("one", ["--search-backend", "numpy"]), ("three", ["--devices", "cpu,cpu,cpu"])):
        out = tmp_path / label
        r = invoke(capsys, monkeypatch, "run", "--model", "minilm", "--suite", "mbeir-mini", "--tasks", "tuxpaint_task1",
                   "--output", str(out), "--device", "cpu", "--run-depth", "all", *extra, columns=200)
        assert r.code == 0, r.out + r.err
        (path,) = out.glob("minilm/*/mbeir-mini*/tuxpaint_task1.json")
        records[label], runs[label] = json.loads(path.read_text()), _run_text(out)
    search = records["three"]["search"]
    assert search["name"] == "sharded" and search["exact"] is True and search["devices"] == ["cpu", "cpu", "cpu"]
    assert records["three"]["metrics"] == records["one"]["metrics"]
    assert runs["three"] == runs["one"]


def test_devices_are_checked(capsys, monkeypatch):
    r = invoke(capsys, monkeypatch, "run", "--devices", "cuda:0,gpu1")
    assert r.code == 2 and "gpu1" in r.out + r.err
