"""`mmbench inspect`: the failure gallery on real runs (mbeir-mini against its global pool), in headless
Chromium with a screenshot; the modality-bias numbers in the record, the gallery and the leaderboard."""

from __future__ import annotations

import csv
import gzip
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from analysis_runs import cli, needs_stamps, real_runs
from mmbench.analysis.gallery_html import render
from mmbench.analysis.inspect import Gallery, Hit, Item, Outcome, QueryView, build_gallery, modality_bias

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TASKS = ["tuxpaint_task0", "tuxpaint_task1", "tuxpaint_task3", "tuxpaint_task4"]
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make setup installs it)")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The shared local mbeir-mini run, the same model on mbeir-mini-global (its own output folder, the
    shared embedding cache: no encoding), and the galleries of the global run against the local one."""
    if not Path("/usr/share/tuxpaint/stamps").is_dir():
        pytest.skip("needs Debian's tuxpaint-stamps-default (make setup installs it)")
    shared = real_runs(tmp_path_factory)
    out = tmp_path_factory.mktemp("inspect")
    cli("run", "--suite", "mbeir-mini-global", "--output", out / "results", env=shared["env"])
    (model,) = (out / "results").iterdir()
    (rev,) = model.iterdir()
    glob = rev / "mbeir-mini-global"
    proc = cli("inspect", glob, "--against", shared["default"], "--limit", "40", env=shared["env"])
    assert "warning" not in proc.stderr, proc.stderr              # the data is the data the runs read
    return {"local": shared["default"], "global": glob, "env": shared["env"], "out": out, "stdout": proc.stdout}


def _page(runs, task: str) -> str:
    return (runs["global"] / "inspect" / f"{task}.html").read_text(encoding="utf-8")


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr class="q"[^>]*>', page)


@needs_stamps
@pytest.mark.slow
def test_one_self_contained_page_per_task(runs):
    for task in TASKS:
        assert f"{task}.html" in runs["stdout"]
        page = _page(runs, task)
        assert page.count("data:image/jpeg;base64,") >= 1                 # thumbnails embedded
        outside = re.findall(r'(?:src|href)\s*=\s*"(?!data:|#)[^"]*"', page) + re.findall(r"url\((?![\"']?data:)", page)
        assert outside == [], outside[:3]                                   # nothing loaded from elsewhere
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)
        assert len(page) < 2_000_000
        # 40 worst, plus the queries whose outcome changed against the local run
        rows = _rows(page)
        assert 40 <= len(rows) <= 80
        assert "--limit 40" in page


@needs_stamps
@pytest.mark.slow
def test_queries_worst_first_and_outcomes_match_the_per_query_file(runs):
    page = _page(runs, "tuxpaint_task0")
    firsts = [r for r in re.findall(r'data-first="(\d*)"', page)]
    ranks = [float("inf") if f == "" else int(f) for f in firsts]
    assert ranks == sorted(ranks, reverse=True)                            # misses (no positive) first
    # a row is a miss exactly when the per-query hit@5 of the run is 0
    per_query = {}
    lines = (runs["global"] / "tuxpaint_task0.per_query.tsv").read_text().splitlines()
    col = lines[0].split("\t").index("hit@5")
    for line in lines[1:]:
        parts = line.split("\t")
        per_query[parts[0]] = float(parts[col])
    for qid, miss in re.findall(r'<tr class="q" data-qid="([^"]*)" data-miss="(\d)"', page):
        assert per_query[qid] == (0.0 if miss == "1" else 1.0), qid


@needs_stamps
@pytest.mark.slow
def test_changes_against_the_local_run(runs):
    """The global pool adds captions to an image task: queries change outcome against the local run, and
    the counts on the page are those of the per-query files."""
    g = build_gallery(runs["global"], "tuxpaint_task0", against=runs["local"], limit=10)
    glob = {q: v for q, v in _per_query(runs["global"], "tuxpaint_task0").items()}
    local = _per_query(runs["local"], "tuxpaint_task0")
    expect = {"hit→miss": sum(glob[q] == 1 and local[q] == 0 for q in glob),
              "miss→hit": sum(glob[q] == 0 and local[q] == 1 for q in glob)}
    assert expect["miss→hit"] > 0
    assert {k: g.counts[k] for k in expect} == expect
    assert all(v.change in ("hit→miss", "miss→hit", "rank moved", "same") for v in g.queries)
    changed = [v for v in g.queries if v.change != "same"]
    assert len(changed) >= min(10, sum(g.counts[c] for c in ("hit→miss", "miss→hit", "rank moved")))


def _per_query(folder: Path, task: str, metric: str = "hit@5") -> dict[str, float]:
    lines = (folder / f"{task}.per_query.tsv").read_text().splitlines()
    col = lines[0].split("\t").index(metric)
    return {line.split("\t")[0]: float(line.split("\t")[col]) for line in lines[1:]}


@needs_stamps
@pytest.mark.slow
def test_without_wrong_modality_equals_the_local_pool_score(runs):
    """On mbeir-mini the global pool's candidates of a task's target modality are exactly its local pool
    (same embeddings): with wrong-modality candidates removed, the global run scores what the local run
    scores, wherever no query's filtered row is short (the exactness condition of metrics.modality)."""
    checked = 0
    for task in TASKS:
        g = json.loads((runs["global"] / f"{task}.json").read_text())
        loc = json.loads((runs["local"] / f"{task}.json").read_text())
        wo = g["modality_report"]["without_wrong_modality"]
        assert loc["modality_report"]["without_wrong_modality"]["gap"] == 0.0       # one modality: no gap
        assert wo["gap"] == pytest.approx(wo["main_score"] - g["main_score"], abs=2e-6) and wo["gap"] >= 0
        if wo["short_queries"] == 0:
            assert wo["metrics"] == loc["metrics"], task
            checked += 1
        else:                                     # a lower bound there
            assert wo["main_score"] <= loc["main_score"] + 1e-9
        bias = modality_bias(g)
        assert bias["wrong_share"] == g["modality_report"]["at"]["5"]["wrong_modality_share"]
        assert modality_bias(loc) is None                                     # local pool: no bias columns
        page = _page(runs, task)
        assert f'<b id="without-wrong">{100 * wo["main_score"]:.1f}</b>' in page and 'id="modality-plot"' in page
    assert checked >= 2


