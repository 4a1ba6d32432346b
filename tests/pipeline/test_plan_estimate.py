"""`mmbench plan`'s library side (pipeline/estimate.py): the work of a run as its data has it, cached
chunks counted after a run, a missing image named, declared throughput turned into time."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from mmbench import api, catalog
from mmbench.config import RunConfig
from mmbench.errors import DataError
from mmbench.models.base import FusionEncoder, ModelMeta
from mmbench.pipeline.estimate import estimate
from mmbench.pipeline.plan import load_task_data

DIM = 8


class CountingEncoder(FusionEncoder):
    def __init__(self, meta):
        self.meta = meta

    def settings(self) -> dict:
        return {}

    def encode_texts(self, texts, *, role, batch_size):
        return np.array([[len(t) % 7 + 1.0, *range(DIM - 1)] for t in texts], np.float32)

    def encode_images(self, images, *, role, batch_size):
        return np.array([[float(sum(im.convert("RGB").resize((1, 1)).getpixel((0, 0)))), *range(DIM - 1)]
                         for im in images], np.float32)


def load_counting(meta, **options):
    return CountingEncoder(meta)


@pytest.fixture
def counting_model():
    meta = ModelMeta("test-plan-counting", f"{__name__}:load_counting", "1", ("text", "image"), DIM, "test",
                     fusion="score-sum", image_tokens=10, declared_items_per_s={"text": 100.0, "image": 20.0},
                     declared_on="a test")
    catalog.models().register(meta.name, meta, replace=True)
    return meta


def test_the_work_of_mbeir_mini_is_its_data():
    """Items per table and modality, tokens and bytes add up for the embedded suite."""
    cache = Path(os.environ["MMBENCH_TEST_CACHE"])
    config = RunConfig(suite="mbeir-mini", cache_dir=cache, output=cache / "plan-results")
    plan = estimate(config)
    assert plan.pool_mode == "local" and plan.embed_dim == 384
    pools = {}
    for spec in map(catalog.tasks().get, plan.tasks):
        data = load_task_data(spec, config)
        (queries,) = [t for t in plan.tables if t.name == f"{spec.name}: queries"]
        assert queries.items == len(data.queries) and queries.role == "query"
        assert sum(queries.by_modality.values()) == queries.items
        assert queries.images == sum(1 for p in data.queries.image_paths if p) == queries.images_checked
        pools[data.pool_key] = len(data.pool)
    candidates = [t for t in plan.tables if t.role == "candidate"]
    assert sorted(t.items for t in candidates) == sorted(pools.values())        # each distinct pool once
    assert plan.pool_rows == max(pools.values())
    assert plan.pool_bytes == {"float32": plan.pool_rows * 384 * 4, "float16": plan.pool_rows * 384 * 2,
                               "bfloat16": plan.pool_rows * 384 * 2}
    assert plan.cache_bytes == sum(t.items for t in plan.tables) * 384 * 4
    texts = sum(t.text_chars for t in plan.tables)
    assert texts > 0 and all(t.image_tokens is None for t in plan.tables)   # the baseline declares no image tokens


def test_pool_rows_shard_over_devices_and_image_tokens_follow_the_model(mbeir_root, counting_model, tmp_path):
    config = RunConfig(model=counting_model.name, suite=None, tasks=("mscoco_task0", "mscoco_task3"), data_root=mbeir_root,
                       cache_dir=tmp_path / "cache", output=tmp_path / "out", devices=("cuda:0", "cuda:1", "cuda:2"))
    plan = estimate(config, ranks=2)
    assert plan.pool_rows == 6 and plan.devices == 3 and plan.ranks == 2
    # 4 of the 5 images are distinct files: every image file of the small tables is checked
    pool0 = next(t for t in plan.tables if t.name.startswith("mscoco_task0") and t.role == "candidate")
    assert pool0.image_tokens == 6 * 10 and pool0.images_checked == 6
    q = plan.query_rows
    assert plan.gpu_bytes_per_device == 2 * DIM * 4 + q * DIM * 4 + 12 * q * plan.top_k   # ceil(6/3) rows each
    # without --devices, each of the ranks searches a share of the pool on its own device
    ranked = estimate(dataclasses.replace(config, devices=()), ranks=4)
    assert ranked.devices == 4 and ranked.gpu_bytes_per_device == 2 * DIM * 4 + q * DIM * 4 + 12 * q * plan.top_k
    assert estimate(dataclasses.replace(config, devices=()), ranks=1).devices == 1


def test_cached_chunks_are_counted_after_a_run_and_time_follows_the_declared_rate(mbeir_root, counting_model, tmp_path):
    config = RunConfig(model=counting_model.name, suite=None, tasks=("mscoco_task0", "mscoco_task3"), data_root=mbeir_root,
                       cache_dir=tmp_path / "cache", output=tmp_path / "out", chunk_size=4)
    before = estimate(config)
    assert all(t.chunks_cached == 0 for t in before.tables) and before.cache_bytes_present == 0
    chunks = {t.name: t.chunks for t in before.tables}
    assert chunks["mscoco_task0: candidates"] == 2          # 6 items in chunks of 4
    left = before.items_to_encode
    assert sum(left.values()) == sum(t.items for t in before.tables)
    assert before.throughput.source.startswith("declared") or before.throughput.source.startswith("measured")
    if before.throughput.source.startswith("declared"):
        assert before.encode_seconds == pytest.approx(left.get("text", 0) / 100 + left.get("image", 0) / 20)
    api.run(config)
    after = estimate(config)
    assert [t.chunks_cached for t in after.tables] == [t.chunks for t in after.tables]
    assert after.cache_bytes_present == after.cache_bytes and after.items_to_encode == {}
    assert after.encode_seconds == 0
    # a partly cached table: one chunk file removed is one chunk to encode again
    (Path(after.tables[0].cache_dir) / "chunk_000000.npy").unlink()
    partial = estimate(config)
    assert partial.tables[0].chunks_cached == after.tables[0].chunks - 1


def test_a_missing_image_is_named(mbeir_root, counting_model, tmp_path):
    image = mbeir_root / "mbeir_images/mscoco_images/val2014/COCO_val2014_000000000003.jpg"
    image.unlink()
    config = RunConfig(model=counting_model.name, suite=None, tasks=("mscoco_task0",), data_root=mbeir_root,
                       cache_dir=tmp_path / "cache", output=tmp_path / "out")
    with pytest.raises(DataError, match="image file not found") as err:
        estimate(config)
    assert str(image) in str(err.value)


def test_no_throughput_known_leaves_the_time_unknown(mbeir_root, counting_model, tmp_path):
    meta = dataclasses.replace(counting_model, name="test-plan-no-rate", declared_items_per_s={})
    catalog.models().register(meta.name, meta, replace=True)
    config = RunConfig(model=meta.name, suite=None, tasks=("mscoco_task0",), data_root=mbeir_root,
                       cache_dir=tmp_path / "cache", output=tmp_path / "out")
    plan = estimate(config)
    assert plan.encode_seconds is None and plan.throughput.source.startswith("none")
    assert any("time not estimated" in n for n in plan.notes)
