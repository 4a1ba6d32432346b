"""Text from records made safe for the formats the reports are written in.

Names and notes in a results tree come from whoever made it (a tree from someone else's CI is enough),
so every string that reaches a report is escaped for its format:

* Markdown (:func:`md`): ``\\``, `````, ``*``, ``[``, ``]`` and ``|`` are backslash-escaped (``|``
  would split a table cell, brackets would start a link); ``&``, ``<`` and ``>`` become entities, so raw
  HTML (``<script>``) never passes through a renderer that allows it; a line break becomes a space
  (it would end the table row).
* CSV (:func:`csv_cell`): a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
  is read as a formula by spreadsheet programs; it gets a leading ``'``, as OWASP's "CSV injection"
  page recommends. Numbers are not text and are left alone, and so is a lone ``-`` (the "none" of a
  published row's revision: no formula can start there).
* Links (:func:`safe_url`): only ``http``/``https`` URLs become links (a ``javascript:`` URL is dropped).
* Rich console markup (:func:`console`): ``[`` is escaped, so a name is printed as written and a name
  like ``[/]`` cannot break the table.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_MD = {"\\": "\\\\", "`": "\\`", "*": "\\*", "[": "\\[", "]": "\\]", "|": "\\|",
       "&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": " ", "\n": " "}
CSV_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def md(text) -> str:
    """``text`` as literal Markdown (safe inside a table cell)."""
    return "".join(_MD.get(c, c) for c in str(text))


def csv_cell(value):
    """``value`` with a leading ``'`` when it is text that starts like a spreadsheet formula."""
    if isinstance(value, str) and value.startswith(CSV_TRIGGERS) and value != "-":
        return "'" + value
    return value


def safe_url(url) -> str:
    """``url`` when it is an http(s) URL without spaces or quotes, else ""."""
    url = str(url or "")
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return ""
    if scheme not in ("http", "https") or any(c.isspace() or c in "\"'<>()\\" for c in url):
        return ""
    return url


def console(text) -> str:
    """``text`` with rich markup escaped."""
    from rich.markup import escape

    return escape(str(text))
