"""The M-BEIR loader on a fixture with the format's quirks, its parsers, and every bad-input case."""

import gc
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbench.catalog import tasks
from mmbench.data.families.mbeir import (
    choose_instructions,
    load_instructions,
    load_pool,
    load_qrels,
    load_queries,
    load_task,
)
from mmbench.data.types import ImageRef, Item, ItemTable, format_string
from mmbench.errors import DataError


def load(name: str, root: Path, **kw):
    return load_task(tasks().get(name), root, **kw)


def test_text_to_image_task_loads_with_quirks(mbeir_root):
    data = load("mscoco_task0", mbeir_root)
    assert data.queries.ids == ["9:1", "9:2", "9:3", "9:4", "9:5"]
    assert data.pool.ids[-1] == "9:6"                       # duplicate content, distinct did
    assert data.pool.image_paths[0] == data.pool.image_paths[5]
    assert data.qrels["9:1"] == {"9:1": 1, "9:6": 1}         # 5-column qrels, both positives kept
    item = data.queries.item(0)
    assert item.raw_text == "a red picture" and item.text == "A red picture."
    assert item.instruction == "Find me an everyday image that matches the given caption."
    assert item.prompted_text() == "Find me an everyday image that matches the given caption. a red picture."
    assert set(data.fingerprints) == {"queries", "pool", "qrels", "instructions"}
    assert data.notes == []


def test_candidate_text_is_normalised_as_uniir(mbeir_root):
    data = load("mscoco_task3", mbeir_root)
    assert data.pool.texts == ["A red square on a dark background.", "A green picture.", "A blue photo.",
                               "A yellow image!", "A white image?"]
    q = data.queries.item(0)
    assert q.text is None and q.image is not None and q.image.path.is_file()
    # image-only query: the text UniIR feeds the model is the instruction alone
    assert q.prompted_text() == "Find an image caption describing the following everyday image."


def test_cross_dataset_positive_is_kept_and_counted(mbeir_root):
    data = load("oven_task6", mbeir_root)
    assert data.qrels["5:1"] == {"5:1": 1, "6:17": 1}
    assert len(data.notes) == 1 and "another dataset" in data.notes[0]
    item = data.queries.item(0)
    assert item.modality == "image,text" and item.image is not None and item.text == "What colour is this?"
    assert json.loads(json.loads(Path(mbeir_root / "query/test/mbeir_oven_task6_test.jsonl").read_text())["query_src_content"])["entity_id"] == "Q3142"


def test_instruction_policies(mbeir_root):
    first = load("mscoco_task0", mbeir_root, instructions="first")
    none = load("mscoco_task0", mbeir_root, instructions="none")
    r1 = load("mscoco_task0", mbeir_root, instructions="random", seed=7)
    r2 = load("mscoco_task0", mbeir_root, instructions="random", seed=7)
    assert none.queries.instructions == [None] * 5 and "instructions" not in none.fingerprints
    assert len(set(first.queries.instructions)) == 1
    assert r1.queries.instructions == r2.queries.instructions
    prompts = load_instructions(mbeir_root / "instructions/query_instructions.tsv")[("9", "text", "image")]
    assert set(r1.queries.instructions) <= set(prompts) and len(prompts) == 4
    draws = {tuple(choose_instructions(prompts, 40, "random", s, "mscoco_task0")) for s in range(5)}
    assert len(draws) == 5                                   # the seed matters


def test_missing_root_and_files_name_the_path(mbeir_root, tmp_path):
    with pytest.raises(DataError, match="data root does not exist"):
        load("mscoco_task0", tmp_path / "nowhere")
    (mbeir_root / "cand_pool/local/mbeir_mscoco_task0_test_cand_pool.jsonl").unlink()
    with pytest.raises(DataError) as err:
        load("mscoco_task0", mbeir_root)
    assert "cand_pool/local/mbeir_mscoco_task0_test_cand_pool.jsonl" in str(err.value)
    assert "mscoco_task0" in str(err.value)


