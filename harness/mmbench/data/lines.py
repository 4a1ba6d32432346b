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
from pathlib import Path

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


__all__ = ["MAX_LINE_BYTES", "iter_json_objects", "iter_lines", "parse_json"]
