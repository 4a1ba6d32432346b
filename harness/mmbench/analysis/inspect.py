"""The failure gallery (``mmbench inspect``): per task, each query beside its positives and the model's
top 5, read from what a run already wrote; the page itself is :mod:`mmbench.analysis.gallery_html`.

**What is read.** A results folder (``<output>/<model>/<revision>/<suite>``, or an ``experiments/...``
folder; :func:`mmbench.analysis.compare.load_run`): each task's record (``<task>.json``) and the run
file it names (``files.run``, read by :func:`mmbench.results.trec.read_run`, plain or gzip). The
task's queries, candidates, images and qrels are loaded through the task's family
(:func:`mmbench.pipeline.plan.load_task_data`) with the run's own settings from the record
(``provenance.config``: data root, instructions and seed, so a query shows the instruction it was
encoded with); for a global-pool run, checked against the suite's global pool loaded as the run loaded
it (:func:`mmbench.pipeline.plan.load_global_pool`: M-BEIR's union file, else the union of the local
pools, without any other task's queries). When the data's fingerprints differ from the record's, the
page says so.

**Order.** Queries are ordered by the rank of their first positive in the run file, worst first: a
query with no positive in the run file (a miss at every depth the file holds) counts as rank infinity,
so the misses come first, then rank 100, 99, ... down to the queries solved at rank 1; ties keep the
run file's query order. At most ``limit`` queries are shown (the worst ones); the page says how many
of how many.

**Against another run** (``against``: a rerank experiment folder or another model's results on the
same task). A query's outcome is *hit* when its first positive is within the main metric's cut-off K
(``hit@5`` -> 5; a ``ndcg@10`` task -> 10), else *miss*; the change from this run to the other is
``hit→miss``, ``miss→hit``, ``rank moved`` (the same outcome, another first-positive rank) or
``same``. Changed queries are shown even beyond the ``limit`` worst (at most ``limit`` of them, the
largest rank moves first), and the page filters them.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mmbench.errors import DataError, MmbenchError
from mmbench.metrics.modality import same_modality

TOP_N = 5                    # hits shown per query
THUMB_PX = 96                # a thumbnail's longer side
THUMB_QUALITY = 70           # JPEG quality of thumbnails
DEFAULT_LIMIT = 200
GALLERY_DIR = "inspect"      # default output folder inside the results folder: <results>/inspect/<task>.html
CHANGES = ("hit→miss", "miss→hit", "rank moved", "same")


def gallery_file(task: str) -> str:
    return f"{task}.html"


@dataclass
class Item:
    """A query or candidate as the page shows it."""
    id: str
    modality: str
    text: str | None = None
    image: object | None = None           # mmbench.data.types.ImageRef
    instruction: str | None = None


@dataclass
class Hit:
    rank: int                 # 1-based
    id: str
    score: float
    modality: str
    relevant: bool


@dataclass
class Outcome:
    """One run's result for one query."""
    first_rank: int | None    # rank of the first positive in the run file; None: none there
    top: list[Hit]

    def hit(self, k: int) -> bool:
        return self.first_rank is not None and self.first_rank <= k


@dataclass
class QueryView:
    query: Item
    positives: list[str]
    outcome: Outcome
    other: Outcome | None = None
    change: str = ""          # one of CHANGES with an `against` run, else ""

    def wrong_modality(self, target: str) -> bool:
        """Whether the shown top holds a candidate of another modality than ``target``."""
        return any(not same_modality(h.modality, target) for h in self.outcome.top)


@dataclass
class Gallery:
    """One task's page, ready to render."""
    task: str
    label: str                               # the run (model, experiment)
    folder: Path
    record: dict
    target: str                              # the task's candidate modality
    main_metric: str
    cutoff: int                              # the main metric's K: a hit is a first positive within it
    depth: int                               # hits per query in the run file
    n_queries: int                           # evaluated queries (with positives)
    queries: list[QueryView]                 # the ones shown, in page order
    candidates: dict[str, Item]              # every candidate the page shows
    limit: int
    top_n: int = TOP_N
    counts: dict[str, int] = field(default_factory=dict)      # over all evaluated queries
    against_label: str = ""
    against_folder: Path | None = None
    against_record: dict | None = None
    warnings: list[str] = field(default_factory=list)


def main_cutoff(main_metric: str) -> int:
    from mmbench.metrics.families import parse_metric

    try:
        return parse_metric(main_metric)[1]
    except ValueError:
        return 10


