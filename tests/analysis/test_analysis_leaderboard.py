"""`mmbench leaderboard build`: published numbers as data, md/csv/html, and the HTML in headless Chromium."""

import csv
import re
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pytest

from analysis_runs import DEFAULT_MODEL, cli, needs_stamps, real_runs
from mmbench.analysis.leaderboard import DEFAULT_REPORTED, load_reported, rank_intervals

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
UNIIR_ORDER = ["visualnews_task0", "mscoco_task0", "fashion200k_task0", "webqa_task1", "edis_task2", "webqa_task2",
               "visualnews_task3", "mscoco_task3", "fashion200k_task3", "nights_task4", "oven_task6", "infoseek_task6",
               "fashioniq_task7", "cirr_task7", "oven_task8", "infoseek_task8"]


def test_reported_numbers_are_complete_and_consistent():
    data = tomllib.loads(DEFAULT_REPORTED.read_text())
    rows = data["row"]
    assert len(rows) == 23
    for row in rows:
        assert list(row["scores"]) == UNIIR_ORDER, row["name"]
        assert row["pool"] in ("local", "global") and row["suite"] == f"mbeir-{row['pool']}"
        assert row["url"].startswith("https://") and row["source"]
        # the printed average matches the per-task values (transcription check)
        assert np.mean(list(row["scores"].values())) == pytest.approx(row["average"], abs=0.051), row["name"]
    by = {(r["name"], r["pool"]): r for r in rows}
    assert by[("UniIR CLIP_SF", "global")]["average"] == 48.9 and by[("UniIR CLIP_SF", "local")]["average"] == 50.6
    assert by[("MM-Embed", "global")]["average"] == 52.7 and by[("MM-Embed", "global")]["scores"]["webqa_task1"] == 95.9
    assert by[("UniIR CLIP_SF (pyserini 2CR)", "global")]["scores"]["mscoco_task0"] == 71.7
    assert by[("UniIR BLIP_FF", "global")]["scores"]["cirr_task7"] == 51.4
    # the trec-recall reproduction is data but not on the hit@k boards
    assert any("trec recall" in r["name"] for r in rows)
    assert not any("trec recall" in e.model for e in load_reported())


def test_rank_intervals():
    m = np.array([[90.0, 90, 90, 90], [50, 50, 50, 50], [51, 49, 52, 47.9]])
    point, low, high = rank_intervals(m, n_resamples=500)
    assert point.tolist() == [1, 2, 3]
    assert low[0] == high[0] == 1                      # clearly first
    assert low[1] == 2 and high[1] == 3 and low[2] == 2 and high[2] == 3    # not separable


def _dom(url: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               f"--user-data-dir={profile}", "--dump-dom", url],
                              capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _models(dom: str) -> list[str]:
    body = dom[dom.index("<tbody>"):dom.index("</tbody>")]
    return re.findall(r'<tr class="(?:ours|reported)" data-model="([^"]*)"', body)


@pytest.fixture(scope="module")
def boards(tmp_path_factory):
    if not Path("/usr/share/tuxpaint/stamps").is_dir():
        pytest.skip("needs Debian's tuxpaint-stamps-default (make setup installs it)")
    runs = real_runs(tmp_path_factory)
    out = tmp_path_factory.mktemp("boards")
    cli("leaderboard", "build", "--results", runs["results"], "--out", out)
    cli("leaderboard", "build", "--results", runs["results"], "--out", out, "--suite", "mbeir-local,mbeir-global")
    return out


@needs_stamps
@pytest.mark.slow
def test_build_writes_md_csv_html_with_our_runs_and_reported_rows(boards):
    for name in ("mbeir-mini", "mbeir-local", "mbeir-global"):
        for ext in ("md", "csv", "html"):
            assert (boards / f"{name}.{ext}").stat().st_size > 200
    mini = list(csv.DictReader((boards / "mbeir-mini.csv").open()))
    default = [r for r in mini if r["model"] == DEFAULT_MODEL][0]
    assert float(default["tuxpaint_task1"]) == pytest.approx(39.3939, abs=1e-3) and default["kind"] == "ours"
    assert float(default["average"]) == pytest.approx(100 * np.mean([0.294964, 0.393939, 0.273333, 0.836667]), abs=1e-3)
    minilm = [r for r in mini if r["model"] == "minilm"][0]
    assert minilm["average"] == "" and minilm["tasks_done"] == "1/4"      # incomplete: no average, no rank
    glob = list(csv.DictReader((boards / "mbeir-global.csv").open()))
    assert glob[0]["model"] == "MM-Embed" and glob[0]["kind"] == "reported: model card"
    assert all(r["kind"].startswith("reported") for r in glob) and all(r["pool"] == "global" for r in glob)
    md = (boards / "mbeir-local.md").read_text()
    assert "**reported** (paper)" in md and "UniIR CLIP_SF" in md and "hit@10" in md
    html = (boards / "mbeir-mini.html").read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "<script src" not in html
    assert "config_hash" in html and "<svg" in html


