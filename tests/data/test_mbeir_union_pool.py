"""M-BEIR's global pool file (cand_pool/global/mbeir_union_test_cand_pool.jsonl): the columnar reader
gives exactly the line reader's table, bad lines name file and line, and a --tasks subset of a global
suite reads no other task's queries (issue #26)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmbench import api, catalog
from mmbench.data.families.mbeir import UNION_POOL_FILE, load_pool, load_union_pool
from mmbench.errors import DataError
from mmbench.models.base import FusionEncoder, ModelMeta

# Text that JSON and UTF-8 find awkward: quotes, backslashes, control characters (escaped by
# json.dumps), astral and combining characters, whitespace of other scripts, quotes at the ends.
odd_text = st.text(st.sampled_from(list('ab "\\\'\t\r\n\x00é漢😀\u0301\u3000\u2028ß.?!x')), max_size=12)


@st.composite
def pool_records(draw):
    n = draw(st.integers(1, 30))
    records = []
    for i in range(n):
        modality = draw(st.sampled_from(["text", "image", "image,text", "text,image"]))
        txt = draw(odd_text) if "text" in modality else draw(st.none() | odd_text)
        if modality == "text" and not txt:
            txt = draw(odd_text.filter(bool))
        img = (f"mbeir_images/x/{draw(st.sampled_from(['a', 'é', 'b c']))}{i}.jpg"
               if "image" in modality else draw(st.none() | st.just("mbeir_images/unused.jpg")))
        record = {"txt": txt, "img_path": img, "modality": modality,
                  "did": f"{draw(st.integers(0, 2))}:{i + 1}"}
        source = draw(st.sampled_from(["missing", "null", "json"]))
        if source != "missing":
            record["src_content"] = None if source == "null" else json.dumps({"t": draw(odd_text)})
        if draw(st.booleans()):            # key order as M-BEIR writes it, or another
            record = dict(reversed(list(record.items())))
        records.append(record)
    return records


def write(path: Path, records, *, ascii_only: bool = True, crlf: bool = False, bom: bool = False,
          blank: bool = False) -> bytes:
    lines = [json.dumps(r, ensure_ascii=ascii_only) for r in records]
    if blank:
        lines.insert(len(lines) // 2, "   ")
    data = ("\r\n" if crlf else "\n").join(lines) + "\n"
    raw = (b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8", "surrogatepass")
    path.write_bytes(raw)
    return raw


def same_table(a, b) -> None:
    assert a.ids == b.ids
    assert a.modalities == b.modalities
    assert a.texts == b.texts
    assert a.image_paths == b.image_paths
    assert a.root == b.root


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=pool_records(), ascii_only=st.booleans(), crlf=st.booleans(), bom=st.booleans(),
       blank=st.booleans(), block=st.integers(64, 2048))
def test_union_reader_equals_the_line_reader(tmp_path, records, ascii_only, crlf, bom, blank, block):
    path = tmp_path / "union.jsonl"
    raw = write(path, records, ascii_only=ascii_only, crlf=crlf, bom=bom, blank=blank)
    pool = load_union_pool(path, tmp_path, block_bytes=block)
    same_table(pool.table, load_pool(path, tmp_path))
    assert pool.key == hashlib.sha256(raw).hexdigest()
    parts = pool.part_list()
    assert [p.start for p in parts] == [0, *(p.stop for p in parts[:-1])] and parts[-1].stop == len(records)
    for p in parts:                       # a part is a run of one dataset id and one modality
        labels = {(d.split(":")[0], m) for d, m in zip(pool.table.ids[p.start:p.stop], pool.table.modalities[p.start:p.stop])}
        assert len(labels) == 1
    if not (crlf or bom or blank):        # the columnar path: a part's key is the sha256 of its lines
        lines = raw.splitlines(keepends=True)
        assert [p.key for p in parts] == [hashlib.sha256(b"".join(lines[p.start:p.stop])).hexdigest() for p in parts]


GOOD = {"txt": "A caption.", "img_path": None, "modality": "text", "did": "1:1", "src_content": None}


@pytest.mark.parametrize("line, message", [
    ('{"txt": "x", "img_path": null, "modality": "text", "did": "1:99"', "invalid JSON"),
    ('{"img_path": null, "modality": "text", "did": "1:99"}', r"field 'txt'\): missing field"),
    ('{"txt": "x", "img_path": null, "modality": "audio", "did": "1:99"}', "expected one of"),
    ('{"txt": "x", "img_path": null, "modality": "text", "did": "1:1"}', "duplicate did"),
    ('{"txt": "x", "img_path": null, "modality": "text", "did": 9}', "expected str"),
    ('{"txt": null, "img_path": "../../etc/passwd", "modality": "image", "did": "1:99"}', "escapes the data root"),
    ('{"txt": null, "img_path": null, "modality": "image", "did": "1:99"}', "needs an image path"),
    ('{"txt": "x", "img_path": null, "modality": "text", "did": "1 99"}', "without whitespace"),
    ('{"txt": "x", "img_path": null, "modality": "text", "did": "1:99", "src_content": "{oops"}', "JSON-encoded"),
    ('{"txt": "x", "img_path": null, "modality": "text", "did": "1:99"} {"txt": "y"}', "invalid JSON"),
])
def test_a_bad_line_is_an_error_naming_file_and_line(tmp_path, line, message):
    path = tmp_path / "union.jsonl"
    good = [json.dumps({**GOOD, "did": f"1:{i + 1}"}) for i in range(40)]
    path.write_text("\n".join(good[:20] + [line] + good[20:]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        load_union_pool(path, tmp_path, block_bytes=256)
    assert f"{path}:21" in str(err.value)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "union.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"txt": "\xff", "img_path": null, "modality": "text", '
                     b'"did": "1:2"}\n')
    with pytest.raises(DataError, match="invalid UTF-8") as err:
        load_union_pool(path, tmp_path)
    assert f"{path}:2" in str(err.value)


# --- a --tasks subset of a global suite --------------------------------------------------------------

DIM = 16


class TinyEncoder(FusionEncoder):
    """Deterministic, weight-free: texts by character codes, images by a 2x2 thumbnail."""

    def __init__(self, meta):
        self.meta = meta

    def settings(self) -> dict:
        return {"kind": "test"}

    def encode_texts(self, texts, *, role, batch_size):
        out = np.zeros((len(texts), DIM), np.float32)
        for row, text in enumerate(texts):
            for i, ch in enumerate(text):
                out[row, (ord(ch) + i) % DIM] += 1.0
        return out + 0.01

    def encode_images(self, images, *, role, batch_size):
        thumbs = np.stack([np.asarray(im.convert("RGB").resize((2, 2)), np.float32).ravel() for im in images])
        return np.concatenate([thumbs, thumbs[:, :DIM - 12]], axis=1) / 255.0 + 0.01


def load_tiny(meta, **options):
    return TinyEncoder(meta)


@pytest.fixture
def tiny_model():
    name = "test-union-tiny"
    catalog.models().register(name, ModelMeta(name, f"{__name__}:load_tiny", "1", ("text", "image"), DIM,
                                              "test encoder", fusion="score-sum"), replace=True)
    return name


SUITE = "test-union-global"
TASKS = ("mscoco_task0", "mscoco_task3", "oven_task6")


@pytest.fixture
def global_suite(mbeir_root):
    """The fixture's three tasks as a global suite, and its union file: the local pools' lines sorted
    by (dataset id, n), as M-BEIR's is."""
    from mmbench.data.specs import SuiteSpec

    lines = []
    for name in TASKS:
        lines += (mbeir_root / catalog.tasks().get(name).files.pool).read_text(encoding="utf-8").splitlines(True)
    lines.sort(key=lambda ln: tuple(int(x) for x in json.loads(ln)["did"].split(":")))
    (mbeir_root / UNION_POOL_FILE).parent.mkdir(parents=True)
    (mbeir_root / UNION_POOL_FILE).write_text("".join(lines), encoding="utf-8")
    catalog.suites().register(SUITE, SuiteSpec(SUITE, TASKS, pool="global", pool_file=UNION_POOL_FILE), replace=True)
    return mbeir_root