def run_config(record: dict, data_root: Path | None = None):
    """The :class:`~mmbench.config.RunConfig` that loads a record's task data as its run did: the
    record's data root, mbeir-mini root, instructions and seed (``data_root`` replaces the data root)."""
    from mmbench.config import RunConfig

    cfg = (record.get("provenance") or {}).get("config") or {}
    if not isinstance(cfg, dict):
        cfg = {}

    def path(key: str) -> Path | None:
        value = cfg.get(key)
        return Path(value) if isinstance(value, str) and value else None

    instructions = cfg.get("instructions") if cfg.get("instructions") in ("first", "random", "none") else "first"
    seed = cfg.get("seed") if isinstance(cfg.get("seed"), int) and not isinstance(cfg.get("seed"), bool) else 2023
    return RunConfig(data_root=data_root or path("data_root"), mini_root=path("mini_root"),
                     instructions=instructions, seed=seed)


class _Candidates:
    """id -> row over the pool a run searched (its local pool, or its suite's global pool)."""

    def __init__(self, table):
        self.table = table
        self.where: dict[str, int] = {}
        for r, cid in enumerate(table.ids):
            self.where.setdefault(cid, r)

    def modality(self, cid: str) -> str:
        return self.table.modalities[self.where[cid]] if cid in self.where else "?"

    def item(self, cid: str) -> Item:
        from mmbench.data.types import ImageRef

        if cid not in self.where:
            return Item(cid, "?", text="(not in the task's pool: is the run from other data?)")
        r = self.where[cid]
        table = self.table
        p = table.image_paths[r]
        return Item(cid, table.modalities[r], table.texts[r], ImageRef(table.root / p) if p else None)


class _DataCache:
    """Each task's data, each global pool and each pool index loaded once per gallery build."""

    def __init__(self, data_root: Path | None):
        self.data_root = data_root
        self.loaded: dict[tuple, object] = {}
        self.pools: dict[tuple, object] = {}
        self.indexes: dict[tuple, _Candidates] = {}

    def _global_pool(self, name: str, record: dict, config):
        """The pool of a global-pool record's suite, as the run loaded it; None for a local-pool record."""
        from mmbench.catalog import suites, tasks
        from mmbench.pipeline.plan import load_global_pool

        if record.get("pool") != "global":
            return None
        suite = record.get("suite")
        try:
            spec = suites().get(suite)
        except Exception:                           # noqa: BLE001 - an unknown suite
            raise MmbenchError(f"task {name}: the record's global pool is the pool of suite {suite!r}, "
                               f"and this mmbench does not know that suite") from None
        key = (spec.name, str(config.data_root), str(config.mini_root))
        if key not in self.pools:
            self.pools[key] = load_global_pool(spec, [tasks().get(n) for n in spec.tasks], config)
        return self.pools[key]

    def task(self, name: str, record: dict):
        """``name``'s data with the record's settings, against the pool the run searched."""
        from mmbench.catalog import tasks
        from mmbench.pipeline.plan import load_task_data

        config = run_config(record, self.data_root)
        pool = self._global_pool(name, record, config)
        key = (name, str(config.data_root), str(config.mini_root), config.instructions, config.seed,
               pool.key if pool is not None else None)
        if key not in self.loaded:
            self.loaded[key] = load_task_data(tasks().get(name), config, pool)
        return self.loaded[key]

    def pool(self, name: str, record: dict) -> _Candidates:
        data = self.task(name, record)
        key = (data.pool_key, str(data.pool.root))
        if key not in self.indexes:
            self.indexes[key] = _Candidates(data.pool)
        return self.indexes[key]


def _outcome(cids: list[str], scores: list[float], positives: set[str], modality: Callable[[str], str]) -> Outcome:
    first = next((i + 1 for i, c in enumerate(cids) if c in positives), None)
    top = [Hit(i + 1, c, float(s), modality(c), c in positives) for i, (c, s) in enumerate(zip(cids[:TOP_N], scores))]
    return Outcome(first, top)


def _read_stage(run, task: str) -> tuple[dict, dict[str, tuple[list[str], list[float]]], int]:
    """A task's record, its run file as ``{qid: (candidate ids, scores)}`` and the file's depth."""
    from mmbench.results.layout import run_file
    from mmbench.results.trec import read_run

    if task not in run.tasks:
        raise MmbenchError(f"{run.path}: no result for task {task!r} ({run.why_missing(task)}); "
                           f"tasks here: {', '.join(sorted(run.tasks)) or 'none'}")
    record = run.tasks[task].record
    files = record.get("files") if isinstance(record.get("files"), dict) else {}
    name = files.get("run") if isinstance(files.get("run"), str) else run_file(task)
    path = Path(run.path) / name
    if Path(name).name != name or not path.is_file():
        raise MmbenchError(f"{path}: the run file that {run.tasks[task].json_path} names is missing "
                           f"(the gallery reads the run's hits from it)")
    qids, cids, scores = read_run(path)
    return record, {q: (c, s) for q, c, s in zip(qids, cids, scores)}, max((len(c) for c in cids), default=0)


