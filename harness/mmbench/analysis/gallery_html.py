"""The failure gallery's page: one self-contained HTML file per task (:mod:`mmbench.analysis.inspect`
assembles what it shows).

Self-contained: inline CSS and plain JavaScript, no network. Each image is a small JPEG thumbnail
embedded once as a ``data:`` URI in a CSS class and shown wherever the image appears (a candidate in
many queries' top 5 costs its bytes once). Every string from the data or a record is HTML-escaped.

The filters (checkboxes) hide rows of the query table: misses only (no positive within the main
metric's cut-off), wrong modality (a candidate of another modality than the task's target in the top
5) and, with ``--against``, changed only; several checked filters combine with AND. The number of
rows shown is written beside them. For scripted checks the URL hash ``#click=<id>,<id>`` clicks those
controls after load (``f-miss``, ``f-wrong``, ``f-changed``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from datetime import datetime, timezone

from mmbench.metrics.modality import same_modality

SNIPPET_CHARS = 220          # text shown of a query or a positive (less on the cards)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:20px} h2{font-size:16px;margin-top:22px} p.note{color:#555;max-width:1000px;font-size:13px}
p.warn{color:#a40;font-size:13px}
table.mod{border-collapse:collapse;font-size:12px} table.mod td,table.mod th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}
table.mod th{background:#f4f4f4} table.mod td.text,table.mod th.text{text-align:left}
div.filters{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid #ddd;font-size:13px;z-index:2}
div.filters label{margin-right:16px;cursor:pointer}
table.g{border-collapse:collapse;font-size:12px;width:100%}
table.g>tbody>tr>td{border-bottom:1px solid #ddd;padding:6px;vertical-align:top}
table.g th{background:#f4f4f4;text-align:left;padding:4px 6px}
td.qcell{width:220px} td.pcell{width:200px}
.th{display:inline-block;width:96px;height:96px;background-size:contain;background-repeat:no-repeat;
    background-position:center;background-color:#f6f6f6;border:1px solid #ddd}
.noimg{display:inline-block;width:96px;height:20px;font-size:10px;color:#a40}
.snip{color:#333;max-width:220px;font-size:11px;margin:2px 0;overflow-wrap:anywhere}
.instr{color:#777;font-style:italic;font-size:11px}
.id{color:#888;font-size:10px;font-family:ui-monospace,monospace;overflow-wrap:anywhere}
div.top{display:flex;gap:6px;flex-wrap:wrap} div.card{width:132px;border:2px solid #ddd;border-radius:4px;padding:3px}
div.card.hit{border-color:#2e8b57;background:#f1faf3} div.card.miss{border-color:#ddd}
div.card.wrongmod{box-shadow:inset 0 0 0 2px #e08a00}
div.card .meta{font-size:10px;color:#444} span.badge{display:inline-block;font-size:10px;border-radius:3px;padding:0 3px}
span.ok{background:#e3f5e1;color:#254} span.no{background:#fde8e8;color:#722} span.wm{background:#fff0d6;color:#840}
span.chg{background:#e6ecff;color:#234} .rank{font-weight:600}
div.other{margin-top:6px;padding-top:4px;border-top:1px dashed #bbb} div.other div.card{width:110px}
svg text{font-family:system-ui,sans-serif}
"""

_JS = r"""
(function(){
  var rows=Array.prototype.slice.call(document.querySelectorAll('tr.q'));
  var count=document.getElementById('visible-count');
  var boxes={miss:document.getElementById('f-miss'),wrong:document.getElementById('f-wrong'),changed:document.getElementById('f-changed')};
  function apply(){
    var n=0;
    rows.forEach(function(r){
      var show=true;
      if(boxes.miss&&boxes.miss.checked&&r.getAttribute('data-miss')!=='1') show=false;
      if(boxes.wrong&&boxes.wrong.checked&&r.getAttribute('data-wrongmod')!=='1') show=false;
      if(boxes.changed&&boxes.changed.checked&&(r.getAttribute('data-change')||'same')==='same') show=false;
      r.hidden=!show; if(show) n++;
    });
    count.textContent=String(n); document.body.setAttribute('data-visible',String(n));
  }
  Object.keys(boxes).forEach(function(k){ if(boxes[k]) boxes[k].addEventListener('change',apply); });
  apply();
  // #click=<id>,<id> clicks those controls after load (used by the CI test)
  var h=decodeURIComponent(location.hash.replace(/^#/,''));
  h.split('&').forEach(function(part){
    var kv=part.split('='); if(kv.length<2||kv[0]!=='click') return;
    kv[1].split(',').forEach(function(id){ var el=document.getElementById(id); if(el) el.click(); });
  });
  document.body.setAttribute('data-ready','1');
})();
"""


