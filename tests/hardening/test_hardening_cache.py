"""The embedding cache always matches its inputs: images (cheap fingerprint, --verify-data), batching
in the key, one writer per entry, stale temporary files removed (issue #25)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbench.config import RunConfig
from mmbench.data.types import ItemTable, TaskData
from mmbench.embeddings import EmbeddingKey, EmbeddingStore, embed_table, ids_digest
from mmbench.embeddings.images import images_fingerprint, images_sha256
from mmbench.embeddings.key import batching
from mmbench.models.base import ModelMeta
from mmbench.pipeline.pools import image_fingerprints, pool_key, query_key
from mmbench.util.locks import FolderLock


class BytesEncoder:
    """Embeds an item by the sha256 of its image file's bytes (so a changed image changes its row),
    and counts what it encodes."""

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, items, role, batch_size):
        self.encoded += len(items)
        rows = []
        for it in items:
            digest = hashlib.sha256(Path(it.image.path).read_bytes() if it.image else it.text.encode()).digest()
            rows.append(np.frombuffer(digest, np.uint8)[:8].astype(np.float32) + 1)
        return np.stack(rows)


def image_table(root: Path, n: int = 5) -> ItemTable:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"img{i}.bin").write_bytes(bytes([i]) * 64)
    return ItemTable([f"c{i}" for i in range(n)], ["image"] * n, [None] * n, [f"img{i}.bin" for i in range(n)], root)


KEY = EmbeddingKey("bytes-model", "r1", "candidate", "n/a", "pool-file-digest")


def embed(table, cache, verify=False, chunk_size=2, messages=None):
    enc = BytesEncoder()
    key = replace(KEY, data_fingerprint=f"{KEY.data_fingerprint}:{images_fingerprint(table)}")
    emb, stats = embed_table(table, key, lambda: enc, cache_dir=cache, batch_size=2, chunk_size=chunk_size,
                             images_sha256=images_sha256(table) if verify else None,
                             message=(messages.append if messages is not None else None))
    return emb, stats, enc


def test_replaced_image_changes_the_fingerprint_and_is_encoded_again(tmp_path):
    table = image_table(tmp_path / "img")
    before = images_fingerprint(table)
    emb1, stats1, _ = embed(table, tmp_path / "cache")
    assert stats1.encoded == 5
    _, stats2, enc2 = embed(table, tmp_path / "cache")
    assert enc2.encoded == 0 and stats2.cached == 5                       # unchanged images: reused
    (tmp_path / "img" / "img3.bin").write_bytes(b"another picture, same name")
    assert images_fingerprint(table) != before
    emb3, stats3, enc3 = embed(table, tmp_path / "cache")
    assert enc3.encoded == 5                                               # another key: encoded again
    assert not np.array_equal(emb1[3], emb3[3]) and np.array_equal(emb1[:3], emb3[:3])


def test_a_text_table_has_no_image_fingerprint_and_keeps_its_key(tmp_path):
    text = ItemTable(["a", "b"], ["text"] * 2, ["x", "y"], [None, None], tmp_path)
    assert images_fingerprint(text) is None and images_sha256(text) is None
    data = TaskData("t", text, text, {"a": {"a": 1}}, {"queries": "qf", "pool": "pf"}, "pf")
    meta = ModelMeta("m", "x:y", "r", ("text",), 4, "a text model")
    assert image_fingerprints(data, verify=True) == {}
    # the default configuration's keys are the keys written before images and batching were in them
    key = pool_key(meta, RunConfig(), data)
    assert key == EmbeddingKey("m", "r", "candidate", "n/a", "pf", "float32")
    q = hashlib.sha256(b"qf")
    q.update(b"null")
    assert query_key(meta, RunConfig(), data) == EmbeddingKey("m", "r", "query", "first", q.hexdigest(), "float32")


def test_same_size_and_mtime_replacement_needs_verify_data(tmp_path):
    """What the cheap fingerprint cannot see (cp -p: same size, same mtime), --verify-data does."""
    table = image_table(tmp_path / "img")
    _, stats, _ = embed(table, tmp_path / "cache", verify=True)
    assert stats.encoded == 5
    _, _, enc = embed(table, tmp_path / "cache", verify=True)
    assert enc.encoded == 0                                                # verified: reused
    path = tmp_path / "img" / "img1.bin"
    st_ = path.stat()
    path.write_bytes(bytes([9]) * 64)                                      # same size...
    os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns))                  # ...and the old mtime
    _, _, enc = embed(table, tmp_path / "cache")
    assert enc.encoded == 0                                                # the documented blind spot
    messages: list[str] = []
    emb, _, enc = embed(table, tmp_path / "cache", verify=True, messages=messages)
    assert enc.encoded == 5 and any("--verify-data" in m for m in messages)
    assert np.array_equal(emb[1], BytesEncoder().encode(table.items(1, 2), "candidate", 1)[0])


def test_a_cache_entry_encoded_without_verify_data_is_encoded_again_under_it(tmp_path):
    table = image_table(tmp_path / "img")
    embed(table, tmp_path / "cache")
    _, _, enc = embed(table, tmp_path / "cache", verify=True)
    assert enc.encoded == 5                                 # no stored content digest: not verified
    _, _, enc = embed(table, tmp_path / "cache", verify=True)
    assert enc.encoded == 0


@given(b=st.integers(1, 64), c=st.integers(1, 8192))
@settings(max_examples=50, deadline=None)
def test_batching_is_in_the_key_only_when_not_the_default(b, c):
    cfg = RunConfig(batch_size=b, chunk_size=c)
    default = (b, c) == (32, 4096)
    assert (cfg.batching() == "") == default
    assert (cfg.config_hash() == RunConfig().config_hash()) == default
    key = replace(KEY, batching=batching(b, c))
    assert (key.digest() == KEY.digest()) == default
    assert ("batching" in key.fields()) != default


def test_mixed_chunk_sizes_keep_their_own_entries(tmp_path):
    """Runs with other chunk sizes never share, remove or contradict an entry: each entry's chunk files
    match its manifest, and going back to a chunk size reuses every chunk."""
    table = image_table(tmp_path / "img", n=7)
    keys = {c: replace(KEY, batching=batching(2, c)) for c in (2, 3)}
    for c in (2, 3, 2):
        enc = BytesEncoder()
        embed_table(table, keys[c], lambda: enc, cache_dir=tmp_path / "cache", batch_size=2, chunk_size=c)
    assert enc.encoded == 0
    for c, key in keys.items():
        store = EmbeddingStore(tmp_path / "cache", key, 7, ids_digest(table.ids), c)
        assert store.missing_chunks() == [] and len(list(store.dir.glob("chunk_*.npy"))) == store.n_chunks


def test_stale_temporary_files_of_a_killed_writer_are_removed_under_the_lock(tmp_path):
    table = image_table(tmp_path / "img")
    embed(table, tmp_path / "cache")
    (entry,) = [p.parent for p in (tmp_path / "cache").rglob("manifest.json")]
    stale = [entry / ".chunk_000001.npy.0123456789ab.tmp", entry / ".manifest.json.a1b2c3d4e5f6.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    keep = entry / "notes.tmp"                               # not an atomic write's name: kept
    keep.write_text("mine")
    _, stats, _ = embed(table, tmp_path / "cache")
    assert stats.cached == 5 and not any(p.exists() for p in stale) and keep.exists()


HOLD = textwrap.dedent("""
    import sys, time
    from mmbench.util.locks import FolderLock
    lock = FolderLock(sys.argv[1], "test", lock_file=sys.argv[2]).acquire()
    print("held", flush=True)
    sys.stdin.read()
    lock.release()
