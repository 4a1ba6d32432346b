"""``mm-embed:<folder-or-hub-id>``: the ``mm-embed`` metadata pointed at another copy of the checkpoint
(no torch import). A folder's revision is ``local:`` + 12 hex digits of the sha256 of its
``config.json`` and ``model.safetensors.index.json``; a hub id's is ``hub``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mmbench.errors import DataError, UnknownNameError
from mmbench.models.base import ModelMeta
from mmbench.models.loading import local_revision, looks_like_path

PREFIX = "mm-embed:"


def resolve_mmembed_model(name: str, base: ModelMeta) -> ModelMeta:
    spec = name[len(PREFIX):].strip()
    if not spec:
        raise UnknownNameError(f"model {name!r}: expected mm-embed:<local-folder-or-hub-id>, e.g. mm-embed:/data/MM-Embed")
    folder = Path(spec).expanduser()
    options = dict(base.options)
    if looks_like_path(spec):
        folder = folder.resolve()
        if not (folder / "config.json").is_file():
            raise DataError(folder, "not an MM-Embed folder (config.json not found)")
        revision, path = local_revision(folder, ("config.json", "model.safetensors.index.json")), str(folder)
        options["revision"] = None
    else:
        revision, path = "hub", spec
        options["revision"] = None
    options["path"] = path
    return replace(base, name=name, revision=revision, options=options, embed_dim=None, n_parameters=None,
                   reference=base.reference if revision != "hub" else f"https://huggingface.co/{path}")