def _order_key(view: QueryView) -> float:
    r = view.outcome.first_rank
    return -math.inf if r is None else -r          # worst first: misses, then the deepest first positive


def _change(a: Outcome, b: Outcome, k: int) -> str:
    if a.hit(k) and not b.hit(k):
        return "hit→miss"
    if b.hit(k) and not a.hit(k):
        return "miss→hit"
    return "rank moved" if a.first_rank != b.first_rank else "same"


def _move(view: QueryView) -> float:
    a, b = view.outcome.first_rank, view.other.first_rank if view.other else None
    big = 10**9
    return abs((big if a is None else a) - (big if b is None else b))


def build_gallery(results: Path, task: str, *, against: Path | None = None, limit: int = DEFAULT_LIMIT,
                  data_root: Path | None = None, _cache: _DataCache | None = None) -> Gallery:
    """The gallery of ``task`` in the results folder ``results`` (module docstring)."""
    from mmbench.analysis.compare import load_run

    if limit < 1:
        raise MmbenchError(f"--limit must be >= 1, got {limit}")
    cache = _cache or _DataCache(data_root)
    run = load_run(Path(results))
    record, hits, depth = _read_stage(run, task)
    data = cache.task(task, record)
    pool = cache.pool(task, record)
    target = str((record.get("task") or {}).get("candidate_modality") or "")
    main_metric = str(record.get("main_metric", ""))
    k = main_cutoff(main_metric)
    warnings = []
    recorded = (record.get("provenance") or {}).get("data_fingerprints")
    if isinstance(recorded, dict) and recorded and any(data.fingerprints.get(r) != v for r, v in recorded.items()):
        warnings.append(f"{task}: the task data loaded now differs from the data the run read (data fingerprints "
                        f"differ): queries, positives and candidates are shown as they are now")
    other_hits, other_pool, other_label, other_record, other_folder = None, None, "", None, None
    if against is not None:
        other = load_run(Path(against))
        other_record, other_hits, _ = _read_stage(other, task)
        other_pool = pool if other_record.get("pool") == record.get("pool") else cache.pool(task, other_record)
        other_label, other_folder = other.name, other.path

    q = data.queries
    views: list[QueryView] = []
    for i, qid in enumerate(q.ids):
        positives = [d for d, rel in data.qrels.get(qid, {}).items() if rel > 0]
        if not positives:
            continue                                 # not evaluated (as in the metrics)
        pos = set(positives)
        cids, scores = hits.get(qid, ([], []))
        outcome = _outcome(cids, scores, pos, pool.modality)
        view = QueryView(Item(qid, q.modalities[i], (q.raw_texts[i] if q.raw_texts else None) or q.texts[i],
                              _image(q, i), q.instructions[i] if q.instructions else None), positives, outcome)
        if other_hits is not None:
            ocids, oscores = other_hits.get(qid, ([], []))
            view.other = _outcome(ocids, oscores, pos, other_pool.modality)
            view.change = _change(view.outcome, view.other, k)
        views.append(view)
    ordered = sorted(views, key=_order_key)           # stable: the run's query order within a rank
    chosen = {id(v) for v in ordered[:limit]}
    if other_hits is not None:
        changed = sorted((v for v in views if v.change not in ("", "same")), key=_move, reverse=True)
        chosen |= {id(v) for v in changed[:limit]}
    shown = [v for v in ordered if id(v) in chosen]
    counts = {"queries": len(views), "misses": sum(not v.outcome.hit(k) for v in views),
              "wrong_modality": sum(v.wrong_modality(target) for v in views) if target else 0,
              "shown": len(shown), **({c: sum(v.change == c for v in views) for c in CHANGES}
                                      if other_hits is not None else {})}
    ids = {c for v in shown for c in v.positives[:3]} | {h.id for v in shown for h in v.outcome.top}
    ids |= {h.id for v in shown if v.other for h in v.other.top}
    candidates = {c: (pool.item(c) if c in pool.where or other_pool is None else other_pool.item(c)) for c in ids}
    return Gallery(task, run.name, run.path, record, target, main_metric, k, depth, len(views), shown, candidates,
                   limit, TOP_N, counts, other_label, other_folder, other_record, warnings)