""")


def test_a_second_process_waits_for_the_entry_with_a_message(tmp_path):
    """Another process holds the entry's lock: embed_table says it waits, touches nothing, and goes on
    once the lock is released."""
    table = image_table(tmp_path / "img")
    embed(table, tmp_path / "cache")
    (entry,) = [p.parent for p in (tmp_path / "cache").rglob("manifest.json")]
    lock_file = entry.parent / f".{entry.name}.lock"
    assert lock_file.exists()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(entry), str(lock_file)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (entry / ".chunk_000000.npy.00112233aabb.tmp").write_bytes(b"the holder's write in flight")
        import threading

        messages: list[str] = []
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(out=embed(table, tmp_path / "cache", messages=messages)))
        t.start()
        deadline = time.time() + 30
        while not messages and time.time() < deadline:
            time.sleep(0.05)
        assert messages and messages[0].startswith("waiting for the embedding cache entry")
        assert t.is_alive() and (entry / ".chunk_000000.npy.00112233aabb.tmp").exists()   # the holder's file stays
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    t.join(timeout=30)
    assert result["out"][1].cached == 5
    assert not (entry / ".chunk_000000.npy.00112233aabb.tmp").exists()


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    a = FolderLock(tmp_path / "f", "x").acquire()
    b = FolderLock(tmp_path / "f", "x").acquire()           # would wait for itself with a second flock
    b.release()
    a.release()
    a.release()                                             # a second release does nothing