def _rewrite_line(path: Path, lineno: int, fn) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = fn(lines[lineno - 1])
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("edit, field", [
    (lambda d: {k: v for k, v in d.items() if k != "query_txt"}, "query_txt"),
    (lambda d: {**d, "query_modality": "video"}, "query_modality"),
    (lambda d: {**d, "pos_cand_list": "9:2"}, "pos_cand_list"),
    (lambda d: {**d, "qid": 12}, "qid"),
    (lambda d: {**d, "query_src_content": "{not json"}, "query_src_content"),
    (lambda d: {**d, "query_txt": None}, "query_txt"),          # text query without text
])
def test_malformed_query_record_names_file_line_field(mbeir_root, edit, field):
    path = mbeir_root / "query/test/mbeir_mscoco_task0_test.jsonl"
    _rewrite_line(path, 3, lambda s: json.dumps(edit(json.loads(s))))
    with pytest.raises(DataError) as err:
        load("mscoco_task0", mbeir_root)
    assert f"mbeir_mscoco_task0_test.jsonl:3 (field '{field}')" in str(err.value)


def test_invalid_json_and_duplicate_ids(mbeir_root):
    path = mbeir_root / "cand_pool/local/mbeir_mscoco_task3_test_cand_pool.jsonl"
    _rewrite_line(path, 2, lambda s: s[:-3])
    with pytest.raises(DataError, match=r"cand_pool.jsonl:2: invalid JSON"):
        load_pool(path, mbeir_root)
    _rewrite_line(path, 2, lambda s: json.dumps({"txt": "x", "img_path": None, "modality": "text", "did": "9:7", "src_content": None}))
    with pytest.raises(DataError, match=r":2 \(field 'did'\): duplicate did '9:7' \(first on line 1\)"):
        load_pool(path, mbeir_root)


def test_image_path_escaping_root_is_refused(mbeir_root):
    path = mbeir_root / "query/test/mbeir_mscoco_task3_test.jsonl"
    for bad in ("../../etc/passwd", "/etc/passwd"):
        _rewrite_line(path, 1, lambda s: json.dumps({**json.loads(s), "query_img_path": bad}))
        with pytest.raises(DataError, match="escapes the data root"):
            load_queries(path, mbeir_root)


def test_unreadable_image_names_its_path(mbeir_root):
    data = load("mscoco_task3", mbeir_root)
    item = data.queries.item(1)
    item.image.path.write_bytes(b"not a jpeg")
    with pytest.raises(DataError) as err:
        item.image.load()
    assert str(item.image.path) in str(err.value) and "cannot decode image" in str(err.value)


@pytest.mark.parametrize("line, message", [
    ("9:1 0 9:1", "expected 5 space-separated columns"),
    ("9:1 0 9:1 yes 0", "relevance must be an integer"),
    ("9:1 0 9:1 1 zero", "task_id must be an integer"),
])
def test_malformed_qrels(mbeir_root, line, message):
    path = mbeir_root / "qrels/test/mbeir_mscoco_task0_test_qrels.txt"
    _rewrite_line(path, 2, lambda s: line)
    with pytest.raises(DataError, match=rf"qrels.txt:2.*{message}"):
        load("mscoco_task0", mbeir_root)


def test_qrels_with_unknown_ids(mbeir_root):
    path = mbeir_root / "qrels/test/mbeir_mscoco_task0_test_qrels.txt"
    with open(path, "a") as f:
        f.write("9:99 0 9:1 1 0\n")
    with pytest.raises(DataError, match=r"qrels.txt:7: qrels name query '9:99'"):
        load("mscoco_task0", mbeir_root)
    _rewrite_line(path, 7, lambda s: "9:2 0 9:12345 1 0")   # same-dataset candidate missing from the pool
    with pytest.raises(DataError, match=r"candidate '9:12345', which is not in"):
        load("mscoco_task0", mbeir_root)


