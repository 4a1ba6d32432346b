"""The cache key's digest and folder naming are the cache format: pinned to the values the cache has
always used, so that caches written by earlier mmbench versions keep being found."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mmbench.embeddings import EmbeddingKey, EmbeddingStore, ids_digest
from mmbench.embeddings.key import CACHE_FORMAT

KEY = EmbeddingKey("minilm", "sentence-transformers/all-MiniLM-L6-v2@abc", "candidate", "n/a", "deadbeef")


def test_digests_of_known_keys_never_change():
    assert KEY.digest() == "4157adc2875811e35edde4f8"
    assert replace(KEY, rows="unit").digest() == "9037b68573db35a62eb170d8"
    assert replace(KEY, dtype="float16", role="query", instruction_policy="random:2023").digest() == "22a08890754ba136868dfc34"


def test_raw_rows_are_not_part_of_the_stored_key():
    assert "rows" not in KEY.fields() and replace(KEY, rows="unit").fields()["rows"] == "unit"


@given(model=st.text(max_size=12), revision=st.text(max_size=12), fingerprint=st.text(max_size=12),
       rows=st.sampled_from(["raw", "unit"]))
def test_digest_is_the_sha256_of_format_and_fields(model, revision, fingerprint, rows):
    key = EmbeddingKey(model, revision, "query", "first", fingerprint, rows=rows)
    blob = json.dumps({"format": CACHE_FORMAT, **key.fields()}, sort_keys=True)
    assert key.digest() == hashlib.sha256(blob.encode()).hexdigest()[:24]


def test_store_folder_and_manifest(tmp_path):
    ids = ["a", "b", "c"]
    store = EmbeddingStore(tmp_path, replace(KEY, model="clip:openai/clip-vit-base-patch32"), 3, ids_digest(ids), 2)
    assert store.dir == Path(tmp_path) / "embeddings" / "clip_openai_clip-vit-base-patch32" / store.key.digest()
    assert store.n_chunks == 2 and [store.chunk_len(i) for i in range(2)] == [2, 1]
    assert store.chunk_path(1).name == "chunk_000001.npy"
    store.open(overwrite=False)
    assert json.loads((store.dir / "manifest.json").read_text()) == {
        "format": 1, "key": store.key.fields(), "n_items": 3,
        "ids_sha256": ids_digest(ids),
        "chunk_size": 2}
    assert ids_digest(["a", "b"]) == "8fb20ef63ced4145fc2e983ffe597d1dcff39154c3bf21f0fa9dde6a0c50fdc9"
    assert ids_digest([]) == hashlib.sha256(b"").hexdigest()
