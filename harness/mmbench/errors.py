"""User-facing errors. The CLI prints these as one clear line (no traceback unless --debug)."""

from __future__ import annotations


class MmbenchError(Exception):
    """An error caused by the user's input or environment, with a message that says what to do."""


class DataError(MmbenchError):
    """Malformed or missing data. The message names the file (and line, record and field where known):
    ``path:line (field 'f'): what was expected``, or ``path (row N, field 'f'): ...`` for a record of
    a file without lines (parquet)."""

    def __init__(self, path, message: str, *, line: int | None = None, field: str | None = None,
                 row: int | None = None):
        where = str(path)
        if line is not None:
            where += f":{line}"
        inner = ([f"row {row}"] if row is not None else []) + ([f"field '{field}'"] if field is not None else [])
        if inner:
            where += f" ({', '.join(inner)})"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.field, self.row = path, line, field, row


class UnknownNameError(MmbenchError):
    """An unknown task, suite or model name; the message lists the closest known names."""


class IncompatibleModelError(MmbenchError):
    """The model cannot encode a modality the task needs."""
