"""``mmbench plan`` (``run --dry-run``): what a run will do and need, before the hours are spent.

:func:`estimate` resolves and loads a run exactly as :func:`mmbench.pipeline.run.run` does (the same
:func:`~mmbench.pipeline.plan.make_plan` and :meth:`~mmbench.pipeline.plan.Plan.load`, so every data
file the run reads is read and checked, and a missing one is the run's own error), checks a sample of
each table's image files, and returns a :class:`RunEstimate` without loading the model or encoding.

**The work.** One :class:`TableWork` per table the run embeds (each task's queries; each local pool,
or each part of a global pool, once): items per modality, and tokens
:math:`T = \\sum_i |t_i| / c + n_\\text{img} \\cdot p`, where :math:`|t_i|` is an item's text length in
characters, :math:`c` = :data:`~mmbench.distributed.assign.CHARS_PER_TOKEN` (the cost model the ranks
balance chunks by) and :math:`p` the model's declared tokens per image
(:attr:`~mmbench.models.base.ModelMeta.image_tokens`; image tokens are left out when it declares none).
Its cache entry is the run's own (:meth:`~mmbench.pipeline.pools.Pools.jobs`,
:func:`~mmbench.embeddings.embed.cache_entry`): complete chunk files are counted as cached.

**Memory and disk** (:math:`d` the model's embedding dimension, :math:`s` the bytes of the cached
dtype, 4 for float32 and 2 for float16; :math:`N` the pool rows searched, :math:`Q` the largest query
table, :math:`k` the largest top k, :math:`G` the devices the search is sharded over: ``--devices``
in one process, else the ranks, each searching its share on its own device, as a run under torchrun
with a shared cache does, :mod:`mmbench.distributed.search`):

* pool bytes per dtype: :math:`N d \\cdot \\{4, 2, 2\\}` (float32, float16, bfloat16);
* GPU memory per device: the pool's shard :math:`\\lceil N/G \\rceil d s`, plus the queries
  :math:`Q d \\cdot 4` and each query's top k (a float32 score and an int64 index: :math:`12 Q k`);
  a lower bound (the backend's workspace and the model, when it runs there, come on top);
* host RAM: the pool's embeddings as held (:math:`N d s`), the queries (:math:`Q d \\cdot 4`), and
  the item tables, counted as the bytes of their text and image paths plus
  :data:`ITEM_OVERHEAD` bytes per item (the Python objects that hold them);
* cache disk: :math:`\\sum_\\text{tables} n\\, d\\, s`; already cached: the complete chunks' share.

**Time.** Items still to encode (not in complete chunks) divided by items per second per modality:
measured by earlier runs of the same model and revision under the results folder (the records'
``efficiency`` encode figures, summed over every record found), else the model's declared figures
(:attr:`~mmbench.models.base.ModelMeta.declared_items_per_s`); :attr:`Throughput.source` says
which. Divided by the ranks (``WORLD_SIZE``, or ``--ranks``) encoding together.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mmbench.config import RunConfig
from mmbench.data.types import ItemTable, canonical_modality
from mmbench.errors import DataError
from mmbench.pipeline.plan import Plan, make_plan
from mmbench.pipeline.types import Reporter

IMAGE_SAMPLE = 1000
"""Image files checked per table (all of them in a smaller table): a random sample, seeded by the table."""

ITEM_OVERHEAD = 200
"""Host bytes per item beyond its text and path (the id, list slots, string headers)."""

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass
class TableWork:
    """One table the run embeds."""

    name: str                          # "<task>: queries", "<task>: pool", "global pool [a-b]"
    role: str                          # "query" or "candidate"
    items: int
    by_modality: dict[str, int]
    text_chars: int
    text_tokens: int
    image_tokens: int | None           # None: the model declares no tokens per image
    images: int                        # items with an image
    images_checked: int                # image files checked to exist (a sample)
    chunks: int
    chunks_cached: int                 # complete chunk files in the cache
    items_cached: int
    cache_dir: str                     # the table's cache entry


@dataclass
class Throughput:
    items_per_s: dict[str, float]      # modality -> items/s
    source: str                        # "measured ...", "declared ...", or "none ..."


@dataclass
class RunEstimate:
    """What a run will do and need (module docstring)."""

    model: str
    revision: str
    suite: str
    pool_mode: str
    tasks: list[str]
    results: str                       # the results folder
    tables: list[TableWork]
    embed_dim: int | None
    cache_dtype: str
    pool_rows: int                     # the largest pool searched
    query_rows: int                    # the largest query table
    top_k: int
    pool_bytes: dict[str, int | None]  # dtype -> bytes of the largest pool
    devices: int                       # devices the search is sharded over (--devices, else the ranks)
    ranks: int                         # processes encoding together
    gpu_bytes_per_device: int | None
    host_ram_bytes: int | None
    cache_bytes: int | None
    cache_bytes_present: int | None
    items_to_encode: dict[str, int]    # modality -> items not in complete chunks
    throughput: Throughput
    encode_seconds: float | None       # None: no throughput known for some modality to encode
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def estimate(config: RunConfig, reporter: Reporter | None = None, *, ranks: int | None = None,
             image_sample: int = IMAGE_SAMPLE) -> RunEstimate:
    """The plan of ``config``'s run (module docstring); raises the run's own error for missing or
    invalid data, and a :class:`~mmbench.errors.DataError` naming a sampled image file that is missing."""
    from mmbench.pipeline.pools import LazyEncoder, Pools

    reporter = reporter or Reporter()
    plan = make_plan(config)
    plan.load()
    pools = Pools(plan.meta, config, plan.data, plan.pool_specs, plan.pool_mode,
                  LazyEncoder(plan.meta, config, reporter), reporter, None, images=plan.images,
                  global_pool=plan.global_pool)
    tables = [_table_work(job, plan, config, image_sample) for job in pools.jobs(plan.specs)]
    ranks = ranks or int(os.environ.get("WORLD_SIZE", "1") or 1)
    return _totals(plan, tables, ranks)


def _table_work(job, plan: Plan, config: RunConfig, image_sample: int) -> TableWork:
    from mmbench.distributed.assign import CHARS_PER_TOKEN
    from mmbench.embeddings.embed import cache_entry

    table: ItemTable = job.table
    by_modality: dict[str, int] = {}
    for m in table.modalities:
        by_modality[m] = by_modality.get(m, 0) + 1
    by_modality = {canonical_modality(m): n for m, n in sorted(by_modality.items())}
    texts = table.texts if job.key.role == "candidate" else [item.prompted_text() for item in table.items()]
    chars = sum(len(t) for t in texts if t)
    images = [p for p in table.image_paths if p]
    checked = _check_images(table, images, image_sample)
    store, _ = cache_entry(table, job.key, cache_dir=config.cache_dir, chunk_size=config.chunk_size,
                           normalize=job.normalize, normalized_dtype=job.normalized_dtype)
    complete = _complete_chunks(store)
    per_image = plan.meta.image_tokens
    return TableWork(
        name=job.label.replace(": encode ", ": ").replace("encode ", ""), role=job.key.role, items=len(table),
        by_modality=by_modality, text_chars=chars, text_tokens=round(chars / CHARS_PER_TOKEN),
        image_tokens=len(images) * per_image if per_image else None, images=len(images), images_checked=checked,
        chunks=store.n_chunks, chunks_cached=len(complete),
        items_cached=sum(store.chunk_len(i) for i in complete), cache_dir=str(store.dir))


def _check_images(table: ItemTable, images: list[str], sample: int) -> int:
    """Check that up to ``sample`` of the table's image files exist (a sample drawn with a seed from the
    table's source); returns how many were checked."""
    picked = images if len(images) <= sample else random.Random(table.source).sample(images, sample)
    root = Path(table.root)
    for rel in picked:
        path = root / rel
        if not path.is_file():
            raise DataError(path, f"image file not found (named in {table.source or 'the data'}; "
                                  f"{len(picked):,} of {len(images):,} image files checked)")
    return len(picked)


