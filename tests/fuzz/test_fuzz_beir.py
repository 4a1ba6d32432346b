"""Fuzzing the BEIR folder reader of the mteb family: every mutation gives a DataError naming the
file, or the clean folder's data (a dangling qrels reference: a note), never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fuzz_common import JSON_VALUES, mutate_lines, outcome, same_type
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmbench import catalog
from mmbench.data.families import mteb as ml

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
FILES = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")
KINDS = ("truncate", "wrong_type", "missing_field", "extra_field", "invalid_utf8", "bom", "crlf", "blank_lines",
         "duplicate_record", "huge_line", "not_an_object", "column_count", "bad_number", "conflicting_duplicate",
         "dangling_reference")
HARMLESS = {"bom", "crlf", "blank_lines", "extra_field"}


def _write(folder: Path) -> None:
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": f"T{i}", "text": f"doc {i}"} for i in range(4)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    qs = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(3)]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    (folder / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t2\nq2\td3\t1\n")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzzbeir")
    _write(root / "scifact")
    return root


def _load(root):
    return lambda: ml.load_task(catalog.tasks().get("SciFact"), root)


OPTIONAL = {"title"}       # the corpus's optional text field
TEXTS = {"title", "text"}  # text fields: a string or null


def _mutate(raw: bytes, rel: str, kind: str, draw) -> bytes:
    lines = raw.decode().splitlines()
    if rel.endswith(".jsonl") and kind in ("wrong_type", "missing_field", "extra_field"):
        i = draw(st.integers(0, len(lines) - 1))
        obj = json.loads(lines[i])
        # valid, so not mutations to catch: a corpus record without a title, and a null text field
        # (read as "", as the readers' contract says)
        keys = sorted(k for k in obj if not (kind == "missing_field" and k in OPTIONAL))
        key = draw(st.sampled_from(keys))
        if kind == "wrong_type":
            obj[key] = draw(st.sampled_from([v for v in JSON_VALUES if not same_type(v, obj[key])
                                             and not (v is None and key in TEXTS)]))
        elif kind == "missing_field":
            del obj[key]
        else:
            obj["x_" + key] = draw(st.sampled_from(JSON_VALUES))
        lines[i] = json.dumps(obj)
    elif rel.endswith(".tsv") and kind in ("column_count", "bad_number", "conflicting_duplicate", "dangling_reference"):
        i = draw(st.integers(1, len(lines) - 1))
        cols = lines[i].split("\t")
        if kind == "column_count":
            lines[i] = "\t".join(cols[:draw(st.integers(1, 2))] if draw(st.booleans()) else cols + ["1"])
        elif kind == "bad_number":
            lines[i] = "\t".join(cols[:2] + [draw(st.sampled_from(["1.5", "x", "", "one", "1e3"]))])
        elif kind == "conflicting_duplicate":
            lines.append("\t".join(cols[:2] + [str(int(cols[2]) + 1)]))
        else:
            lines.append(f"q{draw(st.integers(0, 2))}\td{draw(st.integers(100, 999))}\t1")
    elif kind in ("wrong_type", "missing_field", "extra_field", "column_count", "bad_number",
                  "conflicting_duplicate", "dangling_reference", "not_an_object"):
        return mutate_lines(raw, "truncate", draw, jsonl=rel.endswith(".jsonl"))
    else:
        return mutate_lines(raw, kind, draw, jsonl=rel.endswith(".jsonl"))
    return ("\n".join(lines) + "\n").encode()


@SETTINGS
@given(data=st.data(), rel=st.sampled_from(FILES), kind=st.sampled_from(KINDS))
def test_fuzz_beir_folder(root, data, rel, kind):
    record_kinds = ("wrong_type", "missing_field", "extra_field", "not_an_object")
    tsv_kinds = ("column_count", "bad_number", "conflicting_duplicate", "dangling_reference")
    if (rel.endswith(".tsv") and kind in record_kinds) or (rel.endswith(".jsonl") and kind in tsv_kinds):
        kind = "truncate"                      # the kinds that do not apply to this format
    clean_kind, clean = outcome(_load(root), "scifact")
    assert clean_kind == "data"
    path = root / "scifact" / rel
    original = path.read_bytes()
    mutated = _mutate(original, rel, kind, data.draw)
    path.write_bytes(mutated)
    try:
        got_kind, got = outcome(_load(root), path.name)
    finally:
        path.write_bytes(original)
    if kind in HARMLESS:
        assert (got_kind, got) == ("data", clean)
    elif kind == "dangling_reference" and rel.endswith(".tsv"):
        assert got_kind == "data" and any("not in the corpus" in n for n in got[-1])
    elif kind in ("invalid_utf8", "huge_line", "column_count", "bad_number", "conflicting_duplicate") \
            or (kind == "duplicate_record" and rel.endswith(".jsonl")):
        assert got_kind == "error", f"{kind} accepted"
    else:
        # an integer id is read as its decimal text: a changed id then dangles, which a note says
        assert got_kind == "error" or got == clean or got[-1] != clean[-1], f"{kind} silently changed the data"


def test_fuzz_beir_one_column_qrels_row_is_an_error(root, tmp_path):
    folder = tmp_path / "scifact"
    shutil.copytree(root / "scifact", folder)
    with open(folder / "qrels/test.tsv", "a") as f:
        f.write("q1\n")
    with pytest.raises(ml.DataError, match=r"test.tsv:5: expected 3 tab-separated columns"):
        ml.load_task(catalog.tasks().get("SciFact"), tmp_path)