def snippet(text: str | None, chars: int = SNIPPET_CHARS) -> str:
    """``text`` on one line, cut to ``chars`` characters (with an ellipsis)."""
    text = " ".join((text or "").split())
    return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"


def _e(s) -> str:
    return html.escape(str(s), quote=True)


class _Thumbs:
    """One CSS class per embedded image; the page's ``<style>`` lists them once."""

    def __init__(self, thumb: Callable[[object], str | None]):
        self.thumb, self.classes, self.rules = thumb, {}, []

    def tag(self, item) -> str:
        if item.image is None:
            return ""
        key = str(item.image.path)
        if key not in self.classes:
            uri = self.thumb(item.image)
            if uri is None:
                self.classes[key] = None
            else:
                name = f"i{len(self.rules)}"
                self.classes[key] = name
                self.rules.append(f'.{name}{{background-image:url("{uri}")}}')
        name = self.classes[key]
        if name is None:
            return '<span class="noimg">image unreadable</span>'
        return f'<span class="th {name}" role="img" aria-label="{_e(item.id)}" title="{_e(item.id)}"></span>'

    def css(self) -> str:
        return "\n".join(self.rules)


def _item(item, thumbs: _Thumbs, *, chars: int = SNIPPET_CHARS) -> str:
    parts = [thumbs.tag(item)]
    if item.text:
        parts.append(f'<div class="snip">{_e(snippet(item.text, chars))}</div>')
    return "".join(parts)


def _card(h, item, target: str, thumbs: _Thumbs, *, chars: int = 110) -> str:
    wrong = not same_modality(h.modality, target) if target else False
    cls = "card " + ("hit" if h.relevant else "miss") + (" wrongmod" if wrong else "")
    mark = '<span class="badge ok">hit</span>' if h.relevant else '<span class="badge no">miss</span>'
    wm = f' <span class="badge wm" title="not the target modality {_e(target)}">{_e(h.modality)}</span>' if wrong \
        else f' <span class="id">{_e(h.modality)}</span>'
    return (f'<div class="{cls}" data-rank="{h.rank}" data-relevant="{int(h.relevant)}" data-wrongmod="{int(wrong)}">'
            f'<div class="meta"><span class="rank">#{h.rank}</span> {mark}{wm} <span title="score">{h.score:.4f}</span></div>'
            f'{_item(item, thumbs, chars=chars)}<div class="id">{_e(h.id)}</div></div>')


def _first(o, depth: int) -> str:
    return f"rank {o.first_rank}" if o.first_rank is not None else f"not in the top {depth}"


def _row(i: int, v, g, thumbs: _Thumbs) -> str:
    miss = not v.outcome.hit(g.cutoff)
    wrong = v.wrong_modality(g.target) if g.target else False
    q = v.query
    qcell = (_item(q, thumbs) + (f'<div class="instr">{_e(q.instruction)}</div>' if q.instruction else "")
             + f'<div class="id">{_e(q.id)} ({_e(q.modality)})</div>')
    pos = []
    for pid in v.positives[:3]:
        item = g.candidates[pid]
        pos.append(f'<div>{_item(item, thumbs, chars=110)}<div class="id">{_e(pid)}</div></div>')
    if len(v.positives) > 3:
        pos.append(f'<div class="id">+{len(v.positives) - 3} more</div>')
    first = f'<div class="meta">first positive: <b>{_e(_first(v.outcome, g.depth))}</b></div>'
    cards = "".join(_card(h, g.candidates[h.id], g.target, thumbs) for h in v.outcome.top)
    top = f'{first}<div class="top">{cards or "<i>no hits in the run file</i>"}</div>'
    if v.other is not None:
        ocards = "".join(_card(h, g.candidates[h.id], g.target, thumbs, chars=60)
                         for h in v.other.top)
        top += (f'<div class="other"><div class="meta"><span class="badge chg">{_e(v.change)}</span> '
                f'against {_e(g.against_label)}: first positive {_e(_first(v.other, g.depth))}</div>'
                f'<div class="top">{ocards or "<i>no hits</i>"}</div></div>')
    return (f'<tr class="q" data-qid="{_e(q.id)}" data-miss="{int(miss)}" data-wrongmod="{int(wrong)}"'
            f' data-first="{v.outcome.first_rank or ""}"' + (f' data-change="{_e(v.change)}"' if v.change else "")
            + f'><td>{i}</td><td class="qcell">{qcell}</td><td class="pcell">{"".join(pos)}</td><td>{top}</td></tr>')


