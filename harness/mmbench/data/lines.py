"""Reading text data files line by line, with every failure a :class:`~mmbench.errors.DataError`.

All of mmbench's line formats (M-BEIR's JSONL, qrels and instruction TSV; BEIR's JSONL and TSV) go
through :func:`iter_lines`, which:

* reads bytes, a line at a time, never more than :data:`MAX_LINE_BYTES` (+ its line end) of one
  line: a longer line is a named error, so memory stays bounded by the data and not by one
  pathological line (a line is only ever held once, and the cap bounds what the models downstream
  are asked to tokenise);
* decodes UTF-8 strictly: invalid bytes are an error naming the file, line and byte offset;
* accepts, and drops, a UTF-8 byte order mark at the start of the file and ``\\r\\n`` line ends:
  both are invisible to the parsed values, so a file saved by an editor that adds them loads to
  the same data (the fuzz suite, ``tests/fuzz``, checks the scores do not change);
* reads ``.gz`` files through gzip (a corrupt stream is an error too).

The cap, :data:`MAX_LINE_BYTES` = 4 MiB, is far above any line of the real data: an M-BEIR record
holds one caption, question or Wikipedia passage (``shared/reference/mbeir.md`` §1), a BEIR corpus
line one document (title and text), a qrels line three ids and a number.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmbench.errors import DataError

MAX_LINE_BYTES = 4 * 1024 * 1024
"""The longest line (bytes, without its line end) any line-based input may have."""

BOM = b"\xef\xbb\xbf"


def _open(path: Path):
    try:
        if str(path).endswith(".gz"):
            return gzip.open(path, "rb")
        return open(path, "rb")
    except OSError as exc:
        raise DataError(path, f"cannot read the file ({exc.strerror or exc})") from None


def iter_lines(path: Path, *, skip_blank: bool = False, final_newline: bool = False) -> Iterator[tuple[int, str]]:
    """``(line number, text without its line end)`` for each line of ``path`` (see the module docstring).
    ``final_newline``: a last line without a line end is an error (the file was cut inside a line),
    for formats whose writers always end lines and where a cut line can still parse."""
    path = Path(path)
    with _open(path) as f:
        lineno = 0
        while True:
            try:
                raw = f.readline(MAX_LINE_BYTES + 3)
            except (OSError, EOFError, zlib.error) as exc:
                raise DataError(path, f"cannot read the file ({exc})", line=lineno + 1) from None
            if not raw:
                return
            lineno += 1
            if lineno == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            body = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith(b"\n") else raw
            if final_newline and body is raw and len(raw) <= MAX_LINE_BYTES and body.strip():
                raise DataError(path, "the last line has no line end: the file looks cut (truncated) inside "
                                      "a line", line=lineno)
            if len(body) > MAX_LINE_BYTES:
                raise DataError(path, f"line longer than {MAX_LINE_BYTES} bytes (mmbench.data.lines."
                                      "MAX_LINE_BYTES); no real record is this long: is the file corrupt?",
                                line=lineno)
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(path, f"invalid UTF-8 at byte {exc.start} of the line (expected UTF-8 text)",
                                line=lineno) from None
            if skip_blank and not text.strip():
                continue
            yield lineno, text


def parse_json(path: Path, lineno: int | None, text: str):
    """``json.loads(text)`` with every failure (syntax, nesting depth, integer size) a DataError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"invalid JSON ({exc.msg} at column {exc.colno})", line=lineno) from None
    except (ValueError, RecursionError) as exc:
        raise DataError(path, f"invalid JSON ({type(exc).__name__}: {str(exc)[:80]})", line=lineno) from None


