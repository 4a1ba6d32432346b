"""Leaderboards from a results tree: ``leaderboards/<name>.md``, ``.csv`` and a self-contained ``.html``.

* One board per suite (``mbeir-mini``, ``mbeir-local``, ``mbeir-global``, ...). A row is a run folder
  (``<model>/<revision>/<suite>``, experiments included) with each task's headline (the paper's
  metric; for M-BEIR UniIR's "Recall@k" = hit@k) x100, the plain mean over the suite's tasks (only
  when the run has them all), the mean nDCG@10, revision and date.
* Published numbers from ``leaderboards/reported.toml`` join the board of their suite (global pool ->
  ``mbeir-global``, local -> ``mbeir-local``), marked "reported" everywhere (badge, CSV column, bar
  colour). Rows whose metric is not hit@k (trec recall) are left off.
* Ranks are significance-aware (style §2.5): besides the rank by average, a 95 % rank interval from a
  bootstrap over tasks (resample the suite's tasks with replacement, re-rank; seed 0) -- rows whose
  intervals overlap are not separable.
* Tasks are named as the M-BEIR/UniIR tables name them (dataset and task type, "VisualNews q_t → c_i"),
  the columns grouped by task type; other tasks by their names. A column a published row cannot fill
  (nDCG@10) is left off a board with published rows.
* Global-pool runs of ours add two modality-bias columns (:data:`BIAS_COLUMNS`): the mean share of
  wrong-modality candidates in each task's top k, and the mean headline with them removed from the
  rankings (the gap the MM-Embed paper closes; :mod:`mmbench.metrics.modality`).
* With ``--efficiency`` (:func:`build`'s ``efficiency``), rows of ours add what the run cost
  (:data:`~mmbench.analysis.efficiency.EFFICIENCY_COLUMNS`: encode items/s, search q/s, single-query
  latency, index bytes, peak memory), from the records' efficiency reports.
* A task cell links to the task's failure gallery when ``mmbench inspect`` wrote one beside the run
  (``<run folder>/inspect/<task>.html``; a relative link).
* The HTML has inline CSS/JS only (no network) and fits a 1400 px window (the table scrolls inside its
  box): a table sortable by clicking any header (or via the URL hash ``#sort=<column-key>:<asc|desc>``),
  the provenance of every row as text under it (config hash, commit, harness version, date; for
  reported rows the source; per-task data fingerprints in the cells' tooltips), and a per-task bar chart
  in inline SVG whose labels are never cut.
"""

from __future__ import annotations

import html
import json
import math
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path

import numpy as np

from mmbench.analysis.compare import RunResults, find_run_folders, load_run, scan_folder
from mmbench.analysis.efficiency import EFFICIENCY_COLUMNS, efficiency_columns
from mmbench.analysis.escape import csv_cell, md, safe_url
from mmbench.analysis.inspect import gallery_page, modality_bias
from mmbench.errors import MmbenchError
from mmbench.results.records import UnsafeNameError, check_name
from mmbench.util.io import atomic_open

DEFAULT_REPORTED = Path(str(files("mmbench.published"))) / "reported.toml"
"""The published numbers: ``leaderboards/reported.toml``, installed as the data package ``mmbench.published``."""
RANK_RESAMPLES = 2000


@dataclass
class Entry:
    model: str
    revision: str
    suite: str
    pool: str
    kind: str                                   # "ours" or "reported: paper|model card|reproduction"
    scores: dict[str, float]                    # task -> headline x100
    metrics: dict[str, str] = field(default_factory=dict)     # task -> headline metric name
    ndcg10: dict[str, float] = field(default_factory=dict)    # task -> ndcg@10 x100 (ours only)
    date: str = ""
    provenance: str = ""                        # tooltip text for the row
    task_provenance: dict[str, str] = field(default_factory=dict)
    source_url: str = ""
    source: str = ""                            # reported rows: the table the numbers come from
    path: str = ""
    config_hash: str = ""
    commit: str = ""
    reported_average: float | None = None
    run: RunResults | None = None               # ours: the run (why a task is missing)
    modality: dict[str, dict] = field(default_factory=dict)   # task -> modality bias (global pool; ours only)
    efficiency: dict[str, dict] = field(default_factory=dict)  # task -> the record's efficiency report (ours only)
    galleries: dict[str, Path] = field(default_factory=dict)  # task -> its `mmbench inspect` page

    @property
    def reported(self) -> bool:
        return self.kind != "ours"


def _short(h) -> str:
    return "-" if not h else str(h)[:12]


def _default_warn(text: str) -> None:
    warnings.warn(text, ResultWarning, stacklevel=3)


class ResultWarning(UserWarning):
    """A result file that cannot be read while reading on is right (one bad task among many)."""


