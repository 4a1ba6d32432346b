"""`mmbench list`: every model's metadata whole in the table and in JSON; search backends."""

from __future__ import annotations

import json

from cli_helpers import invoke

from mmbench.catalog import models


def test_list_models_prints_every_metadata_field_whole(capsys, monkeypatch):
    table = invoke(capsys, monkeypatch, "list", "models", columns=200)
    as_json = invoke(capsys, monkeypatch, "list", "models", "--json", columns=200)
    assert table.code == 0 and as_json.code == 0, table.err + as_json.err
    entries = {m["name"]: m for m in json.loads(as_json.out)}
    assert set(entries) == set(models().names())
    fields = ("name", "revision", "modalities", "embed_dim", "similarity", "max_tokens", "n_parameters", "license")
    for name, m in entries.items():
        assert all(f in m for f in fields), name
        assert f"│ {name} " in table.out, f"{name} is cut or wrapped in the table"
    for name in ("mm-embed", "clip-vit-l-14", "uniir-clip-sf-l", "uniir-blip-ff-l", "siglip-so400m-patch14-384"):
        m = entries[name]
        assert m["n_parameters"] and m["license"] and m["embed_dim"] and m["max_tokens"], name
        assert f"{m['n_parameters']:,}" in table.out
    assert entries["uniir-clip-sf-l"]["fusion"] == "raw-sum" and entries["clip-vit-l-14"]["fusion"] == "score-sum"


def test_list_tasks_filters_by_modality(capsys, monkeypatch):
    r = invoke(capsys, monkeypatch, "list", "tasks", "--query-modality", "image", "--json", columns=200)
    assert r.code == 0, r.err
    tasks = json.loads(r.out)
    assert tasks and all(t["query_modality"] == "image" for t in tasks)


def test_list_backends(capsys, monkeypatch):
    from mmbench.search import backend_names

    r = invoke(capsys, monkeypatch, "list", "backends", "--json", columns=200)
    assert r.code == 0, r.err
    entries = json.loads(r.out)
    names = [b["name"] for b in entries]
    assert names and len(set(names)) == len(names)
    assert sorted(names) == sorted(n for n in backend_names() if n != "auto")
    assert all(isinstance(b["exact"], bool) and b["available"] for b in entries)
    assert all(v is True or (isinstance(v, str) and v) for b in entries for v in b["available"].values())
    assert any(b["exact"] and b["available"].get("cpu") is True for b in entries)   # `auto` always has one
    table = invoke(capsys, monkeypatch, "list", "backends", columns=200)
    assert table.code == 0 and all(f"│ {n} " in table.out for n in names), table.out + table.err