@needs_stamps
@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make setup installs it)")
def test_html_renders_and_sorts_in_headless_chromium(boards):
    url = (boards / "mbeir-local.html").as_uri()
    dom = _dom(url)
    assert 'data-ready="1"' in dom                         # the inline script ran
    initial = _models(dom)
    assert len(initial) == 8 and initial[0] == "UniIR CLIP_SF"
    # sort by a task column ascending via the hash, and by clicking the average header twice (desc, then asc)
    dom = _dom(url + "#sort=task:cirr_task7:asc")
    assert 'data-sort-key="task' in dom
    cirr = _models(dom)
    values = {"UniIR CLIP_SF": 44.6, "UniIR CLIP_SF (pyserini 2CR)": 45.3, "UniIR BLIP_FF": 52.2,
              "UniIR BLIP_FF (pyserini 2CR)": 50.3, "Zero-shot SigLIP": 22.7, "Zero-shot CLIP-L": 13.2,
              "Zero-shot BLIP": 10.6, "Zero-shot BLIP2": 11.8}
    assert cirr == sorted(values, key=values.get)
    dom = _dom(url + "#click=average,average")
    assert 'data-sort-dir="asc"' in dom and 'aria-sort="ascending"' in dom
    assert _models(dom) == initial[::-1]
    dom = _dom(url + "#click=model")
    assert _models(dom) == sorted(initial, key=str.lower)
    # our runs: the ours badge, provenance tooltip, incomplete rows sort last
    dom = _dom((boards / "mbeir-mini.html").as_uri() + "#sort=average:asc")
    assert _models(dom) == [DEFAULT_MODEL, "minilm"]
    assert 'class="badge ours"' in dom and "config_hash" in dom


LAYOUT_PROBE = """<script>window.addEventListener('load', function(){
  var box = document.querySelector('div.scroll'), root = document.documentElement;
  document.body.setAttribute('data-page-width', root.scrollWidth);
  document.body.setAttribute('data-box-width', box.clientWidth);
  document.body.setAttribute('data-table-width', box.scrollWidth);
  var cut = Array.prototype.filter.call(document.querySelectorAll('svg text, th'), function(t){
    var r = t.getBoundingClientRect(); return r.left < 0; });
  document.body.setAttribute('data-cut', cut.length);
});</script>"""


@needs_stamps
@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make setup installs it)")
def test_page_reads_like_the_papers_tables_in_a_1400px_window(boards, tmp_path):
    """M-BEIR names grouped by task type, provenance as text, no empty published cells, and a page that
    fits 1400 px (the table scrolls in its box): measured in headless Chromium, with a screenshot."""
    page = (boards / "mbeir-local.html").read_text()
    head = page[page.index("<thead>"):page.index("</thead>")]
    assert ">q_t → c_i</th>" in head and ">(q_i,q_t) → (c_i,c_t)</th>" in head
    assert "VisualNews<br>" in head and "visualnews_task0 (" not in head
    body = page[page.index("<tbody>"):page.index("</tbody>")]
    assert not re.search(r"<td[^>]*>–", body)     # published rows: every cell filled (no nDCG@10 column here)
    assert 'class="prov"' in page and "arxiv.org" in page[page.index('class="prov"'):]      # provenance as text
    md = (boards / "mbeir-local.md").read_text()
    assert "VisualNews q_t → c_i<br>hit@5" in md and "nDCG@10" not in md
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", LAYOUT_PROBE + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1400,1000"]
        dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=90).stdout
        shot = tmp_path / "mbeir-local-1400.png"
        subprocess.run([*flags, f"--screenshot={shot}", probe.as_uri()], capture_output=True, text=True, timeout=90)
    page_w, box_w, table_w, cut = (int(re.search(rf'data-{k}="(\d+)"', dom).group(1))
                                   for k in ("page-width", "box-width", "table-width", "cut"))
    assert page_w <= 1400 and box_w <= 1400 - 2 * 24          # the page does not scroll sideways
    assert table_w >= box_w and cut == 0                       # the table scrolls inside its box; nothing cut
    from PIL import Image

    assert Image.open(shot).size == (1400, 1000)
