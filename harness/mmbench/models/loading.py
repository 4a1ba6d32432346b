"""What a run does to its model before loading it: where its files are, the user's loader options, and
the errors of loading.

* :func:`looks_like_path` tells a local folder or file from a hub id in a model spec, and
  :func:`local_revision` gives a local folder its revision (a digest of the files that define it);
* :func:`hf_source`, :func:`hub_offline`, :func:`hub_commit` and :func:`snapshot_commit`: where
  transformers loads a hub id or folder from, and which hub commit the weights came from;
* :func:`resolve_device` turns ``"auto"`` into the device a model runs on;
* :func:`with_model_options` merges ``--model-option`` values over the catalog's and gives the model
  a revision of its own (their digest), so caches and results under other options never mix;
* :func:`loader_options` names the options a loader takes (for the refusal of an unknown one);
* :func:`is_hub_miss` / :func:`hub_miss_error` turn transformers' "not cached and no hub" ``OSError``
  into one message with the repositories and the command that fetches them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import replace
from pathlib import Path

from mmbench.errors import DataError, MmbenchError
from mmbench.models.base import ModelMeta


PATH_PREFIXES = ("/", ".", "~")     # a spec that starts so is a path even when nothing is there (yet)


def looks_like_path(spec: str) -> bool:
    """Whether a model spec (``clip:<spec>``, ``st:<spec>``, a reranker's, an option's value) names a
    local path rather than a hub id: it starts with ``/``, ``.`` or ``~``, or it exists."""
    return spec.startswith(PATH_PREFIXES) or Path(spec).expanduser().exists()


def local_revision(folder: Path, names: tuple[str, ...]) -> str:
    """``"local:<12 hex>"``: the first 12 hex digits of the sha256 of the bytes of ``folder``'s files
    ``names`` that exist, in that order (absent ones are skipped), so a changed model changes the
    revision, hence the embedding cache key and the results folder."""
    digest = hashlib.sha256()
    for name in names:
        f = Path(folder) / name
        if f.is_file():
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return f"local:{digest.hexdigest()[:12]}"


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` when available, else ``"cpu"``; anything else is returned unchanged."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for no hub access (``1``, ``true``, ``yes`` or ``on``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hf_source(path: str) -> tuple[str, bool]:
    """(name for ``from_pretrained``, ``local_files_only``): a folder, or a hub id (offline when HF_HUB_OFFLINE)."""
    source = Path(path).expanduser()
    offline = hub_offline()
    if source.is_dir():
        return str(source), True
    if path.startswith(("/", "./", "../", "~")):          # meant as a folder: never a hub id
        raise DataError(source, "model folder not found")
    return path, offline


def hub_commit(path: str) -> str | None:
    """The commit a hub id resolved to in the local Hugging Face cache (its snapshot folder), so a
    result records exactly which weights ``hub`` meant; None for a local folder or when unknown."""
    if Path(path).expanduser().is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(path, "config.json")
    return snapshot_commit(Path(cached)) if isinstance(cached, str) else None


def snapshot_commit(path: Path) -> str | None:
    """The hub commit of a file inside a Hugging Face cache snapshot (``.../snapshots/<commit>/...``)."""
    parts = Path(path).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def loader_options(factory) -> str:
    """The keyword options a loader accepts (its own, or its encoder class's when it takes ``**options``)."""
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        target = inspect.signature(factory).return_annotation
        cls = _loader_class(factory, target)
        if cls is not None:
            params = inspect.signature(cls.__init__).parameters
    names = [n for n, p in params.items() if n not in ("self", "meta") and p.kind is not p.VAR_KEYWORD
             and p.kind is not p.VAR_POSITIONAL]
    return ", ".join(names) or "no options"


def _loader_class(factory, annotation):
    """The class a loader's return annotation names, looked up in the loader's module (or None)."""
    module = inspect.getmodule(factory)
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None)
    return getattr(module, name, None) if module is not None and name else None


def with_model_options(meta: ModelMeta, options: tuple[tuple[str, object], ...]) -> ModelMeta:
    """``meta`` with the user's loader options over the catalog's. Options can change the weights or
    the numbers (another ``path``, ``precision``...), so the revision gains their digest: embeddings
    cached and results written under other options are never mixed with these."""
    if not options:
        return meta
    if "trust_remote_code" in dict(options):
        raise MmbenchError("--model-option trust_remote_code is refused: mmbench never runs a checkpoint's "
                           "own code")
    digest = hashlib.sha256(json.dumps(dict(options), sort_keys=True, default=str).encode()).hexdigest()[:10]
    return replace(meta, options={**meta.options, **dict(options)}, revision=f"{meta.revision}+options-{digest}")


def is_hub_miss(exc: OSError) -> bool:
    """transformers / huggingface_hub could not find files: not cached, and the hub offline or unreachable."""
    text = str(exc)
    return any(s in text for s in ("huggingface.co", "cached files", "local_files_only", "offline mode",
                                   "outgoing traffic has been disabled", "is not a local folder"))


def hub_miss_error(meta: ModelMeta, options: dict, exc: OSError) -> MmbenchError:
    """One message for a model whose files are neither local nor reachable: what was looked for,
    and the two ways out (fetch on a connected machine, or point at a local copy)."""
    ids = [str(v) for k, v in options.items() if k in ("path", "processor", "tokenizer", "retriever")
           and isinstance(v, str) and "/" in v and not looks_like_path(v)]
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    fetch = " && ".join(f"hf download {i}" for i in ids) or "hf download <repo>"
    return MmbenchError(
        f"model {meta.name!r}: its files are not on this machine and the Hugging Face hub cannot be reached "
        f"({', '.join(ids) or 'hub files'}; {first}). On a connected machine run `{fetch}` (the cache under "
        f"$HF_HOME carries over), or give the model a local folder (e.g. --model clip:/path/to/folder for CLIP).")