def test_missing_instruction_row(mbeir_root):
    path = mbeir_root / "instructions/query_instructions.tsv"
    path.write_text("\n".join(path.read_text().splitlines()[:2]))
    with pytest.raises(DataError, match="no instruction row for dataset_id=9, query_modality=image, cand_modality=text"):
        load("mscoco_task3", mbeir_root)
    assert load("mscoco_task3", mbeir_root, instructions="none").queries.instructions[0] is None


# ---- property tests of the parsers ---------------------------------------------------------

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), max_size=40)


@given(texts)
def test_format_string_properties(s):
    out = format_string(s)
    assert format_string(out) == out                      # idempotent
    if out:
        assert out[-1] in ".?!" and out[0] == out[0].upper()
        assert "\r" not in out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["text", "image", "image,text"]), texts, st.booleans()), min_size=1, max_size=12))
def test_pool_roundtrip(tmp_path_factory, rows):
    root = tmp_path_factory.mktemp("pool")
    records = []
    for i, (modality, txt, src) in enumerate(rows, 1):
        txt = txt if txt.strip().strip('"').strip() else "x"
        records.append({"txt": txt if "text" in modality else None,
                        "img_path": f"mbeir_images/x/{i}.jpg" if "image" in modality else None,
                        "modality": modality, "did": f"3:{i}",
                        "src_content": json.dumps({"i": i}) if src else None})
    path = root / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    table = load_pool(path, root)
    assert table.ids == [r["did"] for r in records]
    assert table.modalities == [r["modality"] for r in records]
    assert table.texts == [format_string(r["txt"]) if r["txt"] else None for r in records]
    assert table.image_paths == [r["img_path"] for r in records]


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.from_regex(r"[0-9]:[0-9]{1,6}", fullmatch=True),
                       st.dictionaries(st.from_regex(r"[0-9]:[0-9]{1,7}", fullmatch=True), st.integers(0, 3), min_size=1, max_size=4),
                       min_size=1, max_size=10))
def test_qrels_roundtrip(tmp_path_factory, qrels):
    path = tmp_path_factory.mktemp("qrels") / "q.txt"
    path.write_text("".join(f"{q} 0 {d} {r} 7\n" for q, docs in qrels.items() for d, r in docs.items()))
    parsed, _ = load_qrels(path)
    assert parsed == qrels


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["text", "image", "image,text"]), st.text(max_size=5),
                               st.booleans(), st.booleans()), max_size=12),
       start=st.integers(0, 14), stop=st.one_of(st.none(), st.integers(0, 14)), with_extra=st.booleans())
def test_item_table_batches_equal_items_one_by_one(rows, start, stop, with_extra) -> None:
    """``ItemTable.items`` (the batched, positional fast path) builds exactly the items of ``item(i)``."""
    n = len(rows)
    table = ItemTable(ids=[f"id{i}" for i in range(n)], modalities=[r[0] for r in rows],
                      texts=[r[1] if r[2] else None for r in rows],
                      image_paths=[f"img/{i}.png" if r[3] else None for i, r in enumerate(rows)],
                      root=Path("/data"), raw_texts=[f"raw{i}" for i in range(n)] if with_extra else None,
                      instructions=[f"ins{i}" for i in range(n)] if with_extra else None)
    end = n if stop is None else min(stop, n)
    collector_was = gc.isenabled()
    got = table.items(start, stop)
    assert gc.isenabled() == collector_was            # paused while building, restored after
    assert got == [table.item(i) for i in range(start, end)]
    for i, it in zip(range(start, end), got):
        assert isinstance(it, Item)
        assert (it.id, it.modality, it.text) == (table.ids[i], table.modalities[i], table.texts[i])
        assert it.image == (ImageRef(Path("/data") / table.image_paths[i]) if table.image_paths[i] else None)
        assert it.instruction == (f"ins{i}" if with_extra else None)
        assert it.raw_text == (f"raw{i}" if with_extra else None)