@needs_stamps
@pytest.mark.slow
def test_reads_plain_and_gzip_run_files_alike(runs, tmp_path):
    plain = shutil.copytree(runs["global"], tmp_path / "plain", ignore=shutil.ignore_patterns("inspect"))
    rec_path = plain / "tuxpaint_task1.json"
    rec = json.loads(rec_path.read_text())
    name = rec["files"]["run"]
    if name.endswith(".gz"):                      # rewrite as a plain .trec (what --run-format trec writes)
        (plain / name[:-3]).write_bytes(gzip.decompress((plain / name).read_bytes()))
        (plain / name).unlink()
        rec["files"]["run"] = name[:-3]
    else:
        (plain / f"{name}.gz").write_bytes(gzip.compress((plain / name).read_bytes()))
        (plain / name).unlink()
        rec["files"]["run"] = f"{name}.gz"
    rec["files"].pop("run_bytes", None)
    rec_path.write_text(json.dumps(rec))
    a = build_gallery(runs["global"], "tuxpaint_task1", limit=30)
    b = build_gallery(plain, "tuxpaint_task1", limit=30)
    assert [(v.query.id, v.outcome.first_rank, [(h.id, h.score) for h in v.outcome.top]) for v in a.queries] == \
           [(v.query.id, v.outcome.first_rank, [(h.id, h.score) for h in v.outcome.top]) for v in b.queries]


@needs_stamps
@pytest.mark.slow
def test_changed_data_is_a_warning_on_the_page(runs, tmp_path):
    moved = shutil.copytree(runs["local"], tmp_path / "run", ignore=shutil.ignore_patterns("inspect"))
    rec = json.loads((moved / "tuxpaint_task4.json").read_text())
    rec["provenance"]["data_fingerprints"]["qrels"] = "0" * 64
    (moved / "tuxpaint_task4.json").write_text(json.dumps(rec))
    proc = cli("inspect", moved, "--task", "tuxpaint_task4", "--limit", "5", env=runs["env"])
    assert proc.stderr.count("warning:") == 1 and "fingerprints differ" in proc.stderr
    assert "fingerprints differ" in (moved / "inspect" / "tuxpaint_task4.html").read_text()


@needs_stamps
@pytest.mark.slow
def test_unknown_task_and_bad_folder_are_one_line_errors(runs, tmp_path):
    proc = cli("inspect", runs["global"], "--task", "no_such_task", "--out", tmp_path, env=runs["env"], check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "no_such_task" in proc.stderr and "tuxpaint_task0" in proc.stderr
    proc = cli("inspect", tmp_path / "missing", env=runs["env"], check=False)
    assert proc.returncode == 1 and "not a folder" in proc.stderr


@needs_stamps
@pytest.mark.slow
def test_leaderboard_links_to_the_gallery_and_shows_the_bias_columns(runs, tmp_path):
    board = tmp_path / "boards"
    cli("leaderboard", "build", "--results", runs["out"] / "results", "--out", board, "--no-reported", env=runs["env"])
    html = (board / "mbeir-mini-global.html").read_text()
    links = re.findall(r'<a class="gallery" href="([^"]+)"', html)
    assert len(links) == 4
    from urllib.parse import unquote

    assert all((board / unquote(h)).resolve().is_file() for h in links)
    row = next(csv.DictReader((board / "mbeir-mini-global.csv").open()))
    g = [modality_bias(json.loads((runs["global"] / f"{t}.json").read_text())) for t in TASKS]
    assert float(row["wrong_modality_avg"]) == pytest.approx(100 * sum(b["wrong_share"] for b in g) / 4, abs=1e-3)
    assert float(row["without_wrong_modality_avg"]) == pytest.approx(100 * sum(b["without"] for b in g) / 4, abs=1e-3)
    assert "avg w/o wrong modality" in (board / "mbeir-mini-global.md").read_text()


def _chromium(url: str, *extra: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               "--hide-scrollbars", "--window-size=1400,1200", f"--user-data-dir={profile}", *extra, url],
                              capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _visible(dom: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r'<tr class="q" data-qid="([^"]*)"[^>]*>', dom) if " hidden" not in m.group(0)]


