"""mmbench.models.loading's path helpers: one definition of "a local folder" and of its ``local:``
revision, used by every dynamic model scheme (clip:, siglip:, st:, mm-embed:) and by the rerankers."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmbench.models.builtin import MM_EMBED, resolve_dynamic_model
from mmbench.models.loading import hub_miss_error, local_revision, looks_like_path
from mmbench.rerank.base import parse_reranker

NAMES = ("model.safetensors", "pytorch_model.bin", "config.json")


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contents=st.lists(st.one_of(st.none(), st.binary(max_size=3000)), min_size=3, max_size=3))
def test_local_revision_hashes_the_present_files_in_order(tmp_path_factory, contents):
    folder = tmp_path_factory.mktemp("model")
    for name, data in zip(NAMES, contents):
        if data is not None:
            (folder / name).write_bytes(data)
    joined = b"".join(d for d in contents if d is not None)
    assert local_revision(folder, NAMES) == "local:" + hashlib.sha256(joined).hexdigest()[:12]


def test_a_large_file_is_hashed_whole(tmp_path):
    data = bytes(range(256)) * 9000                     # over the 1 MiB read size
    (tmp_path / "model.safetensors").write_bytes(data)
    assert local_revision(tmp_path, NAMES) == "local:" + hashlib.sha256(data).hexdigest()[:12]


def test_looks_like_path(tmp_path, monkeypatch):
    for spec in ("/nowhere/model", "./model", "../model", "~/model", str(tmp_path)):
        assert looks_like_path(spec), spec
    assert not looks_like_path("openai/clip-vit-base-patch32")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    assert looks_like_path("org")                       # a folder that exists, named without ./
    assert not looks_like_path("org/model")


def test_every_scheme_names_a_folder_by_the_same_revision(tmp_path):
    """The revisions of a local folder, as every resolver gives them (their values are in cache keys
    and result folders: they must not change)."""
    (tmp_path / "config.json").write_text('{"a": 1}')
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    (tmp_path / "modules.json").write_text("[]")
    config = (tmp_path / "config.json").read_bytes()
    only_config = "local:" + hashlib.sha256(config).hexdigest()[:12]
    assert resolve_dynamic_model(f"clip:{tmp_path}").revision == only_config
    assert resolve_dynamic_model(f"siglip:{tmp_path}").revision == only_config
    assert parse_reranker(f"cross-encoder:{tmp_path}").revision == only_config
    with_index = "local:" + hashlib.sha256(config + b"{}").hexdigest()[:12]
    assert resolve_dynamic_model(f"mm-embed:{tmp_path}").revision == with_index
    assert resolve_dynamic_model(f"st:{tmp_path}").revision == only_config     # no weights, no st config here
    (tmp_path / "config_sentence_transformers.json").write_text('{"prompts": {}}')
    st_config = "local:" + hashlib.sha256(config + b'{"prompts": {}}').hexdigest()[:12]
    assert resolve_dynamic_model(f"st:{tmp_path}").revision == st_config
    assert resolve_dynamic_model("clip:openai/clip-vit-base-patch32").revision == "hub"


def test_hub_miss_error_names_only_hub_ids(tmp_path):
    meta = replace(MM_EMBED, name="m")
    err = hub_miss_error(meta, {"path": "nvidia/MM-Embed", "processor": str(tmp_path / "proc"),
                                "tokenizer": "./tok/x"}, OSError("not in cached files"))
    assert "(nvidia/MM-Embed; not in cached files)" in str(err)          # the local paths are not hub ids
    assert "`hf download nvidia/MM-Embed`" in str(err)


@pytest.mark.parametrize("spec", ["clip:", "siglip:  "])
def test_an_empty_spec_is_refused(spec):
    from mmbench.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        resolve_dynamic_model(spec)