def _image(table, i: int):
    from mmbench.data.types import ImageRef

    p = table.image_paths[i]
    return ImageRef(table.root / p) if p else None


def thumbnail(image, px: int = THUMB_PX) -> str:
    """A ``data:image/jpeg;base64,...`` URI of ``image`` (an :class:`~mmbench.data.types.ImageRef`)
    scaled to at most ``px`` on its longer side; raises :class:`~mmbench.errors.DataError` naming the file."""
    im = image.load()
    im.thumbnail((px, px))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=THUMB_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def tasks_of(results: Path) -> list[str]:
    """The tasks with a readable result in a results folder, in name order."""
    from mmbench.analysis.compare import load_run

    return sorted(load_run(Path(results)).tasks)


def write_galleries(results: Path, out: Path | None = None, *, tasks: list[str] | None = None,
                    against: Path | None = None, limit: int = DEFAULT_LIMIT, data_root: Path | None = None,
                    warn: Callable[[str], None] | None = None) -> list[Path]:
    """One page per task (all tasks of ``results`` when ``tasks`` is None) under ``out`` (default
    ``<results folder>/inspect``), written atomically; returns the paths. ``warn`` gets each warning."""
    from mmbench.analysis.compare import load_run
    from mmbench.analysis.gallery_html import render
    from mmbench.util.io import atomic_open

    run = load_run(Path(results))
    names = list(tasks) if tasks else sorted(run.tasks)
    out = Path(out) if out is not None else run.path / GALLERY_DIR
    out.mkdir(parents=True, exist_ok=True)
    cache = _DataCache(data_root)
    written = []
    for name in names:
        gallery = build_gallery(run.path, name, against=against, limit=limit, data_root=data_root, _cache=cache)
        for text in gallery.warnings:
            if warn:
                warn(text)
        page = render(gallery, thumb=_thumbnails(warn))
        path = out / gallery_file(name)
        with atomic_open(path) as f:
            f.write(page)
        written.append(path)
    return written


def _thumbnails(warn: Callable[[str], None] | None) -> Callable[[object], str | None]:
    """:func:`thumbnail`, memoised per image file; None (and one warning) for an image that cannot be read."""
    memo: dict = {}

    def get(image) -> str | None:
        if image is None:
            return None
        key = str(image.path)
        if key not in memo:
            try:
                memo[key] = thumbnail(image)
            except DataError as exc:
                memo[key] = None
                if warn:
                    warn(str(exc))
        return memo[key]

    return get


def modality_bias(record: dict) -> dict | None:
    """A global-pool record's modality bias in three numbers, or None (a local pool, or a record
    without the report): ``wrong_share``, the wrong-modality share of the top K (K: the headline's
    cut-off, else the nearest cut-off reported); ``without``, the headline with wrong-modality candidates
    removed; ``gap``, ``without`` minus the headline (all fractions)."""
    if record.get("pool") != "global":
        return None
    rep = record.get("modality_report")
    at = rep.get("at") if isinstance(rep, dict) else None
    wo = rep.get("without_wrong_modality") if isinstance(rep, dict) else None
    if not isinstance(at, dict) or not isinstance(wo, dict):
        return None
    k = main_cutoff(str(record.get("main_metric", "")))
    cuts = sorted((int(c), v) for c, v in at.items() if str(c).isdigit() and isinstance(v, dict))
    if not cuts:
        return None
    share = min(cuts, key=lambda cv: abs(cv[0] - k))[1].get("wrong_modality_share")
    values = (share, wo.get("main_score"), wo.get("gap"))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return None
    return {"wrong_share": float(share), "without": float(wo["main_score"]), "gap": float(wo["gap"])}


def gallery_page(run_folder: Path, task: str) -> Path | None:
    """The gallery page of ``task`` in its default place beside a run's results, when it exists."""
    path = Path(run_folder) / GALLERY_DIR / gallery_file(task)
    return path if path.is_file() else None


__all__ = ["CHANGES", "DEFAULT_LIMIT", "GALLERY_DIR", "Gallery", "Hit", "Item", "Outcome", "QueryView", "TOP_N",
           "build_gallery", "gallery_file", "gallery_page", "main_cutoff", "modality_bias", "run_config", "tasks_of", "thumbnail",
           "write_galleries"]
