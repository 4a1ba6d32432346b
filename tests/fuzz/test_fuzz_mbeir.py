"""Fuzzing the M-BEIR loader: every mutation of a query, pool, qrels or instruction file gives a
DataError naming the file, or exactly the clean file's data (never a traceback, never other data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fuzz_common import JSON_VALUES, mutate_lines, outcome, same_type
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbeir_fixture import build_fixture
from mmbench.catalog import tasks
from mmbench.data.families.mbeir import load_task

FILES = {   # file -> the tasks that read it
    "query/test/mbeir_mscoco_task0_test.jsonl": ("mscoco_task0",),
    "query/test/mbeir_oven_task6_test.jsonl": ("oven_task6",),
    "cand_pool/local/mbeir_mscoco_task0_test_cand_pool.jsonl": ("mscoco_task0",),
    "cand_pool/local/mbeir_mscoco_task3_test_cand_pool.jsonl": ("mscoco_task3",),
    "qrels/test/mbeir_mscoco_task0_test_qrels.txt": ("mscoco_task0",),
    "qrels/test/mbeir_oven_task6_test_qrels.txt": ("oven_task6",),
    "instructions/query_instructions.tsv": ("mscoco_task0", "mscoco_task3", "oven_task6"),
}
JSONL_KINDS = ("truncate", "wrong_type", "missing_field", "extra_field", "invalid_utf8", "bom", "crlf",
               "blank_lines", "duplicate_record", "huge_line", "not_an_object")
TEXT_KINDS = ("truncate", "invalid_utf8", "bom", "crlf", "blank_lines", "duplicate_record", "huge_line")
QRELS_KINDS = ("conflicting_duplicate", "dangling_reference", "column_count", "bad_number")
HARMLESS = {"bom", "crlf", "blank_lines", "extra_field"}
ALWAYS_ERROR = {"invalid_utf8", "huge_line", "not_an_object", "conflicting_duplicate", "dangling_reference",
                "column_count", "bad_number"}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return build_fixture(tmp_path_factory.mktemp("fuzz") / "M-BEIR")


def _load_all(root: Path, names):
    return lambda: [load_task(tasks().get(n), root) for n in names]


def _clean(root: Path, rel: str):
    kind, value = outcome(_load_all(root, FILES[rel]), Path(rel).name)
    assert kind == "data"
    return value


def _mutate_record(raw: bytes, kind: str, draw) -> bytes:
    lines = raw.decode().splitlines()
    i = draw(st.integers(0, len(lines) - 1))
    obj = json.loads(lines[i])
    if kind == "wrong_type":
        key = draw(st.sampled_from(sorted(obj)))
        obj[key] = draw(st.sampled_from([v for v in JSON_VALUES if not same_type(v, obj[key])]))
    elif kind == "missing_field":
        del obj[draw(st.sampled_from(sorted(obj)))]
    elif kind == "extra_field":
        key = draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in obj))
        obj[key] = draw(st.sampled_from(JSON_VALUES))
    lines[i] = json.dumps(obj)
    return ("\n".join(lines) + "\n").encode()


def _mutate_qrels(raw: bytes, kind: str, draw) -> bytes:
    lines = raw.decode().splitlines()
    i = draw(st.integers(0, len(lines) - 1))
    cols = lines[i].split()
    if kind == "conflicting_duplicate":
        cols[3] = str(int(cols[3]) + draw(st.integers(1, 3)))
        lines.insert(i + 1, " ".join(cols))
    elif kind == "dangling_reference":
        j = draw(st.sampled_from([0, 2]))
        cols[j] = cols[j].split(":")[0] + ":" + str(draw(st.integers(1000, 10**6)))
        lines.append(" ".join(cols))
    elif kind == "column_count":
        if draw(st.booleans()):
            del cols[draw(st.integers(0, len(cols) - 1))]
        else:
            cols.insert(draw(st.integers(0, len(cols))), "7")
        lines[i] = " ".join(cols)
    elif kind == "bad_number":
        cols[draw(st.sampled_from([1, 3, 4]))] = draw(st.sampled_from(["1.0", "x", "", "1e3", "٣", "--1"])) or "-"
        lines[i] = " ".join(cols)
    return ("\n".join(lines) + "\n").encode()


def _check(root: Path, rel: str, kind: str, mutated: bytes, clean) -> None:
    path = root / rel
    original = path.read_bytes()
    path.write_bytes(mutated)
    try:
        got_kind, got = outcome(_load_all(root, FILES[rel]), path.name)
    finally:
        path.write_bytes(original)
    if kind in HARMLESS:
        assert (got_kind, got) == ("data", clean), got
    elif kind == "dangling_reference":       # an error, or a cross-dataset positive counted in a note
        assert got_kind == "error" or [v[-1] for v in got] != [v[-1] for v in clean], "dangling reference unnoticed"
    elif kind in ALWAYS_ERROR or (kind == "duplicate_record" and rel.endswith(".jsonl")):
        assert got_kind == "error", f"{kind} accepted"
    else:
        assert got_kind == "error" or got == clean, f"{kind} silently changed the data"


@SETTINGS
@given(data=st.data(), rel=st.sampled_from([r for r in FILES if r.endswith(".jsonl")]),
       kind=st.sampled_from(JSONL_KINDS))
def test_fuzz_mbeir_jsonl(root, data, rel, kind):
    raw = (root / rel).read_bytes()
    clean = _clean(root, rel)
    if kind in ("wrong_type", "missing_field", "extra_field"):
        mutated = _mutate_record(raw, kind, data.draw)
    else:
        mutated = mutate_lines(raw, kind, data.draw, jsonl=True)
    _check(root, rel, kind, mutated, clean)


@SETTINGS
@given(data=st.data(), rel=st.sampled_from([r for r in FILES if not r.endswith(".jsonl")]),
       kind=st.sampled_from(TEXT_KINDS + QRELS_KINDS))
def test_fuzz_mbeir_qrels_and_instructions(root, data, rel, kind):
    if kind in QRELS_KINDS and not rel.endswith("_qrels.txt"):
        kind = "truncate"
    raw = (root / rel).read_bytes()
    clean = _clean(root, rel)
    if kind == "truncate" and rel.endswith(".tsv"):
        # A TSV row has no terminator: a cut inside the prompts of the last row is a valid shorter
        # prompt (docs/hardening.md, limits). Cut inside a row's first four (key) columns.
        lines = raw.split(b"\n")
        i = data.draw(st.integers(1, len(lines) - 1))
        start = sum(len(l) + 1 for l in lines[:i])
        key_end = len(b"\t".join(lines[i].split(b"\t")[:4]))
        mutated = raw[:start + data.draw(st.integers(1, key_end))]
    elif kind in QRELS_KINDS:
        mutated = _mutate_qrels(raw, kind, data.draw)
    else:
        mutated = mutate_lines(raw, kind, data.draw, jsonl=False)
    _check(root, rel, kind, mutated, clean)
