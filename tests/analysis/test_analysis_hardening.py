"""Broken and hostile result files in `compare`, `regress` and `leaderboard build` (issue #25, part C).

Every case goes through the real command (in-process, :func:`mmbench.cli._invoke`, the function the
``mmbench`` entry point calls), so exit statuses and printed lines are what a user sees.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mmbench.analysis.escape import csv_cell, md, safe_url
from mmbench.errors import DataError
from mmbench.results.records import UnsafeNameError, check_name, read_json_object
from result_files import SUITE, make_tree, mmbench


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path)


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data, indent=2) + "\n")


def test_compare_refuses_a_truncated_task_result(tree):
    path = tree["b"] / "beta_task1.json"
    path.write_bytes(path.read_bytes()[:200])
    rc, out, err = mmbench("compare", tree["a"], tree["b"], "--resamples", 200)
    assert rc == 1 and "Traceback" not in err
    assert f"{path}: truncated" in err and "error: " in err
    # leaving the broken task out compares the others and says which file was passed over
    rc, out, err = mmbench("compare", tree["a"], tree["b"], "--resamples", 200, "-t", "alpha_task0,gamma_task2")
    assert rc == 0 and f"warning: {path}: truncated" in err


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.update(main_score="0.5"), "(field 'main_score'): expected a number in [0, 1], found '0.5'"),
    (lambda d: d.update(main_score=float("inf")), "(field 'main_score'): expected a number in [0, 1], found inf"),
    (lambda d: d.pop("main_metric"), "(field 'main_metric'): missing; expected a string"),
    (lambda d: d.update(provenance=[1]), "(field 'provenance'): expected an object, found array"),
    (lambda d: d["task"].update(name="other_task"), "the record is task 'other_task', its file is named"),
])
def test_a_wrong_field_is_named(tree, mutate, expected):
    path = tree["a"] / "gamma_task2.json"
    _edit(path, mutate)
    for args in (("compare", tree["a"], tree["b"], "--resamples", 200),):
        rc, _, err = mmbench(*args)
        assert rc == 1 and f"{path}" in err and expected in err, err
    rc, out, _ = mmbench("regress", tree["a"], "--baseline", tree["baseline"])
    assert rc == 1 and "gamma_task2: CHANGED" in out and "unreadable:" in out and expected in " ".join(out.split())


@pytest.mark.parametrize("content, expected", [
    (b"[1, 2]", "expected a JSON object (a task result), found array"),
    (b"", "empty file"),
    (b'\xff{"schema_version": 1}', "not UTF-8 (byte 0"),
    (b'{"schema_version": 1, "schema_version": 1, "task": {}}', "duplicate key 'schema_version'"),
    (b"[" * 100_000, "nested too deeply"),
    (b'{"main_score": 1' + b"0" * 5000 + b"}", "expected a JSON task result"),
])
def test_unreadable_json_is_one_named_error(tree, content, expected):
    path = tree["b"] / "alpha_task0.json"
    path.write_bytes(content)
    rc, _, err = mmbench("compare", tree["a"], tree["b"], "--resamples", 200)
    assert rc == 1 and "Traceback" not in err
    assert f"{path}" in err and expected in err, err


def test_a_bom_and_crlf_change_nothing(tree):
    rc, before, _ = mmbench("compare", tree["a"], tree["b"], "--resamples", 200, "--format", "json")
    path = tree["b"] / "alpha_task0.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    tsv = tree["b"] / "alpha_task0.per_query.tsv"
    tsv.write_bytes(tsv.read_bytes().replace(b"\n", b"\r\n"))
    rc2, after, _ = mmbench("compare", tree["a"], tree["b"], "--resamples", 200, "--format", "json")
    assert rc == rc2 == 0 and json.loads(before)["rows"] == json.loads(after)["rows"]


def test_per_query_file_problems_are_named(tree):
    tsv = tree["b"] / "beta_task1.per_query.tsv"
    lines = tsv.read_text().splitlines()
    tsv.write_text("\n".join([*lines, lines[1]]) + "\n")          # a query twice
    rc, _, err = mmbench("compare", tree["a"], tree["b"], "--resamples", 200)
    assert rc == 1 and f"{tsv}:{len(lines) + 1}: query" in err and "appears twice" in err
    tsv.write_bytes("\n".join(lines).encode()[:-3])              # truncated
    rc, _, err = mmbench("compare", tree["a"], tree["b"], "--resamples", 200)
    assert rc == 1 and "truncated" in err
    tsv.write_text("\n".join([lines[0], lines[1].replace("\t0\t", "\tnan\t").replace("\t1\t", "\tnan\t")]) + "\n")
    rc, _, err = mmbench("compare", tree["a"], tree["b"], "--resamples", 200)
    assert rc == 1 and "expected a number in [0, 1], found 'nan'" in err


def test_leaderboard_warns_about_a_broken_task_and_names_the_missing_ones(tree, tmp_path):
    broken = tree["b"] / "beta_task1.json"
    broken.write_text('{"schema_version": 1, "task": {"name": "beta_task1"}, "main_metric": "hit@5", "main_score": "high"}')
    (tree["b"] / "gamma_task2.json").unlink()
    _edit(tree["b"] / "summary.json", lambda d: d.update(missing_tasks=["gamma_task2"], complete=False))
    out = tmp_path / "boards"
    rc, stdout, err = mmbench("leaderboard", "build", "-r", tree["results"], "-o", out, "--no-reported")
    assert rc == 0 and "Traceback" not in err
    warning = next(line for line in err.splitlines() if line.startswith("warning: model-b"))
    assert "has 1/3 tasks of synth-suite" in warning
    assert f"beta_task1: {broken} (field 'main_score'): expected a number in [0, 1], found 'high'" in warning
    assert "gamma_task2: not run (summary.json lists it among missing_tasks" in warning
    assert "– (1/3 tasks)" in (out / f"{SUITE}.md").read_text()


def test_leaderboard_leaves_out_a_folder_with_nothing_readable(tree, tmp_path):
    for p in tree["b"].glob("*.json"):
        if p.name != "summary.json":
            p.write_text("{")
    rc, _, err = mmbench("leaderboard", "build", "-r", tree["results"], "-o", tmp_path / "o", "--no-reported")
    assert rc == 0 and err.count("warning: left out (no readable task result in its folder)") == 3
    assert "model-b" not in (tmp_path / "o" / f"{SUITE}.csv").read_text()


@pytest.mark.parametrize("suite", ["../../x", "/tmp/evil", "a/b", "..", "a\\b", "", "x" * 200, "a\x00b"])
def test_a_suite_name_that_would_leave_out_is_an_error(tree, tmp_path, suite):
    for p in tree["a"].glob("*_task*.json"):
        _edit(p, lambda d: d.update(suite=suite))
    (tree["a"] / "summary.json").unlink()
    out = tmp_path / "nest" / "boards"
    rc, _, err = mmbench("leaderboard", "build", "-r", tree["results"], "-o", out, "--no-reported")
    assert rc == 1 and "Traceback" not in err
    assert "(field 'suite')" in err and str(tree["a"]) in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json", "results"]
    assert not Path("/tmp/evil.md").exists()


def test_summary_suite_and_user_names_are_checked(tree, tmp_path):
    for p in tree["a"].glob("*_task*.json"):
        _edit(p, lambda d: d.pop("suite"))
    _edit(tree["a"] / "summary.json", lambda d: d.update(suite="../up"))
    rc, _, err = mmbench("leaderboard", "build", "-r", tree["results"], "-o", tmp_path / "o", "--no-reported")
    assert rc == 1 and f"{tree['a'] / 'summary.json'} (field 'suite')" in err
    rc, _, err = mmbench("leaderboard", "build", "-r", tree["results"], "-o", tmp_path / "o", "--name", "../n")
    assert rc == 1 and "--name '../n'" in err


def test_hostile_names_are_escaped_in_every_board(tree, tmp_path):
    evil = '=HYPERLINK("http://x")|<script>alert(1)</script>&[a](javascript:b)'
    for p in tree["b"].glob("*_task*.json"):
        _edit(p, lambda d: d["model"].update(name=evil))
    out = tmp_path / "o"
    rc, _, err = mmbench("leaderboard", "build", "-r", tree["results"], "-o", out, "--no-reported")
    assert rc == 0, err
    board = (out / f"{SUITE}.md").read_text()
    assert "<script>" not in board and "&lt;script&gt;" in board and "\\|" in board and "[a](javascript" not in board
    row = next(r for r in board.splitlines() if "HYPERLINK" in r)
    assert row.count(" | ") == board.splitlines()[4].count(" | ")            # the cell did not split the row
    html = (out / f"{SUITE}.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)" in html
    with open(out / f"{SUITE}.csv", newline="") as f:
        models = [r["model"] for r in csv.DictReader(f)]
    assert "'" + evil in models and not any(m.startswith(("=", "+", "-", "@")) for m in models)
    # compare's markdown and table: the same name, escaped; rich markup in it does not break the table
    _edit(tree["a"] / "alpha_task0.json", lambda d: None)
    for p in tree["a"].glob("*_task*.json"):
        _edit(p, lambda d: d["model"].update(name="[/]oops[bold]"))
    rc, stdout, err = mmbench("compare", tree["a"], tree["b"], "--resamples", 200)
    assert rc == 0 and "[/]oops[bold]" in stdout, err
    rc, stdout, err = mmbench("compare", tree["a"], tree["b"], "--resamples", 200, "--format", "markdown")
    assert rc == 0 and "<script>" not in stdout and "&lt;script&gt;" in stdout


def test_regress_names_a_broken_baseline(tree):
    base = tree["baseline"]
    data = json.loads(base.read_text())
    data["tasks"]["beta_task1"]["per_query"]["hit@5"]["q1:3"] = "1"
    base.write_text(json.dumps(data))
    rc, _, err = mmbench("regress", tree["a"], "--baseline", base)
    assert rc == 1 and "(field 'tasks.beta_task1.per_query.hit@5'): query 'q1:3': expected a number" in err
    base.write_text(json.dumps(data)[:-40])
    rc, _, err = mmbench("regress", "--baseline", base, "-r", tree["results"])
    assert rc == 1 and f"{base}: truncated" in err and "Traceback" not in err
    base.write_text("[]")
    rc, _, err = mmbench("regress", tree["a"], "--baseline", base, "--update")
    assert rc == 0 and "warning: the old baseline cannot be read, it is replaced" in err
    assert json.loads(base.read_text())["tasks"]


def test_escape_helpers():
    assert md("a|b<c>&d*e`f[g]\\h\ni") == "a\\|b&lt;c&gt;&amp;d\\*e\\`f\\[g\\]\\\\h i"
    assert [csv_cell(v) for v in ("=1", "+1", "-x", "@a", "\tx", "\rx", "-", "ok", 1.5, -2)] == \
        ["'=1", "'+1", "'-x", "'@a", "'\tx", "'\rx", "-", "ok", 1.5, -2]
    assert safe_url("https://a.b/c") == "https://a.b/c" and safe_url("javascript:alert(1)") == ""
    assert safe_url("https://a.b/c) x") == ""
    for ok in ("mbeir-mini", "rerank=bge__top10", "a.b"):
        assert check_name(Path("r.json"), "suite", ok) == ok
    with pytest.raises(UnsafeNameError, match="is an absolute path"):
        check_name(Path("r.json"), "suite", "C:evil")


def test_read_json_object_names_truncation_position(tmp_path):
    p = tmp_path / "r.json"
    p.write_text('{"a": [1, 2')
    with pytest.raises(DataError, match=r"r\.json: truncated: the JSON ends at line 1"):
        read_json_object(p, what="task result")
    p.write_text('{"a": [1, 0.')
    with pytest.raises(DataError, match=r"r\.json: truncated"):
        read_json_object(p, what="task result")
    p.write_text('{"a": 1,, "b": 2}\n')
    with pytest.raises(DataError, match=r"r\.json:1: invalid JSON \(Expecting property name"):
        read_json_object(p, what="task result")