def iter_json_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSONL file; a line that is not one JSON
    object is an error."""
    for lineno, text in iter_lines(path, skip_blank=True):
        obj = parse_json(path, lineno, text)
        if not isinstance(obj, dict):
            raise DataError(path, f"expected a JSON object, got {type(obj).__name__}", line=lineno)
        yield lineno, obj


class ColumnarDeclined(Exception):
    """:func:`iter_json_blocks` does not take this file (or block): read it with :func:`iter_json_objects`,
    which accepts what is valid and names the file and line of what is not."""


@dataclass
class JsonBlock:
    """Consecutive lines of a JSONL file read column-wise: ``columns`` (name -> a ``pyarrow`` string
    array, null where the value is null), ``starts`` (int64 byte offset of each row's line in the
    file), ``end`` (the offset just after the block's last line end) and ``data`` (its bytes)."""

    columns: dict
    starts: np.ndarray
    end: int
    data: bytes                 # the block's bytes as in the file (from starts[0] to end)

    def __len__(self) -> int:
        return len(self.starts)


BLOCK_BYTES = 32 * 1024 * 1024
"""How much of a file :func:`iter_json_blocks` parses at once (the reader's memory is a few times this)."""


def iter_json_blocks(path: Path, columns: tuple[str, ...], required: tuple[str, ...], *,
                     block_bytes: int = BLOCK_BYTES) -> Iterator[JsonBlock]:
    """A JSONL file of flat objects read in blocks by Arrow's JSON parser (``pyarrow.json``), one
    :class:`JsonBlock` per block, the only Python objects made being a few per block.

    It takes a block only where :func:`iter_json_objects` reads the same lines to the same values,
    and raises :class:`ColumnarDeclined` otherwise (the caller then reads the file line by line,
    which gives the same values or the error naming the line). A block is taken when: the file is
    not gzip; every line starts with ``{`` (no blank line, no leading white space, a UTF-8 byte order
    mark only at the file's start); no line is longer than :data:`MAX_LINE_BYTES`; Arrow parses it (strict UTF-8 and JSON: a repeated key,
    a lone surrogate escape, ``NaN`` or two objects on one line are refused) into exactly one row
    per line; every object has only keys of ``columns``, each a string or null; and each key of
    ``required`` occurs exactly once per line, written ``"key":`` (as ``json.dumps`` writes it; Arrow
    reads a missing key as null, so the count of ``"key":`` in the block must equal the row count:
    inside a JSON string a quote is escaped, a value is a string or null and a key cannot repeat,
    so each occurrence is that key of one line).
    """
    import pyarrow as pa
    import pyarrow.json as pj

    path = Path(path)
    if str(path).endswith(".gz"):
        raise ColumnarDeclined("gzip file")
    schema = pa.schema([(c, pa.string()) for c in columns])
    parse = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    keys = [b'"' + c.encode() + b'":' for c in required]
    with _open(path) as f:
        offset = 0
        rest = b""
        while True:
            data = f.read(block_bytes)
            block = rest + data
            if not block:
                return
            if offset == 0 and block.startswith(BOM):
                offset, block = len(BOM), block[len(BOM):]
            if data:
                cut = block.rfind(b"\n") + 1
                if cut == 0:
                    if len(block) > MAX_LINE_BYTES:
                        raise ColumnarDeclined("a line longer than the cap")
                    rest = block
                    continue
                block, rest = block[:cut], block[cut:]
            else:
                rest = b""
            yield _parse_block(block, offset, parse, keys)
            offset += len(block)
            if not data:
                return


def _parse_block(block: bytes, offset: int, parse, keys: list[bytes]) -> JsonBlock:
    import io

    import pyarrow as pa
    import pyarrow.json as pj

    data = np.frombuffer(block, np.uint8)
    ends = np.flatnonzero(data == 10)
    starts = np.empty(len(ends) + (0 if block.endswith(b"\n") else 1), np.int64)
    starts[0] = 0
    starts[1:] = ends[:len(starts) - 1] + 1
    if (data[starts] != ord("{")).any():              # a blank line, leading white space, a BOM, not an object
        raise ColumnarDeclined("a line that does not start with '{'")
    lengths = np.diff(np.append(starts, len(block)))
    if lengths.max() - 1 > MAX_LINE_BYTES:
        raise ColumnarDeclined("a line longer than the cap")
    try:
        table = pj.read_json(io.BytesIO(block), parse_options=parse)
    except (pa.ArrowException, ValueError) as exc:      # invalid JSON or UTF-8, a wrong type, a repeated key
        raise ColumnarDeclined(str(exc)) from None
    if table.num_rows != len(starts):
        raise ColumnarDeclined("not one object per line")
    for key in keys:
        if block.count(key) != table.num_rows:
            raise ColumnarDeclined("a line without a required key")
    return JsonBlock({name: table.column(name).combine_chunks() for name in table.column_names},
                     starts + offset, offset + len(block), block)


__all__ = ["BLOCK_BYTES", "MAX_LINE_BYTES", "ColumnarDeclined", "JsonBlock", "iter_json_blocks", "iter_json_objects",
           "iter_lines", "parse_json"]
