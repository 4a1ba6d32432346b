"""mbeir-mini builder: determinism, exact M-BEIR formats, atomic replacement, ensure_mini, errors.

Tests on the real Tux Paint stamps skip when ``tuxpaint-stamps-default`` is not installed; the others
use a small synthetic stamps tree written by the test itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mmbench.data.builders import mini
from mmbench.data.builders.mini import (
    BUILDER_VERSION,
    DEFAULT_STAMPS_ROOT,
    build_mini,
    default_mini_root,
    ensure_mini,
    parse_caption_file,
)
from mmbench.data.types import format_string
from mmbench.errors import DataError, MmbenchError

QUERY_KEYS = [
    "qid", "query_txt", "query_img_path", "query_modality", "query_src_content",
    "pos_cand_list", "neg_cand_list", "task_id",
]
CAND_KEYS = ["txt", "img_path", "modality", "did", "src_content"]
TASKS = {0: ("text", "image"), 1: ("text", "text"), 3: ("image", "text"), 4: ("image", "image")}
N_SMALL = 24

needs_stamps = pytest.mark.skipif(
    not DEFAULT_STAMPS_ROOT.is_dir(),
    reason=f"{DEFAULT_STAMPS_ROOT} absent (apt-get install tuxpaint-stamps-default)",
)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_jsonl(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "", f"{path} must end with a newline"
    return [json.loads(line) for line in lines[:-1]]


def n_of(did: str) -> tuple[int, int]:
    ds, n = did.split(":")
    return int(ds), int(n)


def no_temp_siblings(out: Path) -> bool:
    return not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and not p.name.endswith(".lock")]


@pytest.fixture(scope="module")
def real_builds(tmp_path_factory):
    if not DEFAULT_STAMPS_ROOT.is_dir():
        pytest.skip(f"{DEFAULT_STAMPS_ROOT} absent (apt-get install tuxpaint-stamps-default)")
    base = tmp_path_factory.mktemp("mini")
    a, b = base / "a" / "mbeir-mini", base / "b" / "mbeir-mini"
    ma = build_mini(a, n_stamps=N_SMALL, workers=1)
    # The second build goes through the worker pool, so serial and parallel output are compared too.
    saved = mini._PARALLEL_MIN_IMAGES
    mini._PARALLEL_MIN_IMAGES = 0
    try:
        mb = build_mini(b, n_stamps=N_SMALL, workers=2)
    finally:
        mini._PARALLEL_MIN_IMAGES = saved
    return a, b, ma, mb


# --------------------------------------------------------------------------------------------------
# Real stamps


@needs_stamps
def test_two_builds_are_byte_identical(real_builds):
    a, b, ma, mb = real_builds
    ta, tb = tree_bytes(a), tree_bytes(b)
    assert sorted(ta) == sorted(tb)
    different = [k for k in ta if ta[k] != tb[k]]
    assert different == []
    assert ma == mb
    assert no_temp_siblings(a) and no_temp_siblings(b)


@needs_stamps
def test_layout_and_manifest(real_builds):
    root, _, manifest, _ = real_builds
    expected = {"MANIFEST.json", mini.GLOBAL_POOL_FILE, mini.INSTRUCTIONS_FILE}
    for t in TASKS:
        expected |= {
            f"query/test/mbeir_tuxpaint_task{t}_test.jsonl",
            f"cand_pool/local/mbeir_tuxpaint_task{t}_cand_pool.jsonl",
            f"qrels/test/mbeir_tuxpaint_task{t}_test_qrels.txt",
        }
    files = tree_bytes(root)
    non_images = {k for k in files if not k.startswith("mbeir_images/")}
    assert non_images == expected
    images = sorted(k for k in files if k.startswith("mbeir_images/tuxpaint_images/"))
    assert len(images) == 2 * N_SMALL
    assert sum("/transformed/" in k for k in images) == N_SMALL
    assert all(k.endswith(".jpg") for k in images)

    assert manifest == json.loads(files["MANIFEST.json"])
    assert manifest["builder_version"] == BUILDER_VERSION
    assert manifest["n_stamps"] == N_SMALL and manifest["n_selected"] == N_SMALL
    assert manifest["source"]["package"] == "tuxpaint-stamps-default"
    # Every file but the manifest is listed with its sha256 and size.
    assert set(manifest["files"]) == set(files) - {"MANIFEST.json"}
    for rel, info in manifest["files"].items():
        assert info["sha256"] == hashlib.sha256(files[rel]).hexdigest(), rel
        assert info["bytes"] == len(files[rel])
    for rel, n in manifest["counts"].items():
        lines = files[rel].decode().count("\n")
        assert n == (lines - 1 if rel.endswith(".tsv") else lines), rel


@needs_stamps
def test_record_formats(real_builds):
    root, _, manifest, _ = real_builds
    pools: dict[int, list[dict]] = {}
    for t, (qmod, cmod) in TASKS.items():
        queries = read_jsonl(root / mini.query_file(t))
        pool = pools[t] = read_jsonl(root / mini.pool_file(t))
        assert manifest["tasks"][f"task{t}"]["queries"] == len(queries) > 0
        assert manifest["tasks"][f"task{t}"]["candidates"] == len(pool) > 0
        # queries: exact key order, nulls present, ids "10:1".."10:N"
        assert [q["qid"] for q in queries] == [f"10:{n}" for n in range(1, len(queries) + 1)]
        dids = {c["did"] for c in pool}
        for q in queries:
            assert list(q) == QUERY_KEYS
            assert q["query_modality"] == qmod and q["task_id"] == t
            assert q["neg_cand_list"] == [] and q["pos_cand_list"]
            assert set(q["pos_cand_list"]) <= dids
            assert isinstance(q["query_src_content"], str) and "stamp" in json.loads(q["query_src_content"])
            if qmod == "text":
                assert q["query_img_path"] is None
                assert isinstance(q["query_txt"], str) and q["query_txt"] == q["query_txt"].strip() != ""
            else:
                assert q["query_txt"] is None
                assert q["query_img_path"].startswith("mbeir_images/tuxpaint_images/")
                assert (root / q["query_img_path"]).is_file()
        for c in pool:
            assert list(c) == CAND_KEYS
            assert c["modality"] == cmod
            assert isinstance(c["src_content"], str) and "stamp" in json.loads(c["src_content"])
            if cmod == "text":
                assert c["img_path"] is None and c["txt"] == format_string(c["txt"]) != ""
            else:
                assert c["txt"] is None and (root / c["img_path"]).is_file()
        assert len(dids) == len(pool)
        # qrels: "qid 0 did 1 task_id", one line per (query, positive)
        qids = {q["qid"] for q in queries}
        lines = (root / mini.qrels_file(t)).read_text().splitlines()
        assert len(lines) == sum(len(q["pos_cand_list"]) for q in queries)
        pos = {(q["qid"], d) for q in queries for d in q["pos_cand_list"]}
        for line in lines:
            cols = line.split(" ")
            assert len(cols) == 5 and cols[1] == "0" and cols[3] == "1" and cols[4] == str(t)
            assert cols[0] in qids and cols[2] in dids and (cols[0], cols[2]) in pos
        if t == 4:
            # the transformed copy's positive is the original of the same stamp
            by_did = {c["did"]: c for c in pool}
            for q in queries:
                orig = by_did[q["pos_cand_list"][0]]["img_path"]
                assert q["query_img_path"] == orig.replace("tuxpaint_images/", "tuxpaint_images/transformed/", 1)

    # Shared pools are byte-identical; image dids come first, caption dids continue after them.
    raw = {t: (root / mini.pool_file(t)).read_bytes() for t in TASKS}
    assert raw[0] == raw[4] and raw[1] == raw[3] and raw[0] != raw[3]
    assert [c["did"] for c in pools[0]] == [f"10:{n}" for n in range(1, N_SMALL + 1)]
    m = len(pools[0])
    assert [c["did"] for c in pools[3]] == [f"10:{n}" for n in range(m + 1, m + 1 + len(pools[3]))]
    union = read_jsonl(root / mini.GLOBAL_POOL_FILE)
    union_dids = [c["did"] for c in union]
    assert len(set(union_dids)) == len(union_dids) == len(pools[0]) + len(pools[3])
    assert union_dids == sorted(union_dids, key=n_of)
    assert union == sorted(pools[0] + pools[3], key=lambda c: n_of(c["did"]))

    # task0: every image is relevant to exactly one caption query; task3 agrees with task0.
    q0 = read_jsonl(root / mini.query_file(0))
    q3 = read_jsonl(root / mini.query_file(3))
    caption_of_image = {d: q["query_txt"] for q in q0 for d in q["pos_cand_list"]}
    assert sorted(caption_of_image, key=n_of) == [c["did"] for c in pools[0]]
    text_of = {c["did"]: c["txt"] for c in pools[3]}
    img_did = {c["img_path"]: c["did"] for c in pools[0]}
    for q in q3:
        assert text_of[q["pos_cand_list"][0]] == format_string(caption_of_image[img_did[q["query_img_path"]]])
    # task1: queries are non-English (differ from the English caption they point to)
    for q in read_jsonl(root / mini.query_file(1)):
        assert format_string(q["query_txt"]) != text_of[q["pos_cand_list"][0]]
        assert json.loads(q["query_src_content"])["lang"] in mini.CROSS_LINGUAL_LANGS


@needs_stamps
def test_instructions_tsv_parses_like_uniir(real_builds):
    root = real_builds[0]
    text = (root / mini.INSTRUCTIONS_FILE).read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "query_modality\tcand_modality\tdataset_name\tdataset_id\tprompt_1\tprompt_2\tprompt_3\tprompt_4"
    table = {}
    for line in lines[1:]:   # UniIR's _load_query_instructions
        parts = line.strip().split("\t")
        assert len(parts) == 8 and parts[2] == "TuxPaint"
        table[f"{parts[3]}, {parts[0]}, {parts[1]}"] = [p for p in parts[4:] if p]
    assert set(table) == {f"10, {q}, {c}" for q, c in TASKS.values()}
    assert all(len(v) == 4 and len(set(v)) == 4 for v in table.values())


@needs_stamps
def test_images_are_rgb_jpegs_with_short_side_256(real_builds):
    from PIL import Image

    root = real_builds[0]
    for path in sorted((root / "mbeir_images").rglob("*.jpg")):
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert min(im.size) == 256, (path, im.size)
            assert "exif" not in im.info


@needs_stamps
def test_ensure_mini_rebuilds_only_when_needed(tmp_path, monkeypatch):
    calls = []
    real_build = mini.build_mini

    def counting_build(out, **kw):
        calls.append(kw.get("n_stamps"))
        return real_build(out, **kw)

    monkeypatch.setattr(mini, "build_mini", counting_build)
    root = tmp_path / "mbeir-mini"
    assert ensure_mini(root, n_stamps=6) == root.absolute()
    assert calls == [6]
    manifest_bytes = (root / "MANIFEST.json").read_bytes()
    ensure_mini(root, n_stamps=6)
    assert calls == [6]                                   # valid build: nothing to do
    ensure_mini(root, n_stamps=7)
    assert calls == [6, 7]                                # different size
    ensure_mini(root, n_stamps=7)
    assert calls == [6, 7]
    m = json.loads((root / "MANIFEST.json").read_text())
    m["builder_version"] = "0"
    (root / "MANIFEST.json").write_text(json.dumps(m))
    ensure_mini(root, n_stamps=7)
    assert calls == [6, 7, 7]                             # older builder
    (root / mini.query_file(3)).unlink()
    ensure_mini(root, n_stamps=7)
    assert calls == [6, 7, 7, 7]                          # a file went missing
    (root / "MANIFEST.json").write_text("{not json")
    ensure_mini(root, n_stamps=7)
    assert calls == [6, 7, 7, 7, 7]                       # unreadable manifest
    assert mini.manifest_is_current(root, 7, verify=True)
    assert manifest_bytes != (root / "MANIFEST.json").read_bytes()
    assert no_temp_siblings(root)


# --------------------------------------------------------------------------------------------------
# Synthetic stamps tree (runs everywhere)


def _png(path: Path, kind: str, size=(40, 30), color=(200, 30, 30)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "RGBA":
        im = Image.new("RGBA", size, (0, 0, 0, 0))
        im.paste(Image.new("RGBA", (size[0] // 2, size[1] // 2), (*color, 255)), (size[0] // 4, size[1] // 4))
    elif kind == "LA":
        im = Image.new("LA", size, (0, 0))
        im.paste(Image.new("LA", (size[0] // 2, size[1] // 2), (90, 255)), (1, 1))
    elif kind == "P":
        im = Image.new("P", size, 0)
        im.putpalette([0, 0, 0, *color] + [0] * 762)
        im.paste(1, (2, 2, size[0] - 2, size[1] - 2))
        im.info["transparency"] = 0
        im.save(path, transparency=0)
        return
    else:
        im = Image.new("RGB", size, color)
    im.save(path)


@pytest.fixture
def fake_stamps(tmp_path) -> Path:
    root = tmp_path / "stamps"
    specs = [
        ("animals/cat", "RGBA", "A cat.\nde.utf8=Eine Katze.\nfr.utf8=Un chat.\n"),
        ("animals/cat-2", "P", "A cat.\nde.utf8=Eine Katze.\nfr.utf8=Un chat.\n"),   # shared caption
        ("animals/dog", "LA", "\ufeffA dog.\r\nde.utf8=Ein Hund. \r\nfr.utf8=Un chien.\r\n"),
        ("food/apple", "RGB", "An apple\nes.utf8=Una manzana.\nde.utf8=\n"),   # de empty -> next lang
        ("food/tiny", "RGBA", "A tiny crumb.\nde.utf8=A tiny crumb.\n"),       # identical translation
        ("symbols/calc", "RGBA", "A calculator.  6x7=42\nde.utf8=Ein Taschenrechner.\n"),
        ("symbols/nolang", "RGB", "Zero.\n"),                                   # no translation at all
    ]
    for rel, kind, txt in specs:
        _png(root / f"{rel}.png", kind, size=(7, 39) if rel == "food/tiny" else (40, 30))
        (root / f"{rel}.txt").write_bytes(txt.encode("utf-8"))
    _png(root / "animals/untitled.png", "RGBA")                     # no caption file -> skipped
    _png(root / "animals/blank.png", "RGBA")
    (root / "animals/blank.txt").write_text("\nde.utf8=Leer.\n")      # empty English -> skipped
    (root / "plants/tree.svg").parent.mkdir(parents=True)
    (root / "plants/tree.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (root / "plants/tree.txt").write_text("A tree.\n")                # SVG only -> skipped
    return root


def test_parse_caption_file_irregularities():
    assert parse_caption_file("\ufeffA frog.\r\nde.utf8=Ein Frosch. \r\n\r\nam.utf8= \n") == (
        "A frog.", {"de": "Ein Frosch."})
    assert parse_caption_file("A calculator.  6x7=42\nca@valencia.utf8=Una calculadora.\nzh_CN.utf8=X\n") == (
        "A calculator.  6x7=42", {"ca@valencia": "Una calculadora.", "zh_CN": "X"})
    assert parse_caption_file("de.utf8=Nur Deutsch.\n") == ("", {"de": "Nur Deutsch."})
    assert parse_caption_file("A.\nde.utf8=Eins\nde.utf8=Zwei\n")[1] == {"de": "Eins"}
    assert parse_caption_file("") == ("", {})


def test_synthetic_build(fake_stamps, tmp_path):
    out = tmp_path / "out" / "mbeir-mini"
    m = build_mini(out, stamps_root=fake_stamps, n_stamps=None)
    assert m["n_eligible"] == m["n_selected"] == 7 and m["n_stamps"] is None
    pool_img = read_jsonl(out / mini.pool_file(0))
    assert [json.loads(c["src_content"])["stamp"] for c in pool_img] == [
        "animals/cat-2", "animals/cat", "animals/dog", "food/apple", "food/tiny", "symbols/calc", "symbols/nolang"]
    caps = read_jsonl(out / mini.pool_file(3))
    assert [c["txt"] for c in caps] == [
        "A cat.", "A dog.", "An apple.", "A tiny crumb.", "A calculator.  6x7=42.", "Zero."]
    assert [c["did"] for c in caps] == [f"10:{n}" for n in range(8, 14)]
    q0 = read_jsonl(out / mini.query_file(0))
    assert q0[0]["query_txt"] == "A cat." and q0[0]["pos_cand_list"] == ["10:1", "10:2"]
    assert q0[2]["query_txt"] == "An apple"                      # raw, as written
    q1 = read_jsonl(out / mini.query_file(1))
    got = [(json.loads(q["query_src_content"]), q["query_txt"], q["pos_cand_list"]) for q in q1]
    assert got == [
        ({"stamp": "animals/cat-2", "lang": "de"}, "Eine Katze.", ["10:8"]),   # "cat-2.png" < "cat.png"
        ({"stamp": "animals/cat", "lang": "fr"}, "Un chat.", ["10:8"]),
        ({"stamp": "animals/dog", "lang": "de"}, "Ein Hund.", ["10:9"]),     # es..sv missing -> wraps to de
        ({"stamp": "food/apple", "lang": "es"}, "Una manzana.", ["10:10"]),
        ({"stamp": "symbols/calc", "lang": "de"}, "Ein Taschenrechner.", ["10:12"]),
    ]
    assert m["tasks"]["task1"]["skipped_identical"] == 1 and m["tasks"]["task1"]["skipped_missing"] == 1
    assert len(read_jsonl(out / mini.query_file(3))) == len(read_jsonl(out / mini.query_file(4))) == 7

    from PIL import Image

    with Image.open(out / "mbeir_images/tuxpaint_images/food/tiny.jpg") as im:
        assert im.size == (256, 1426)                            # 7x39 upscaled, short side 256
    with Image.open(out / "mbeir_images/tuxpaint_images/animals/cat.jpg") as im:
        assert im.getpixel((0, 0)) >= (250, 250, 250)            # transparent -> white
        assert im.getpixel((im.width // 2, im.height // 2))[0] > 150
    # n_stamps picks evenly from the sorted list
    m3 = build_mini(tmp_path / "three", stamps_root=fake_stamps, n_stamps=3)
    pool3 = read_jsonl(tmp_path / "three" / mini.pool_file(4))
    assert [json.loads(c["src_content"])["stamp"] for c in pool3] == ["animals/cat-2", "animals/dog", "food/tiny"]
    assert m3["n_selected"] == 3


def test_select_evenly():
    assert mini.select_evenly(list(range(10)), 10) == list(range(10))
    assert mini.select_evenly(list(range(10)), 4) == [0, 2, 5, 7]
    assert mini.select_evenly(list(range(785)), 300)[-1] == 782


def test_missing_stamps_root_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-stamps"
    with pytest.raises(MmbenchError, match=r"apt-get install tuxpaint-stamps-default") as exc:
        build_mini(tmp_path / "out", stamps_root=missing, n_stamps=5)
    assert isinstance(exc.value, DataError) and str(missing) in str(exc.value)
    with pytest.raises(MmbenchError, match="apt-get install tuxpaint-stamps-default"):
        ensure_mini(tmp_path / "out2", stamps_root=missing, n_stamps=5)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_too_few_stamps(fake_stamps, tmp_path):
    with pytest.raises(DataError, match=r"too few stamps: found 7 .* needs 8"):
        build_mini(tmp_path / "out", stamps_root=fake_stamps, n_stamps=8)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="too few stamps: found 0"):
        build_mini(tmp_path / "out", stamps_root=empty, n_stamps=None)
    with pytest.raises(MmbenchError, match="n_stamps"):
        build_mini(tmp_path / "out", stamps_root=fake_stamps, n_stamps=0)
    assert not (tmp_path / "out").exists()


def test_interrupted_build_keeps_previous_build(fake_stamps, tmp_path):
    out = tmp_path / "mbeir-mini"
    build_mini(out, stamps_root=fake_stamps, n_stamps=4)
    before = tree_bytes(out)

    def boom(stage, done, total):
        if stage == "images" and done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_mini(out, stamps_root=fake_stamps, n_stamps=5, progress=boom)
    assert tree_bytes(out) == before
    assert no_temp_siblings(out)
    # a leftover from a killed build (dead pid) is cleaned up by the next build
    stale = tmp_path / ".mbeir-mini.tmp-999999999-deadbeef"
    (stale / "query").mkdir(parents=True)
    m = build_mini(out, stamps_root=fake_stamps, n_stamps=5)
    assert m["n_selected"] == 5 and not stale.exists() and no_temp_siblings(out)
    assert mini.manifest_is_current(out, 5, verify=True)


def test_refuses_to_replace_foreign_folder(fake_stamps, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(MmbenchError, match="refusing to replace"):
        build_mini(out, stamps_root=fake_stamps, n_stamps=2)
    assert (out / "thesis.tex").read_text() == "do not delete"
    empty = tmp_path / "empty-ok"
    empty.mkdir()
    build_mini(empty, stamps_root=fake_stamps, n_stamps=2)
    assert (empty / "MANIFEST.json").is_file()


def test_default_mini_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MMBENCH_DATA", raising=False)
    monkeypatch.delenv("MMBENCH_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_mini_root() == tmp_path / "home" / ".cache/mmbench/data/mbeir-mini"
    monkeypatch.setenv("MMBENCH_CACHE", str(tmp_path / "cache"))
    assert default_mini_root() == tmp_path / "cache/data/mbeir-mini"
    monkeypatch.setenv("MMBENCH_DATA", str(tmp_path / "data"))
    assert default_mini_root() == tmp_path / "data/mbeir-mini"