def _pct(x) -> str:
    return "–" if not isinstance(x, (int, float)) or math.isnan(x) else f"{100 * x:.1f}"


def modality_section(g) -> str:
    """The modality report as a table and an inline SVG plot (the share of each modality in the top k,
    and the headline with and without wrong-modality candidates)."""
    rep = g.record.get("modality_report") if isinstance(g.record.get("modality_report"), dict) else {}
    at = rep.get("at") if isinstance(rep.get("at"), dict) else {}
    wo = rep.get("without_wrong_modality") if isinstance(rep.get("without_wrong_modality"), dict) else None
    pool = g.record.get("pool", "?")
    out = [f'<h2 id="modality">Modality bias</h2><p class="note">Target modality <b>{_e(g.target)}</b>; '
           f'{_e(pool)} pool of {_e(g.record.get("n_candidates", "?"))} candidates. Share of the retrieved slots '
           f'within the top k that are of each modality (in a local pool every candidate has the target '
           f'modality).</p>']
    mods = sorted({m for v in at.values() if isinstance(v, dict) for m in (v.get("by_modality") or {})})
    out.append('<table class="mod" id="modality-table"><tr><th>k</th><th>wrong modality %</th>'
               + "".join(f"<th>{_e(m)} %</th>" for m in mods) + "</tr>")
    for k, v in sorted(at.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else 0):
        if not isinstance(v, dict):
            continue
        by = v.get("by_modality") or {}
        out.append(f"<tr><td>{_e(k)}</td><td>{_pct(v.get('wrong_modality_share'))}</td>"
                   + "".join(f"<td>{_pct(by.get(m, 0.0))}</td>" for m in mods) + "</tr>")
    out.append("</table>")
    base = g.record.get("main_score")
    if wo:
        out.append(f'<p class="note">{_e(g.main_metric)} ×100: <b>{_pct(base)}</b> as ranked; '
                   f'<b id="without-wrong">{_pct(wo.get("main_score"))}</b> with the wrong-modality candidates '
                   f'removed from each ranking (gap {_pct(wo.get("gap"))}; {_e(wo.get("removed_slots", 0))} slots '
                   f'removed; {_e(wo.get("short_queries", 0))} queries whose filtered value may be a lower bound '
                   f'because the run of depth {_e(wo.get("depth", "?"))} held too few target candidates).</p>')
    else:
        out.append('<p class="note">This record has no score without wrong-modality candidates (written by an '
                   'older mmbench: run the task again to add it).</p>')
    out.append(_svg(at, mods, g.target, base, wo))
    return "".join(out)


_COLORS = ["#e08a00", "#8a5cc2", "#c0392b", "#7f8c8d"]


def _svg(at: dict, mods: list[str], target: str, base, wo: dict | None) -> str:
    ks = [k for k in sorted(at, key=lambda x: int(x) if str(x).isdigit() else 0) if isinstance(at[k], dict)]
    bar_w, bar_h, left = 300, 16, 90
    rows = len(ks) + (2 if wo else 0)
    height = 30 + rows * (bar_h + 6) + 20
    color = {}
    others = iter(_COLORS * 4)
    for m in mods:
        color[m] = "#2e8b57" if same_modality(m, target) else next(others)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + bar_w + 160}" height="{height}" role="img" '
             f'aria-label="modality shares" id="modality-plot">']
    y = 10
    for k in ks:
        by = at[k].get("by_modality") or {}
        x = left
        parts.append(f'<text x="{left - 6}" y="{y + 12}" font-size="11" text-anchor="end">top {_e(k)}</text>')
        for m in mods:
            w = float(by.get(m, 0.0)) * bar_w
            if w > 0:
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color[m]}">'
                             f'<title>{_e(m)}: {100 * float(by.get(m, 0.0)):.1f}%</title></rect>')
                x += w
        y += bar_h + 6
    if wo and isinstance(base, (int, float)) and isinstance(wo.get("main_score"), (int, float)):
        for label, v, fill in (("as ranked", float(base), "#7f8c8d"), ("target only", float(wo["main_score"]), "#2e8b57")):
            w = max(0.0, min(1.0, v)) * bar_w
            parts.append(f'<text x="{left - 6}" y="{y + 12}" font-size="11" text-anchor="end">{label}</text>'
                         f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{fill}"/>'
                         f'<text x="{left + w + 4:.1f}" y="{y + 12}" font-size="11">{100 * v:.1f}</text>')
            y += bar_h + 6
    lx = left
    for m in mods:
        parts.append(f'<rect x="{lx}" y="{y + 4}" width="10" height="10" fill="{color[m]}"/>'
                     f'<text x="{lx + 14}" y="{y + 13}" font-size="11">{_e(m)}</text>')
        lx += 24 + 7 * len(m)
    parts.append("</svg>")
    return "".join(parts)


