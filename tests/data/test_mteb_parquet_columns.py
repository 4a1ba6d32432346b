"""The column-at-a-time parquet reader of mteb corpora and queries against the record-by-record one.

``read_corpus`` / ``read_queries`` read parquet files a column at a time where every column is
plainly valid (``_parquet_columns``), else record by record. On random tables (typed columns with
nulls, empty ids, duplicate ids across files, missing columns, empty files) both give the same
values or the same error, and the columnar path is taken exactly when the records are valid.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmbench.data.families import mteb as fam
from mmbench.errors import DataError

TYPES = {
    "string": (pa.string(), st.text(max_size=6)),
    "large_string": (pa.large_string(), st.text(max_size=6)),
    "int64": (pa.int64(), st.integers(-5, 10**12)),
    "bool": (pa.bool_(), st.booleans()),
    "float64": (pa.float64(), st.floats(allow_nan=False, width=32)),
}


@st.composite
def column(draw, rows: int, kinds: list[str], nulls: bool = True):
    kind = draw(st.sampled_from(kinds + ["null"] if nulls else kinds))
    if kind == "null":
        return pa.array([None] * rows, pa.null())
    typ, values = TYPES[kind]
    null = st.none() if nulls and draw(st.booleans()) else st.nothing()
    return pa.array(draw(st.lists(values | null, min_size=rows, max_size=rows)), typ)


@st.composite
def tables(draw, fields: tuple[str, ...]):
    out = []
    for _ in range(draw(st.integers(1, 2))):
        rows = draw(st.integers(0, 6))
        cols = {}
        id_name = draw(st.sampled_from(["_id", "id", None]))
        if id_name:
            ids = draw(st.lists(st.sampled_from(["a", "b", "c", "", "7", "x y"]) | st.integers(0, 9).map(str),
                                min_size=rows, max_size=rows))
            cols[id_name] = (pa.array(ids, pa.string()) if draw(st.booleans())
                             else draw(column(rows, ["string", "int64", "bool", "float64"])))
        for name in fields:
            if draw(st.integers(0, 5)):               # mostly present
                cols[name] = draw(column(rows, ["string", "large_string", "string", "int64"]))
        out.append(pa.table(cols) if cols else pa.table({"other": pa.array([1] * rows, pa.int64())}))
    return out


def outcome(fn, paths):
    try:
        return "ok", fn(paths)
    except DataError as exc:
        return "error", str(exc)


def write(tmp_path, tabs, stem):
    paths = []
    for i, table in enumerate(tabs):
        path = tmp_path / f"{stem}-{i}.parquet"
        pq.write_table(table, path)
        paths.append(path)
    return paths


BATCHES = st.sampled_from([2, 3, 1 << 16])    # rows per batch read (fam._PARQUET_BATCH): across batches too


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tabs=tables(("title", "text")), batch=BATCHES)
def test_corpus_columns_equal_records(tmp_path, tabs, batch):
    paths = write(tmp_path, tabs, "corpus")
    want = outcome(fam._read_corpus_records, paths)
    with mock.patch.object(fam, "_PARQUET_BATCH", batch):
        assert outcome(fam.read_corpus, paths) == want
        # the columnar path is the one taken for every valid corpus, and only for those
        assert (fam._parquet_columns(paths, {"title": False, "text": True}) is not None) == (want[0] == "ok")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tabs=tables(("text",)), batch=BATCHES)
def test_queries_columns_equal_records(tmp_path, tabs, batch):
    paths = write(tmp_path, tabs, "queries")
    want = outcome(fam._read_queries_records, paths)
    with mock.patch.object(fam, "_PARQUET_BATCH", batch):
        assert outcome(fam.read_queries, paths) == want
        assert (fam._parquet_columns(paths, {"text": True}) is not None) == (want[0] == "ok")


def test_jsonl_is_read_record_by_record(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "a", "text": "x"}\n')
    assert fam._parquet_columns([path], {"text": True}) is None
    assert fam.read_corpus([path]) == (["a"], [""], ["x"])


@pytest.mark.parametrize("ids", [["a", "a"], ["a", ""]])
def test_bad_ids_name_the_row(tmp_path, ids):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"_id": ids, "text": ["x", "y"]}), path)
    with pytest.raises(DataError, match="row 2"):
        fam.read_corpus([path])