def collect_runs(results: Path, *, warn: Callable[[str], None] | None = None) -> list[Entry]:
    """Every run folder under ``results`` as an :class:`Entry` (scores x100). A folder whose task results
    all cannot be read is left out with a warning per file (``warn``, default :class:`ResultWarning`)."""
    warn = warn or _default_warn
    results = Path(results)
    if not results.is_dir():
        raise MmbenchError(f"{results}: results folder not found")
    entries = []
    for folder in find_run_folders(results):
        found, problems = scan_folder(folder)
        if not found:
            for problem in problems.values():
                warn(f"left out (no readable task result in its folder): {problem}")
            continue
        run = load_run(folder)
        scores, metrics, ndcg, tprov, dates, hashes = {}, {}, {}, {}, [], set()
        modality, galleries, efficiency = {}, {}, {}
        pool, commit, version, dirty = "", "", "", None
        for name, t in run.tasks.items():
            rec = t.record
            prov = rec.get("provenance", {})
            scores[name] = 100 * float(rec["main_score"])
            metrics[name] = rec.get("main_metric", "")
            if "ndcg@10" in rec.get("metrics", {}):
                ndcg[name] = 100 * float(rec["metrics"]["ndcg@10"])
            pool = rec.get("pool", pool)
            bias = modality_bias(rec)
            if bias:
                modality[name] = bias
            if isinstance(rec.get("efficiency"), dict):
                efficiency[name] = rec["efficiency"]
            page = gallery_page(folder, name)
            if page is not None:
                galleries[name] = page
            dates.append(prov.get("date", ""))
            hashes.add(prov.get("config_hash", ""))
            commit, version, dirty = prov.get("commit") or commit, prov.get("harness_version") or version, prov.get("dirty", dirty)
            fp = prov.get("data_fingerprints", {})
            tprov[name] = (f"{name}: {rec.get('main_metric')} = {100 * float(rec['main_score']):.2f}; "
                           f"{rec.get('n_queries')} queries, {rec.get('n_candidates')} candidates ({rec.get('pool')} pool); "
                           f"config_hash {_short(prov.get('config_hash'))}; "
                           + "; ".join(f"{k} sha256 {_short(v)}" for k, v in sorted(fp.items()))
                           + f"; date {prov.get('date', '-')}")
        rel = folder.relative_to(results).as_posix() if folder != results else folder.name
        label = run.name                          # model (+ experiment), from the records
        date = max(dates) if dates else ""
        chash = ",".join(sorted(_short(h) for h in hashes if h))
        text = (f"{run.model} @ {run.revision}" + (f"\nexperiment: {run.experiment}" if run.experiment else "")
                + f"\nresults: {rel}\nconfig_hash: {chash or '-'}\n"
                f"harness {version or '-'}, commit {_short(commit)}{' (dirty)' if dirty else ''}\ndate: {date or '-'}")
        entries.append(Entry(label, run.revision, run.suite, pool, "ours", scores, metrics, ndcg, date, text,
                             tprov, path=rel, config_hash=chash, commit=str(commit or ""), run=run,
                             modality=modality, galleries=galleries, efficiency=efficiency))
    return entries


