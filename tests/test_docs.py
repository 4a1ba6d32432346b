"""The README is a front page and the docs hold together: size, links, anchors, the command table, and the
LICENSE / CITATION.cff that the README points to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

import mmbench
from mmbench.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS, ROOT / "results" / "README.md"]

README_MAX_BYTES = 15_500

# [text](target) outside code; a target is everything up to the closing parenthesis (no spaces in ours)
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code (links inside code are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, inline markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a markdown page (GitHub numbers repeated slugs -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if not m:
            continue
        s = slug(m.group(1))
        n = seen.get(s, 0)
        out.add(s if n == 0 else f"{s}-{n}")
        seen[s] = n + 1
    return out


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page.read_text(encoding="utf-8")))
            if not re.match(r"[a-z][a-z0-9+.-]*:", t)]          # http:, https:, mailto: ...


def test_slug_follows_github():
    assert slug("The embedded suite `mbeir-mini`") == "the-embedded-suite-mbeir-mini"
    assert slug("The headline recipe: MM-Embed on M-BEIR") == "the-headline-recipe-mm-embed-on-m-beir"
    assert slug("Rerank, compare & CI") == "rerank-compare--ci"


def test_readme_is_a_front_page():
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/ (limit {README_MAX_BYTES})"


def test_docs_exist():
    names = {p.name for p in DOCS}
    for needed in ("mbeir.md", "mteb.md", "models.md", "search.md", "results.md", "benchmarks.md",
                   "architecture.md", "perf.md"):
        assert needed in names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    problems = []
    for target in relative_links(page):
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{target}: {dest} does not exist")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            problems.append(f"{target}: no heading #{fragment} in {dest.name}")
    assert not problems, f"{page.relative_to(ROOT)}:\n  " + "\n  ".join(problems)


def test_link_checker_sees_broken_links(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("# Top\n[ok](#top) [gone](missing.md) [bad anchor](#nowhere) `[code](nope.md)`\n"
                    "```\n[fenced](nope.md)\n```\n[web](https://example.org/x.md)\n", encoding="utf-8")
    assert relative_links(page) == ["#top", "missing.md", "#nowhere"]
    assert anchors(page) == {"top"}


def readme_commands() -> list[str]:
    """The ``mmbench <command>`` names in the first column of the README's command table."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `mmbench ([a-z][a-z-]*)[^`]*` \|", section, re.M)


def test_command_table_lists_every_command():
    commands = readme_commands()
    assert len(commands) >= 8 and len(set(commands)) == len(commands)
    registered = set(typer.main.get_command(app).commands)
    assert set(commands) == registered, "README's command table and the CLI differ"


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_is_real(command: str):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_unknown_command_is_refused():
    assert CliRunner().invoke(app, ["no-such-command", "--help"]).exit_code != 0


def test_version_matches_package():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert mmbench.__version__ in result.output


def test_license_is_apache_2():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def test_citation_cff():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors"):          # CFF 1.2.0's required keys
        assert cff[key]
    assert cff["title"] == "mmbench"
    assert cff["authors"] == [{"name": "mmbench developers"}]
    assert cff["license"] == "Apache-2.0"
    assert cff["version"] == mmbench.__version__
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(cff["date-released"]))
