"""Shared pieces of the input fuzz suite: the mutation kinds and the oracle (named error or same data)."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from mmbench.data.lines import MAX_LINE_BYTES
from mmbench.errors import MmbenchError

# Every mutation kind the suite applies (docs/hardening.md lists them with the expected outcome).
KINDS = ("truncate", "wrong_type", "missing_field", "extra_field", "invalid_utf8", "bom", "crlf",
         "blank_lines", "duplicate_record", "conflicting_duplicate", "dangling_reference", "huge_line",
         "not_an_object", "column_count", "bad_number", "bad_cli_value")

# Values of every JSON type: a wrong-type mutation picks one whose type differs from the field's.
JSON_VALUES = (None, 0, -3, 1.5, True, "", "x", [], ["9:1"], {}, {"a": 1})


def same_type(a, b) -> bool:
    return type(a) is type(b)


def view(data) -> tuple:
    """What a score depends on: every column of queries and pool, the qrels and the notes."""
    def table(t):
        return (t.ids, t.modalities, t.texts, t.image_paths, t.raw_texts, t.instructions)
    return table(data.queries), table(data.pool), data.qrels, data.notes


def outcome(load, name: str):
    """``("error", message)`` for a named error whose message names the file ``name``; the data's
    :func:`view` otherwise. Any other exception propagates (the fuzz test then fails)."""
    try:
        data = load()
        return "data", [view(d) for d in data] if isinstance(data, list) else view(data)
    except MmbenchError as exc:
        assert name in str(exc), f"error does not name {name}: {exc}"
        return "error", str(exc)


def mutate_lines(raw: bytes, kind: str, draw, *, jsonl: bool) -> bytes:
    """A byte-level mutation of a line-based file."""
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines = lines[:-1]
    i = draw(st.integers(0, len(lines) - 1))
    if kind == "truncate":
        # cut strictly inside a line (a cut at a line end is a valid, shorter file)
        start = sum(len(l) + 1 for l in lines[:i])
        if len(lines[i]) < 2:
            return raw[:start + 1]
        return raw[:start + draw(st.integers(1, len(lines[i]) - 1))]
    if kind == "invalid_utf8":
        pos = draw(st.integers(0, len(lines[i])))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\x80"]))
        lines[i] = lines[i][:pos] + bad + lines[i][pos:]
    elif kind == "bom":
        return b"\xef\xbb\xbf" + raw
    elif kind == "crlf":
        return raw.replace(b"\n", b"\r\n")
    elif kind == "blank_lines":
        lines.insert(i + 1, b"" if not jsonl else draw(st.sampled_from([b"", b"  ", b"\t"])))
    elif kind == "duplicate_record":
        lines.insert(i + 1, lines[i])
    elif kind == "huge_line":
        if jsonl:
            obj = json.loads(lines[i])
            key = next(k for k, v in obj.items() if isinstance(v, str))
            obj[key] = "a" * (MAX_LINE_BYTES + 1)
            lines[i] = json.dumps(obj).encode()
        else:
            lines[i] = lines[i] + b"a" * (MAX_LINE_BYTES + 1)
    elif kind == "not_an_object":
        lines[i] = draw(st.sampled_from([b"[]", b"1", b'"x"', b"null", b"[{}]"]))
    else:
        raise AssertionError(kind)
    return b"\n".join(lines) + b"\n"