def _complete_chunks(store) -> list[int]:
    """The chunks of ``store`` whose files are complete, when its manifest is this entry's (else none:
    the run would start the entry again)."""
    try:
        stored = json.loads((store.dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return []
    if stored != store.manifest:
        return []
    return [i for i in range(store.n_chunks) if store.chunk_problem(i) is None]


def _totals(plan: Plan, tables: list[TableWork], ranks: int) -> RunEstimate:
    config, meta = plan.config, plan.meta
    dim = meta.embed_dim
    size = DTYPE_BYTES[config.embed_dtype]
    pools = [t for t in tables if t.role == "candidate"]
    if plan.pool_mode == "global":
        pool_rows = sum(t.items for t in pools)
    else:
        pool_rows = max((t.items for t in pools), default=0)
    query_rows = max((t.items for t in tables if t.role == "query"), default=0)
    top_k = max((plan.top_k(s) for s in plan.specs), default=0)
    devices = len(config.devices) or max(1, ranks)     # --devices in rank 0, else a share per rank
    notes = []
    if dim is None:
        notes.append(f"model {meta.name} declares no embedding dimension: bytes are not estimated")
        pool_bytes = {d: None for d in DTYPE_BYTES}
        gpu = ram = disk = present = None
    else:
        pool_bytes = {d: pool_rows * dim * b for d, b in DTYPE_BYTES.items()}
        gpu = math.ceil(pool_rows / devices) * dim * size + query_rows * dim * 4 + 12 * query_rows * top_k
        item_bytes = sum(t.text_chars + t.images * 48 + t.items * ITEM_OVERHEAD for t in tables)
        ram = pool_rows * dim * size + query_rows * dim * 4 + item_bytes
        disk = sum(t.items for t in tables) * dim * size
        present = sum(t.items_cached for t in tables) * dim * size
    to_encode: dict[str, int] = {}
    for t in tables:
        left = t.items - t.items_cached
        if left <= 0:
            continue
        for m, n in t.by_modality.items():       # a partly cached table: its modalities in proportion
            to_encode[m] = to_encode.get(m, 0) + round(n * left / t.items)
    throughput = measured_throughput(config.output, meta.name, meta.revision) or declared_throughput(meta)
    seconds = None
    if all(m in throughput.items_per_s for m in to_encode):
        seconds = sum(n / throughput.items_per_s[m] for m, n in to_encode.items()) / max(1, ranks)
    elif to_encode:
        missing = sorted(m for m in to_encode if m not in throughput.items_per_s)
        notes.append(f"no encode throughput known for {', '.join(missing)} items: time not estimated")
    return RunEstimate(
        model=meta.name, revision=meta.revision, suite=plan.label, pool_mode=plan.pool_mode,
        tasks=[s.name for s in plan.specs], results=str(plan.directory), tables=tables, embed_dim=dim,
        cache_dtype=config.embed_dtype, pool_rows=pool_rows, query_rows=query_rows, top_k=top_k,
        pool_bytes=pool_bytes, devices=devices, ranks=ranks, gpu_bytes_per_device=gpu, host_ram_bytes=ram,
        cache_bytes=disk, cache_bytes_present=present, items_to_encode=to_encode, throughput=throughput,
        encode_seconds=seconds, notes=notes)


def measured_throughput(output: Path, model: str, revision: str) -> Throughput | None:
    """Items/s per modality from the ``efficiency`` encode figures of the records of ``model`` at
    ``revision`` under the results folder ``output`` (encoded items and seconds summed over every
    record and table); None when no record encoded anything."""
    from mmbench.util.text import slug

    root = Path(output) / slug(model) / slug(revision)
    totals: dict[str, list[float]] = {}
    records = 0
    for path in sorted(root.glob("**/*.json")) if root.is_dir() else []:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        model_of = record.get("model") if isinstance(record, dict) else None
        efficiency = record.get("efficiency") if isinstance(model_of, dict) else None
        if not isinstance(efficiency, dict) or model_of.get("revision") != revision:
            continue
        encode = efficiency.get("encode") if isinstance(efficiency.get("encode"), dict) else {}
        found = False
        for role in ("queries", "candidates"):
            table = encode.get(role) if isinstance(encode.get(role), dict) else {}
            by_modality = table.get("by_modality") if isinstance(table.get("by_modality"), dict) else {}
            for m, entry in by_modality.items():
                if isinstance(entry, dict) and entry.get("encoded") and entry.get("seconds"):
                    acc = totals.setdefault(m, [0.0, 0.0])
                    acc[0] += float(entry["encoded"])
                    acc[1] += float(entry["seconds"])
                    found = True
        records += found
    rates = {m: n / s for m, (n, s) in totals.items() if n > 0 and s > 0}
    if not rates:
        return None
    return Throughput(rates, f"measured: {records} earlier record(s) of this model under {root}")


def declared_throughput(meta) -> Throughput:
    """The catalog's declared items/s of ``meta`` (and the hardware they are for)."""
    rates = dict(meta.declared_items_per_s or {})
    if not rates:
        return Throughput({}, f"none: no earlier run of {meta.name} under the results folder, and the "
                              "catalog declares no throughput for it")
    return Throughput(rates, f"declared by the model catalog ({meta.declared_on or 'hardware not stated'})")


__all__ = ["IMAGE_SAMPLE", "ITEM_OVERHEAD", "RunEstimate", "TableWork", "Throughput", "declared_throughput",
           "estimate", "measured_throughput"]
