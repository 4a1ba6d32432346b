"""The resolved configuration of one ``mmbench run``."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mmbench.catalog import DEFAULT_MODEL, DEFAULT_SUITE


DEFAULT_RUN_DEPTH = 100                     # the run file's depth by default (the anchors' run files)


def mmbench_home() -> Path:
    """Where mmbench stores everything (embedding cache, built datasets, model assets):
    ``$MMBENCH_HOME``, else ``$MMBENCH_CACHE`` (its older name), else ``~/.cache/mmbench``.
    ``mmbench run --cache-dir DIR`` sets ``$MMBENCH_HOME`` for its process."""
    home = os.environ.get("MMBENCH_HOME") or os.environ.get("MMBENCH_CACHE")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "mmbench"


def data_home() -> Path:
    """Where built datasets go (mbeir-mini, the offline text tasks): ``$MMBENCH_DATA``, else
    ``<mmbench_home()>/data``."""
    data = os.environ.get("MMBENCH_DATA")
    return Path(data).expanduser() if data else mmbench_home() / "data"


def default_cache_dir() -> Path:
    return mmbench_home()


@dataclass(frozen=True)
class RunConfig:
    model: str = DEFAULT_MODEL
    suite: str | None = DEFAULT_SUITE
    tasks: tuple[str, ...] = ()
    data_root: Path | None = None          # M-BEIR's root folder (or $MMBENCH_MBEIR_ROOT)
    mini_root: Path | None = None          # where mbeir-mini is built (default: in the cache)
    output: Path = Path("results")
    cache_dir: Path = field(default_factory=default_cache_dir)
    instructions: str = "first"            # first | random | none
    seed: int = 2023                       # for --instructions random
    batch_size: int = 32
    top_k: int | None = None               # default: each task's spec (100)
    run_depth: int | None = DEFAULT_RUN_DEPTH  # hits per query written to the run file (None: all top_k);
                                           # not in the hash (scores use every top_k hit), in the folder name
    run_format: str = "trec.gz"            # run files gzip-compressed (trec.gz) or plain (trec): neither the
                                           # hash nor the folder (the same lines); the record names the file
    device: str = "auto"
    search_backend: str = "auto"           # a name of mmbench.search.backend_names(); recorded through
                                           # describe_backend; in the config hash only when inexact
    devices: tuple[str, ...] = ()          # --devices: the search sharded over these devices in one process
                                           # (mmbench.search.backends.sharded); not in the hash: the same bytes
    overwrite: bool = False
    memory_budget_gb: float = 2.0          # largest float32 pool block searched at once; not in the hash:
                                           # every gathered candidate is re-scored by one routine
                                           # (mmbench.search.rescore), so no ranking depends on it (tested)
    chunk_size: int = 4096                 # items per cached embedding chunk; with batch_size, in the hash
                                           # and the cache key when not the defaults (encoding batches)
    verify_data: bool = False              # --verify-data: hash the images' bytes (recorded; cache checked)
    embed_dtype: str = "float32"           # dtype of cached embeddings (float16 halves disk and RAM)
    rerank: str | None = None              # second stage (mmbench.rerank): rescore:<model>, cross-encoder:<path>, mllm-rerank:<path>
    rerank_top_k: int = 10                 # pairs reranked per query; not in scoring_fields: the first-stage
                                           # hash stays the same, the experiment has its own (mmbench.rerank.stage)
    model_options: tuple[tuple[str, object], ...] = ()   # loader options over the catalog's (--model-option k=v)

    def scoring_fields(self) -> dict:
        """The settings that can change scores; their hash is the result's ``config_hash``."""
        return {"model": self.model, "instructions": self.instructions,
                "seed": self.seed if self.instructions == "random" else None,
                "top_k": self.top_k, "embed_dtype": self.embed_dtype,
                **({"batching": self.batching()} if self.batching() else {}),
                **({"model_options": dict(self.model_options)} if self.model_options else {}),
                **({"search_backend": self.search_backend} if not _exact_backend(self.search_backend) else {})}

    def batching(self) -> str:
        """"" for the default batch and chunk size, else ``batch=B,chunk=C``: the embedding cache key's
        field (:func:`mmbench.embeddings.key.batching`). Both change a real model's embeddings (the items
        encoded together), so a non-default value is a configuration of its own; the defaults leave the
        hash and the cache keys as they were."""
        from mmbench.embeddings.key import batching

        return batching(self.batch_size, self.chunk_size)

    def variant(self) -> str:
        """"" for the default configuration, else the suffix of its results folder (``<suite>__<variant>``,
        :func:`mmbench.results.layout.result_dir`): the readable settings that differ from the defaults,
        ``topk=50``, ``instructions=none``, ``instructions=random__seed=7``, ``dtype=float16``,
        ``batch=64+chunk=4096``, ``depth=all``, in that order; an inexact search backend adds
        ``cfg-<first 8 of config_hash>``. Model options are not here: they give the model its own
        revision folder. So two configurations whose scores can differ never share a folder."""
        f = self.scoring_fields()
        parts = []
        if f["top_k"] is not None:
            parts.append(f"topk={f['top_k']}")
        if f["instructions"] != "first":
            parts.append(f"instructions={f['instructions']}")
            if f["seed"] is not None:
                parts.append(f"seed={f['seed']}")
        if f["embed_dtype"] != "float32":
            parts.append(f"dtype={f['embed_dtype']}")
        if f.get("batching"):
            parts.append(f["batching"].replace(",", "+"))
        if "search_backend" in f:            # (model options have their own revision folder)
            parts.append(f"cfg-{self.config_hash()[:8]}")
        if self.run_depth != DEFAULT_RUN_DEPTH:
            parts.append(f"depth={'all' if self.run_depth is None else self.run_depth}")
        return "__".join(parts)

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.scoring_fields(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model_options"] = dict(self.model_options)
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    def mbeir_root(self) -> Path | None:
        if self.data_root is not None:
            return Path(self.data_root)
        env = os.environ.get("MMBENCH_MBEIR_ROOT")
        return Path(env) if env else None


def _exact_backend(name: str) -> bool:
    """Whether search backend ``name`` is exact. An exact backend's ranking is the reference's, so it
    leaves the config hash (and the cached results) as they are; an inexact one (or an unknown name,
    refused later by the search) changes the hash, so its results never mix with exact ones."""
    if name == "auto":
        return True
    from mmbench.errors import UnknownNameError
    from mmbench.search import get_backend

    try:
        return bool(get_backend(name).exact)
    except UnknownNameError:
        return False


def parse_model_options(pairs: list[str] | tuple[str, ...]) -> tuple[tuple[str, object], ...]:
    """``["key=value", ...]`` -> sorted ``((key, value), ...)``; a value that reads as JSON (``8``,
    ``true``, ``null``, ``"x"``) is that, anything else the string itself (``/models/x.pth``, ``bf16``)."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"--model-option {pair!r}: expected KEY=VALUE with KEY a Python identifier (e.g. path=/models/x)")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out[key] = value
    return tuple(sorted(out.items()))