def _run(root: Path, out: Path, model: str, tasks: tuple[str, ...], cache: Path):
    config = api.RunConfig(model=model, suite=SUITE, tasks=tasks, output=out, data_root=root, cache_dir=cache)
    (outcome,) = [api.run(config)]
    return outcome


def _run_file(task) -> bytes:
    (path,) = task.path.parent.glob(f"{task.task}.trec*")
    return path.read_bytes()


def test_a_task_subset_of_a_global_suite_needs_only_its_own_files(tmp_path, global_suite, tiny_model):
    root, cache = global_suite, tmp_path / "cache"
    full = _run(root, tmp_path / "full", tiny_model, TASKS, cache)
    first = next(t for t in full.tasks if t.task == "mscoco_task0")
    assert first.n_candidates == 13
    pools = {n: (root / catalog.tasks().get(n).files.pool).read_bytes() for n in TASKS}
    for name in TASKS:                    # every local pool file; the other tasks' queries and qrels
        files = catalog.tasks().get(name).files
        (root / files.pool).unlink()
        if name != "mscoco_task0":
            (root / files.queries).unlink()
            (root / files.qrels).unlink()
    sub = _run(root, tmp_path / "sub", tiny_model, ("mscoco_task0",), cache)
    (task,) = sub.tasks
    assert not task.reused and task.n_candidates == 13 and task.metrics == first.metrics
    assert _run_file(task) == _run_file(first)
    # without the union file: the union of the local pools, whose files must then exist ...
    (root / UNION_POOL_FILE).unlink()
    with pytest.raises(DataError, match=r"cand_pool/local/.*: missing file needed by task"):
        _run(root, tmp_path / "sub2", tiny_model, ("mscoco_task0",), cache)
    for name, data in pools.items():      # ... and no other task's query file is read
        (root / catalog.tasks().get(name).files.pool).write_bytes(data)
    again = _run(root, tmp_path / "sub3", tiny_model, ("mscoco_task0",), cache)
    assert _run_file(again.tasks[0]) == _run_file(first)


def test_the_mini_global_suite_reads_its_union_file_whose_parts_are_the_local_pools():
    """mbeir-mini-global's pool is the build's union file, and its two parts are byte for byte the two
    distinct local pool files: same cache entries, same embeddings, same results as the union of the
    local pools (the golden global test relies on it)."""
    import os

    from mmbench.config import RunConfig
    from mmbench.data.families.mbeir import file_fingerprint
    from mmbench.pipeline.plan import make_plan

    cache = Path(os.environ["MMBENCH_TEST_CACHE"])
    plan = make_plan(RunConfig(suite="mbeir-mini-global", tasks=("tuxpaint_task1",), cache_dir=cache,
                               output=cache / "union-test-results"))
    plan.load()
    pool = plan.global_pool
    assert pool.source == UNION_POOL_FILE and len(pool.table) == 578
    root = Path(pool.table.root)
    local = {file_fingerprint(root / catalog.tasks().get(n).files.pool) for n in plan.suite.tasks}
    assert {p.key for p in pool.part_list()} == local and len(pool.part_list()) == 2
    assert list(plan.loaded) == ["tuxpaint_task1"]        # no other task's data loaded