def render(g, *, thumb: Callable[[object], str | None]) -> str:
    """The page of ``g`` (an :class:`mmbench.analysis.inspect.Gallery`); ``thumb(image_ref)`` gives a ``data:`` URI (or None for an unreadable image)."""
    thumbs = _Thumbs(thumb)
    rows = [_row(i, v, g, thumbs) for i, v in enumerate(g.queries, 1)]
    c = g.counts
    against = g.against_label
    shown = (f"Showing {c.get('shown', len(g.queries))} of {g.n_queries} queries (those with positives): the "
             f"{min(g.limit, g.n_queries)} with the worst first-positive rank (--limit {g.limit})"
             + (", and the queries whose outcome changed against the other run" if against else "") + ".")
    head = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>mmbench inspect: {_e(g.task)} ({_e(g.label)})</title>",
        f"<style>{_CSS}\n{{THUMBS}}</style></head><body>",
        f"<h1>{_e(g.task)}: {_e(g.label)}</h1>",
        f'<p class="note">Results {_e(g.folder)}; {_e(g.record.get("pool", "?"))} pool; headline '
        f'{_e(g.main_metric)} = {_pct(g.record.get("main_score"))} (×100). A query is a <b>miss</b> when no positive is '
        f'within the top {g.cutoff} (the headline\'s cut-off). The run file holds {g.depth} hits per query. '
        f'{_e(shown)} Order: by the rank of the first positive, worst first (a query with no positive in the run file '
        f'counts as rank ∞, so misses come first). Cards: green border = a positive; orange = not the target '
        f'modality ({_e(g.target)}).</p>',
        f'<p class="note">All queries: {c.get("misses", 0)} misses at {g.cutoff} of {c.get("queries", 0)}; '
        f'{c.get("wrong_modality", 0)} with a wrong-modality candidate in the top {g.top_n}.'
        + (f' Against {_e(against)} ({_e(g.against_folder)}): '
           + ", ".join(f"{_e(k)} {c.get(k, 0)}" for k in ("hit→miss", "miss→hit", "rank moved", "same")) + "."
           if against else "") + "</p>",
        *[f'<p class="warn">warning: {_e(w)}</p>' for w in g.warnings],
        modality_section(g),
        '<h2 id="queries">Queries</h2><div class="filters">',
        '<label><input type="checkbox" id="f-miss"> misses only</label>',
        f'<label><input type="checkbox" id="f-wrong"> wrong modality in the top {g.top_n}</label>',
        *(['<label><input type="checkbox" id="f-changed"> changed against the other run</label>'] if against else []),
        f'<span><b id="visible-count">{len(rows)}</b> of {len(rows)} shown</span></div>',
        '<table class="g" id="gallery"><thead><tr><th>#</th><th>query</th><th>positives</th>'
        f'<th>top {g.top_n} (rank, hit/miss, modality, score)</th></tr></thead><tbody>',
    ]
    tail = ["</tbody></table>",
            f'<p class="note">Written by mmbench inspect on {datetime.now(timezone.utc).date().isoformat()}.</p>',
            f"<script>{_JS}</script></body></html>"]
    page = "\n".join([*head, *rows, *tail]) + "\n"
    return page.replace("{THUMBS}", thumbs.css(), 1)


__all__ = ["modality_section", "render"]