def load_reported(path: Path = DEFAULT_REPORTED) -> list[Entry]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MmbenchError(f"{path}: cannot read published numbers ({exc})") from None
    out = []
    rows = data.get("row", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise MmbenchError(f"{path}: expected [[row]] tables")
    for i, row in enumerate(rows, 1):
        missing = [k for k in ("name", "pool", "suite", "kind", "source", "metric", "scores") if k not in row]
        if missing:
            raise MmbenchError(f"{path}: row {i} ({row.get('name', '?')}) lacks {', '.join(missing)}")
        wrong = [k for k in ("name", "pool", "suite", "kind", "source", "metric", "url", "table", "note")
                 if k in row and not isinstance(row[k], str)]
        if not isinstance(row["scores"], dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in row["scores"].values()):
            wrong.append("scores (a table of task = number)")
        if "average" in row and not (isinstance(row["average"], (int, float)) and not isinstance(row["average"], bool)):
            wrong.append("average (a number)")
        if wrong:
            raise MmbenchError(f"{path}: row {i} ({row.get('name', '?')}): wrong type of {', '.join(wrong)}")
        if not row["metric"].startswith("hit@k"):
            continue
        text = (f"REPORTED (published, not run by mmbench): {row['name']}\nsource: {row['source']}\n"
                f"url: {row.get('url', '-')}\ntable: {row.get('table', '-')}\npool: {row['pool']}\nmetric: {row['metric']}"
                f"\nprinted average: {row.get('average', '-')}"
                + (f"\nnote: {row['note']}" if row.get("note") else ""))
        scores = {k: float(v) for k, v in row["scores"].items()}
        out.append(Entry(row["name"], "-", row["suite"], row["pool"], f"reported: {row['kind']}", scores,
                         provenance=text, task_provenance={t: f"{t}: {v:.1f} reported ({row.get('table', row['source'])})"
                                                           for t, v in scores.items()},
                         source_url=row.get("url", ""), source=row.get("table", row["source"]),
                         reported_average=row.get("average")))
    return out


def suite_tasks(suite: str, entries: list[Entry]) -> list[str]:
    """The suite's task order from the catalog; else the union of the runs' tasks (sorted)."""
    from mmbench.catalog import suites

    try:
        return list(suites().get(suite).tasks)
    except Exception:                                  # noqa: BLE001 - unknown suite label (e.g. "local")
        return sorted({t for e in entries for t in e.scores})


_QUERY = {"text": "q_t", "image": "q_i"}
_CAND = {"text": "c_t", "image": "c_i"}


def _side(modality: str, names: dict[str, str]) -> str:
    from mmbench.data.types import modality_parts

    parts = sorted(modality_parts(modality))              # ["image", "text"]: M-BEIR writes (q_i,q_t)
    return names[parts[0]] if len(parts) == 1 else "(" + ",".join(names[p] for p in parts) + ")"


@dataclass(frozen=True)
class TaskHeader:
    """How a board names a task: M-BEIR-family tasks as the M-BEIR/UniIR tables do (dataset and task
    type, "VisualNews q_t → c_i", grouped by task type); any other task by its name."""
    task: str
    dataset: str                    # the column's own text
    group: str = ""                 # the task type ("q_t → c_i"); "" for tasks outside M-BEIR's scheme

    @property
    def label(self) -> str:
        return f"{self.dataset} {self.group}" if self.group else self.dataset


def task_headers(tasks: list[str]) -> list[TaskHeader]:
    """One header per task, in the board's order (the catalog's spec decides the M-BEIR name)."""
    from mmbench.catalog import tasks as task_registry

    out = []
    for t in tasks:
        try:
            spec = task_registry().get(t)
        except Exception:                                  # noqa: BLE001 - a task the catalog does not know
            out.append(TaskHeader(t, t))
            continue
        if spec.loader == "mbeir":
            group = f"{_side(spec.query_modality, _QUERY)} → {_side(spec.candidate_modality, _CAND)}"
            out.append(TaskHeader(t, spec.dataset, group))
        else:
            out.append(TaskHeader(t, t))
    return out


def _groups(headers: list[TaskHeader]) -> list[tuple[str, int]]:
    """Runs of consecutive tasks of one type: [(task type, how many)]."""
    out: list[tuple[str, int]] = []
    for h in headers:
        if out and out[-1][0] == h.group:
            out[-1] = (h.group, out[-1][1] + 1)
        else:
            out.append((h.group, 1))
    return out


def rank_intervals(matrix: np.ndarray, *, n_resamples: int = RANK_RESAMPLES, seed: int = 0,
                   confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank by mean over tasks (1 = best; ties share the best rank) and a bootstrap-over-tasks interval.

    ``matrix`` is rows x tasks without missing values.
    """
    n_rows, n_tasks = matrix.shape
    if n_rows == 0:
        empty = np.zeros(0, dtype=int)
        return empty, empty, empty

    def ranks(means: np.ndarray) -> np.ndarray:        # competition ranking, per row of ``means``
        return 1 + (means[..., None, :] > means[..., :, None]).sum(axis=-1)

    point = ranks(matrix.mean(axis=1))
    rng = np.random.Generator(np.random.PCG64(seed))
    idx = rng.integers(0, n_tasks, size=(n_resamples, n_tasks))
    means = matrix[:, idx].mean(axis=2).T              # resamples x rows
    r = ranks(means)
    alpha = (1 - confidence) / 2
    low = np.floor(np.quantile(r, alpha, axis=0)).astype(int)
    high = np.ceil(np.quantile(r, 1 - alpha, axis=0)).astype(int)
    return point, low, high


BIAS_COLUMNS = {"wrong_modality_avg": "wrong modality % (top k)",
                "without_wrong_modality_avg": "avg w/o wrong modality"}
"""Modality-bias columns (global-pool runs of ours only; :func:`mmbench.analysis.inspect.modality_bias`):
the mean over the suite's tasks of the wrong-modality share of the top k (k: each task's headline
cut-off), and of the headline with wrong-modality candidates removed, both x100."""


def _bias_columns(e: Entry, tasks: list[str]) -> dict[str, float]:
    have = [e.modality[t] for t in tasks if t in e.modality]
    if not have or len(have) != len(tasks):
        return dict.fromkeys(BIAS_COLUMNS, math.nan)
    return {"wrong_modality_avg": 100 * float(np.mean([b["wrong_share"] for b in have])),
            "without_wrong_modality_avg": 100 * float(np.mean([b["without"] for b in have]))}


_EXTRA_COLUMNS = {**BIAS_COLUMNS, **EFFICIENCY_COLUMNS}


def build_frame(entries: list[Entry], tasks: list[str], *, efficiency: bool = False):
    """One row per entry, sorted by average (complete rows first), with ranks and rank intervals;
    ``efficiency``: with the columns of :data:`~mmbench.analysis.efficiency.EFFICIENCY_COLUMNS`."""
    import pandas as pd

    rows = []
    for e in entries:
        have = [t for t in tasks if t in e.scores]
        complete = len(have) == len(tasks)
        nd = [e.ndcg10[t] for t in tasks if t in e.ndcg10]
        row = {"model": e.model, "revision": e.revision, "kind": e.kind, "pool": e.pool, "suite": e.suite,
               "average": float(np.mean([e.scores[t] for t in tasks])) if complete else math.nan,
               "tasks_done": f"{len(have)}/{len(tasks)}",
               **{t: e.scores.get(t, math.nan) for t in tasks},
               "ndcg@10_avg": float(np.mean(nd)) if nd and len(nd) == len(tasks) else math.nan,
               **_bias_columns(e, tasks),
               **(efficiency_columns(e.efficiency, tasks) if efficiency else {}),
               "date": e.date, "config_hash": e.config_hash, "commit": e.commit, "results": e.path,
               "source_url": e.source_url, "source": e.source}
        rows.append(row)
    bias = [c for c in BIAS_COLUMNS if any(not math.isnan(r[c]) for r in rows)]
    bias += [c for c in EFFICIENCY_COLUMNS if efficiency and any(not math.isnan(r[c]) for r in rows)]
    df = pd.DataFrame(rows, columns=["model", "revision", "kind", "pool", "suite", "average", "tasks_done", *tasks,
                                     "ndcg@10_avg", *bias, "date", "config_hash", "commit", "results", "source_url", "source"])
    for col in ("rank", "rank_low", "rank_high"):
        df[col] = pd.array([pd.NA] * len(df), dtype="Int64")
    complete = df["average"].notna().to_numpy()
    if complete.any():
        point, low, high = rank_intervals(df.loc[complete, tasks].to_numpy(dtype=float))
        df.loc[complete, "rank"], df.loc[complete, "rank_low"], df.loc[complete, "rank_high"] = point, low, high
    df["_order"] = df["average"].fillna(-1.0)
    df = df.sort_values(["_order", "model"], ascending=[False, True], kind="stable").drop(columns="_order")
    df = df[["rank", "rank_low", "rank_high", *[c for c in df.columns if c not in ("rank", "rank_low", "rank_high")]]]
    return df.reset_index(drop=True)


def _fmt(v, digits: int = 1) -> str:
    if v is None or v is pd_na() or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def pd_na():
    import pandas as pd

    return pd.NA


def _rank_text(row) -> str:
    if row["rank"] is pd_na() or row["rank"] is None or (isinstance(row["rank"], float) and math.isnan(row["rank"])):
        return "–"
    lo, hi = int(row["rank_low"]), int(row["rank_high"])
    return f"{int(row['rank'])} ({lo}–{hi})" if lo != hi else f"{int(row['rank'])}"


def _source(r) -> str:
    """A row's provenance in a few words: the publication of a reported row, else revision and date."""
    if r["kind"] == "ours":
        return f"{r['revision']}, {str(r['date'])[:10] or '–'}"
    return str(r["source"] or r["kind"].split(": ", 1)[-1])


def _has_reported(df) -> bool:
    return bool((df["kind"] != "ours").any())


def to_markdown(df, tasks: list[str], metrics: dict[str, str], *, name: str) -> str:
    headers = task_headers(tasks)
    ndcg = not _has_reported(df)                # a published row has no nDCG@10: the column only without them
    bias = [c for c in _EXTRA_COLUMNS if c in df.columns]
    head = ["rank (95%)", "model", "type", "avg", *[f"{md(h.label)}<br>{md(metrics.get(h.task, ''))}" for h in headers],
            *(["nDCG@10 avg"] if ndcg else []), *[_EXTRA_COLUMNS[c] for c in bias], "source / revision"]
    lines = [f"# Leaderboard: {md(name)}", "",
             "Scores ×100 in each task's headline metric (M-BEIR: UniIR's \"Recall@k\" = hit@k). "
             "*reported* rows are published numbers (`leaderboards/reported.toml`, with sources), not runs of mmbench. "
             "Rank (95%) is a bootstrap-over-tasks rank interval: overlapping intervals are not separable.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(tasks) + 1 + ndcg + len(bias)) + "---|"]
    for _, r in df.iterrows():
        kind = "ours" if r["kind"] == "ours" else f"**reported** ({md(r['kind'].split(': ', 1)[-1])})"
        url = safe_url(r["source_url"])
        model = f"[{md(r['model'])}]({url})" if url else md(r["model"])
        done, total = r["tasks_done"].split("/")
        lines.append("| " + " | ".join([_rank_text(r), model, kind, _fmt(r["average"]) if done == total else f"– ({r['tasks_done']} tasks)",
                                        *[_fmt(r[t]) for t in tasks], *([_fmt(r["ndcg@10_avg"])] if ndcg else []),
                                        *[_fmt(r[c]) for c in bias], md(_source(r))]) + " |")
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:20px} p.note{color:#555;max-width:960px;font-size:13px}
div.scroll{max-width:100%;overflow-x:auto;border:1px solid #ddd}
table.lb{border-collapse:collapse;font-size:12px}
table.lb th,table.lb td{border-bottom:1px solid #ddd;padding:3px 6px;text-align:right;white-space:nowrap}
table.lb th{background:#f4f4f4;user-select:none;vertical-align:bottom}
table.lb th[data-key]{cursor:pointer} table.lb th.group{text-align:center;font-weight:600;border-left:1px solid #ccc}
table.lb th small{font-weight:normal;color:#666} table.lb td.model{white-space:normal;min-width:160px}
table.lb td.source{white-space:normal;min-width:140px;color:#555}
ol.prov{font-size:12px;color:#444;padding-left:20px} ol.prov li{margin:2px 0}
table.lb th.text,table.lb td.text{text-align:left}
table.lb th[aria-sort=ascending]::after{content:" ▲"} table.lb th[aria-sort=descending]::after{content:" ▼"}
tr.reported td{background:#f7f9ff;color:#345} tr.reported td.model{font-style:italic}
span.badge{display:inline-block;font-size:11px;border-radius:3px;padding:0 4px;margin-left:4px}
span.badge.reported{background:#dde6ff;color:#234;border:1px solid #9ab} span.badge.ours{background:#e3f5e1;color:#254;border:1px solid #9b9}
.charts{display:flex;flex-wrap:wrap;gap:18px;margin-top:24px} .chart h3{font-size:13px;margin:4px 0}
.chart svg{max-width:100%;height:auto}
"""

_JS = r"""
(function(){
  var table=document.getElementById('leaderboard'); if(!table) return;
  var body=table.tBodies[0];
  function val(td,type){var v=td.getAttribute('data-v'); if(type==='num'){ if(v===null||v===''||isNaN(parseFloat(v))) return null; return parseFloat(v);} return (v!==null?v:td.textContent).toLowerCase();}
  function sortBy(key,dir){
    var ths=table.tHead.querySelectorAll('th[data-key]'), col=-1, type='num', th=null;
    for(var i=0;i<ths.length;i++){ if(ths[i].getAttribute('data-key')===key){th=ths[i];col=parseInt(th.getAttribute('data-col'),10);type=th.getAttribute('data-type');} ths[i].removeAttribute('aria-sort'); }
    if(col<0) return false;
    var rows=Array.prototype.slice.call(body.rows);
    rows.forEach(function(r,i){r._i=i;});
    rows.sort(function(a,b){
      var x=val(a.cells[col],type), y=val(b.cells[col],type);
      if(x===null&&y===null) return a._i-b._i; if(x===null) return 1; if(y===null) return -1;
      var c = x<y?-1:(x>y?1:0); if(dir==='desc') c=-c; return c!==0?c:a._i-b._i;
    });
    rows.forEach(function(r){body.appendChild(r);});
    th.setAttribute('aria-sort',dir==='asc'?'ascending':'descending');
    table.setAttribute('data-sort-key',key); table.setAttribute('data-sort-dir',dir);
    return true;
  }
  function onClick(ev){
    var th=ev.currentTarget, key=th.getAttribute('data-key');
    var cur=table.getAttribute('data-sort-key')===key?table.getAttribute('data-sort-dir'):null;
    var dir = cur ? (cur==='asc'?'desc':'asc') : (th.getAttribute('data-type')==='num'?'desc':'asc');
    sortBy(key,dir);
  }
  var ths=table.tHead.querySelectorAll('th[data-key]');
  for(var i=0;i<ths.length;i++) ths[i].addEventListener('click',onClick);
  window.mmbenchSort=sortBy;
  // #sort=<key>:<asc|desc> sorts on load; #click=<key>,<key>,... clicks headers in turn (used by the CI test)
  var h=decodeURIComponent(location.hash.replace(/^#/,''));
  h.split('&').forEach(function(part){
    var kv=part.split('='); if(kv.length<2) return;
    if(kv[0]==='sort'){var s=kv[1], i=s.lastIndexOf(':'), d=i>0?s.slice(i+1):'';
      if(d==='asc'||d==='desc') sortBy(s.slice(0,i), d); else sortBy(s, 'desc');}
    if(kv[0]==='click'){kv[1].split(',').forEach(function(k){
      for(var j=0;j<ths.length;j++) if(ths[j].getAttribute('data-key')===k) ths[j].dispatchEvent(new MouseEvent('click',{bubbles:true}));});}
  });
  table.setAttribute('data-ready','1');
})();
"""


def _e(s) -> str:
    return html.escape(str(s), quote=True)


LABEL_CHAR_PX = 6.5          # a generous width of one character at font-size 10 (labels are never cut)


def _svg_chart(df, header: TaskHeader, metric: str) -> str:
    task = header.task
    rows = [(r["model"] + ("" if r["kind"] == "ours" else " (reported)"), float(r[task]), r["kind"] != "ours")
            for _, r in df.iterrows() if not (isinstance(r[task], float) and math.isnan(r[task]))]
    rows.sort(key=lambda x: -x[1])
    bar_h, bar_w = 14, 220
    label_w = 8 + math.ceil(LABEL_CHAR_PX * max([len(label) for label, _, _ in rows] + [10]))
    height = 8 + bar_h * max(1, len(rows))
    top = max([100.0] + [v for _, v, _ in rows])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 50}" height="{height}" role="img" '
             f'aria-label="{_e(task)}">']
    for i, (label, v, rep) in enumerate(rows):
        y = 4 + i * bar_h
        w = max(0.0, v) / top * bar_w
        color = "#8fa6d9" if rep else "#2e8b57"
        style = ' fill-opacity="0.75" stroke="#567" stroke-dasharray="2,1"' if rep else ""
        parts.append(f'<g class="{"reported" if rep else "ours"}"><title>{_e(label)}: {v:.1f}</title>'
                     f'<text x="{label_w - 4}" y="{y + 10}" font-size="10" text-anchor="end">{_e(label)}</text>'
                     f'<rect x="{label_w}" y="{y + 1}" width="{w:.1f}" height="{bar_h - 3}" fill="{color}"{style}/>'
                     f'<text x="{label_w + w + 3:.1f}" y="{y + 10}" font-size="10">{v:.1f}</text></g>')
    parts.append("</svg>")
    return (f'<div class="chart" data-task="{_e(task)}"><h3>{_e(header.label)} ({_e(metric)})</h3>'
            f'{"".join(parts)}</div>')


def _provenance_item(e: "Entry") -> str:
    """A row's provenance as visible text (the same as its tooltip)."""
    lines = [x for x in e.provenance.split("\n") if x]
    head = _e(lines[0]) if lines else _e(e.model)
    if safe_url(e.source_url):
        head += f' (<a href="{_e(safe_url(e.source_url))}">source</a>)'
    return f"<li><b>{_e(e.model)}</b>: " + head + "".join(f"; {_e(x)}" for x in lines[1:]) + "</li>"


def _href(page: Path, links_from: Path) -> str:
    """A relative link from the board's folder to ``page`` (it works wherever the two trees move together)."""
    import os
    from urllib.parse import quote

    return quote(Path(os.path.relpath(Path(page).resolve(), Path(links_from).resolve())).as_posix())


def to_html(df, tasks: list[str], metrics: dict[str, str], entries_by_key: dict, *, name: str,
            links_from: Path | None = None) -> str:
    """The board's page; ``links_from`` (the board's folder) turns a task cell with a failure gallery
    (``<run folder>/inspect/<task>.html``) into a link to it."""
    headers = task_headers(tasks)
    ndcg = not _has_reported(df)                # a published row has no nDCG@10: the column only without them
    grouped = any(h.group for h in headers)
    lead = [("rank", "rank (95%)", "num"), ("model", "model", "text"), ("kind", "type", "text"), ("average", "avg", "num")]
    bias = [c for c in _EXTRA_COLUMNS if c in df.columns]
    tail = [*([("ndcg10", "nDCG@10 avg", "num")] if ndcg else []), *[(c, _EXTRA_COLUMNS[c], "num") for c in bias],
            ("source", "source / revision", "text")]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>mmbench leaderboard: {_e(name)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>mmbench leaderboard: {_e(name)}</h1>",
           '<p class="note">Scores ×100 in each task\'s headline metric (M-BEIR: UniIR\'s "Recall@k" = hit@k); '
           'tasks named as in the M-BEIR tables (q = query, c = candidate; _t text, _i image). '
           '<span class="badge reported">reported</span> rows are published numbers (leaderboards/reported.toml), '
           'not runs of mmbench; <span class="badge ours">ours</span> rows are results in this tree. Where each row '
           'comes from is listed under the table. Rank (95%): bootstrap-over-tasks rank interval; overlapping '
           'intervals are not separable. Click a header to sort.</p>',
           f'<div class="scroll"><table id="leaderboard" class="lb" data-name="{_e(name)}"><thead>']

    def th(col: int, key: str, label: str, typ: str, rowspan: int = 1, title: str = "") -> str:
        span = f' rowspan="{rowspan}"' if rowspan > 1 else ""
        tip = f' title="{_e(title)}"' if title else ""
        return (f'<th data-key="{_e(key)}" data-col="{col}" data-type="{typ}"{span}{tip} '
                f'class="{"text" if typ == "text" else "num"}">{label}</th>')

    rows = 2 if grouped else 1
    first = [th(i, k, _e(lbl), typ, rows) for i, (k, lbl, typ) in enumerate(lead)]
    task_cells = [th(len(lead) + i, f"task:{h.task}", f"{_e(h.dataset)}<br><small>{_e(metrics.get(h.task, ''))}</small>",
                     "num", title=f"{h.task}: {h.label} ({metrics.get(h.task, '')})") for i, h in enumerate(headers)]
    tail_cells = [th(len(lead) + len(tasks) + i, k, _e(lbl), typ, rows) for i, (k, lbl, typ) in enumerate(tail)]
    if grouped:
        groups = [f'<th class="group" colspan="{n}">{_e(g) or "&nbsp;"}</th>' for g, n in _groups(headers)]
        out.append("<tr>" + "".join(first + groups + tail_cells) + "</tr>")
        out.append("<tr>" + "".join(task_cells) + "</tr>")
    else:
        out.append("<tr>" + "".join(first + task_cells + tail_cells) + "</tr>")
    out.append("</thead><tbody>")
    shown = []
    for _, r in df.iterrows():
        e = entries_by_key[(r["model"], r["revision"], r["kind"], r["results"])]
        shown.append(e)
        rep = r["kind"] != "ours"
        rank_v = "" if _fmt(r["rank"]) == "–" else str(int(r["rank"]))
        avg = r["average"]
        avg_v = "" if math.isnan(avg) else f"{avg:.4f}"
        avg_title = f"plain mean over {len(tasks)} tasks" if avg_v else f"incomplete: {r['tasks_done']} tasks"
        badge = "reported" if rep else "ours"
        kind = "ours" if not rep else r["kind"].split(": ", 1)[-1]
        cells = [f'<td data-v="{rank_v}" title="{_e("rank by average; 95% interval over tasks: " + _rank_text(r))}">{_e(_rank_text(r))}</td>',
                 f'<td class="text model" data-v="{_e(r["model"])}" title="{_e(e.provenance)}">{_e(r["model"])}'
                 f'<span class="badge {badge}">{badge}</span></td>',
                 f'<td class="text" data-v="{_e(r["kind"])}">{_e(kind)}</td>',
                 f'<td data-v="{avg_v}" title="{_e(avg_title)}">{_e(_fmt(avg) if avg_v else "– (" + r["tasks_done"] + ")")}</td>']
        for t in tasks:
            v = r[t]
            v_attr = "" if isinstance(v, float) and math.isnan(v) else f"{v:.4f}"
            text = _e(_fmt(v))
            if t in e.galleries and links_from is not None:       # the task's failure gallery (mmbench inspect)
                text = f'<a class="gallery" href="{_e(_href(e.galleries[t], links_from))}" title="failure gallery">{text}</a>'
            cells.append(f'<td data-v="{v_attr}" title="{_e(e.task_provenance.get(t, "no result"))}">{text}</td>')
        if ndcg:
            nd = r["ndcg@10_avg"]
            nd_v = "" if math.isnan(nd) else f"{nd:.4f}"
            cells.append(f'<td data-v="{nd_v}">{_e(_fmt(nd))}</td>')
        for c in bias:
            b = r[c]
            cells.append(f'<td data-v="{"" if math.isnan(b) else f"{b:.4f}"}">{_e(_fmt(b))}</td>')
        cells.append(f'<td class="text source" data-v="{_e(_source(r))}">{_e(_source(r))}</td>')
        out.append(f'<tr class="{"reported" if rep else "ours"}" data-model="{_e(r["model"])}">{"".join(cells)}</tr>')
    out.append("</tbody></table></div>")
    out.append('<h2 style="font-size:16px">Where each row comes from</h2><ol class="prov">')
    out.extend(_provenance_item(e) for e in shown)
    out.append("</ol>")
    out.append('<h2 style="font-size:16px">Per task</h2><div class="charts">')
    out.extend(_svg_chart(df, h, metrics.get(h.task, "")) for h in headers)
    out.append("</div>")
    out.append(f'<p class="note">Built by mmbench leaderboard build on {datetime.now(timezone.utc).date().isoformat()}.</p>')
    out.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(out) + "\n"


def _board_name(option: str, value: str) -> str:
    """A board name the user gave (``--name``, ``--suite``), checked like a name from a record."""
    try:
        return check_name(Path(option), "value", value)
    except UnsafeNameError as exc:
        raise MmbenchError(f"{option} {value!r}: {str(exc).split(': ', 1)[-1]}") from None


def _warn_incomplete(suite: str, tasks: list[str], entries: list[Entry], warn: Callable[[str], None]) -> None:
    """One warning per row of ours that lacks some of the suite's tasks (which, and why), and per
    unreadable result of a task the board does not show."""
    for e in entries:
        if e.run is None:
            continue
        missing = [t for t in tasks if t not in e.scores]
        if missing:
            warn(f"{e.model} ({e.path}) has {len(tasks) - len(missing)}/{len(tasks)} tasks of {suite}; missing: "
                 + "; ".join(f"{t}: {e.run.why_missing(t)}" for t in missing))
        for file, problem in e.run.problems.items():
            if Path(file).stem not in tasks:
                warn(f"left out: {problem}")


def build(results: Path, out_dir: Path = Path("leaderboards"), *, suites: list[str] | None = None,
          name: str | None = None, reported: Path | None = DEFAULT_REPORTED,
          warn: Callable[[str], None] | None = None, efficiency: bool = False) -> list[Path]:
    """Write ``<out_dir>/<name>.{md,csv,html}`` per suite; returns the paths written (``efficiency``:
    with the cost columns of :mod:`mmbench.analysis.efficiency`).

    A result file that cannot be read is a warning (``warn``; default :class:`ResultWarning`) naming the
    file and what is wrong, and its row shows the tasks it has; a row short of tasks is a warning
    naming each missing task and why. A suite name that cannot be a file name is an error, so every
    file lands in ``out_dir``."""
    warn = warn or _default_warn
    if name is not None:
        name = _board_name("--name", name)
    for s in suites or []:
        _board_name("--suite", s)
    ours = collect_runs(results, warn=warn) if Path(results).exists() or not suites else []
    published = load_reported(reported) if reported else []
    chosen = list(suites) if suites else sorted({e.suite for e in ours})
    if not chosen:
        raise MmbenchError(f"no results under {results} (and no --suite given)")
    if name and len(chosen) > 1:
        raise MmbenchError(f"--name names one board; {len(chosen)} suites found ({', '.join(chosen)}): pass --suite")
    written = []
    for suite in chosen:
        entries = [e for e in ours if e.suite == suite] + [e for e in published if e.suite == suite]
        if not entries:
            raise MmbenchError(f"suite {suite!r}: no runs under {results} and no published numbers")
        tasks = suite_tasks(suite, entries)
        _warn_incomplete(suite, tasks, entries, warn)
        metrics = {}
        for e in entries:
            for t, m in e.metrics.items():
                metrics.setdefault(t, m)
        if not all(t in metrics for t in tasks):
            from mmbench.catalog import tasks as task_registry

            for t in tasks:
                if t not in metrics:
                    try:
                        metrics[t] = task_registry().get(t).main_metric
                    except Exception:                  # noqa: BLE001
                        metrics[t] = ""
        df = build_frame(entries, tasks, efficiency=efficiency)
        board = name or suite
        out = Path(out_dir)
        if (out / board).resolve().parent != out.resolve():       # check_name makes this impossible
            raise MmbenchError(f"board name {board!r} would leave {out}")
        by_key = {(e.model, e.revision, e.kind, e.path): e for e in entries}
        with atomic_open(out / f"{board}.md") as f:
            f.write(to_markdown(df, tasks, metrics, name=board))
        with atomic_open(out / f"{board}.csv") as f:
            csv_frame(df).to_csv(f, index=False, float_format="%.4f", lineterminator="\n")
        with atomic_open(out / f"{board}.html") as f:
            f.write(to_html(df, tasks, metrics, by_key, name=board, links_from=out))
        written += [out / f"{board}.{ext}" for ext in ("md", "csv", "html")]
    return written


def csv_frame(df):
    """``df`` with every text cell and header that a spreadsheet would read as a formula neutralised
    (:func:`~mmbench.analysis.escape.csv_cell`); numbers are unchanged."""
    from pandas.api.types import is_numeric_dtype

    out = df.rename(columns={c: csv_cell(c) for c in df.columns})
    for col in out.columns:
        if not is_numeric_dtype(out[col]):
            out[col] = out[col].map(csv_cell)
    return out


def summary_json(paths: list[Path]) -> str:
    return json.dumps([str(p) for p in paths])