@needs_stamps
@pytest.mark.slow
@needs_chromium
def test_gallery_renders_and_filters_in_headless_chromium(runs, tmp_path):
    # every query of the task on one page (hits too), against the local run
    cli("inspect", runs["global"], "--task", "tuxpaint_task0", "--against", runs["local"], "--limit", "300",
        "--out", tmp_path, env=runs["env"])
    path = tmp_path / "tuxpaint_task0.html"
    page = path.read_text()
    rows = _rows(page)
    misses = [r for r in rows if 'data-miss="1"' in r]
    wrong = [r for r in rows if 'data-wrongmod="1"' in r]
    changed = [r for r in rows if 'data-change="' in r and 'data-change="same"' not in r]
    assert 0 < len(misses) < len(rows) and 0 < len(changed) < len(rows)
    dom = _chromium(path.as_uri(), "--dump-dom")
    assert 'data-ready="1"' in dom and f'data-visible="{len(rows)}"' in dom and len(_visible(dom)) == len(rows)
    dom = _chromium(path.as_uri() + "#click=f-miss", "--dump-dom")
    assert len(_visible(dom)) == len(misses) and f'data-visible="{len(misses)}"' in dom
    dom = _chromium(path.as_uri() + "#click=f-changed", "--dump-dom")
    assert len(_visible(dom)) == len(changed)
    dom = _chromium(path.as_uri() + "#click=f-miss,f-wrong", "--dump-dom")
    both = [r for r in misses if 'data-wrongmod="1"' in r]
    assert len(_visible(dom)) == len(both) and len(wrong) >= len(both)
    # the thumbnails are drawn: a screenshot has the page's images (many colours), not a blank page
    shot = tmp_path / "gallery.png"
    _chromium(path.as_uri(), f"--screenshot={shot}")
    from PIL import Image

    im = Image.open(shot).convert("RGB")
    assert im.size == (1400, 1200)
    assert len(im.getcolors(maxcolors=1 << 20) or []) > 2000


def test_page_escapes_every_string_and_marks_rows_for_the_filters():
    """A synthetic gallery (no data, no model): names and texts from a results tree are escaped, the
    rows carry what the filters read, and an image is embedded once however often it is shown."""
    from mmbench.data.types import ImageRef

    img = ImageRef(Path("/nowhere/cat.png"))
    bad = '<script>alert(1)</script>"'
    cands = {"c1": Item("c1", "text", text=bad), "c2": Item("c2", "image", image=img),
             "c3": Item("c3", "image", image=img)}
    queries = [QueryView(Item("q<1>", "text", text=bad, instruction=bad), ["c2"],
                         Outcome(None, [Hit(1, "c1", 0.9, "text", False), Hit(2, "c3", 0.5, "image", False)]),
                         Outcome(2, [Hit(1, "c3", 0.8, "image", False), Hit(2, "c2", 0.7, "image", True)]), "rank moved"),
               QueryView(Item("q2", "text", text="a cat"), ["c2"],
                         Outcome(1, [Hit(1, "c2", 0.9, "image", True)]),
                         Outcome(1, [Hit(1, "c2", 0.9, "image", True)]), "same")]
    g = Gallery("t<x>", bad, Path("/r"), {"pool": "global", "main_score": 0.5, "n_candidates": 3, "modality_report": {
        "target": "image", "at": {"5": {"wrong_modality_share": 0.25, "by_modality": {"image": 0.75, "text": 0.25}}},
        "without_wrong_modality": {"main_score": 0.75, "gap": 0.25, "removed_slots": 1, "short_queries": 0, "depth": 5}}},
        "image", "hit@5", 5, 5, 2, queries, cands, 10, counts={"queries": 2, "misses": 1, "shown": 2},
        against_label="other", against_folder=Path("/o"))
    calls = []

    def thumb(image):
        calls.append(image)
        return "data:image/jpeg;base64,AAAA"

    page = render(g, thumb=thumb)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in page
    assert len(calls) == 1 and page.count("data:image/jpeg;base64,AAAA") == 1     # one image, embedded once
    rows = _rows(page)
    assert len(rows) == 2
    assert 'data-miss="1"' in rows[0] and 'data-wrongmod="1"' in rows[0] and 'data-change="rank moved"' in rows[0]
    assert 'data-miss="0"' in rows[1] and 'data-wrongmod="0"' in rows[1] and 'data-change="same"' in rows[1]
    assert 'id="f-changed"' in page and '<b id="without-wrong">75.0</b>' in page
