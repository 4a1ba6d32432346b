"""``mm-embed:<folder-or-hub-id>``: the ``mm-embed`` metadata pointed at another copy of the checkpoint
(no torch import). A folder's revision is ``local:`` + 12 hex digits of the sha256 of its
``config.json`` and ``model.safetensors.index.json``; a hub id's is ``hub``."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from mmbench.errors import DataError, UnknownNameError
from mmbench.models.base import ModelMeta

PREFIX = "mm-embed:"


def resolve_mmembed_model(name: str, base: ModelMeta) -> ModelMeta:
    spec = name[len(PREFIX):].strip()
    if not spec:
        raise UnknownNameError(f"model {name!r}: expected mm-embed:<local-folder-or-hub-id>, e.g. mm-embed:/data/MM-Embed")
    folder = Path(spec).expanduser()
    options = dict(base.options)
    if spec.startswith(("/", ".", "~")) or folder.exists():
        folder = folder.resolve()
        if not (folder / "config.json").is_file():
            raise DataError(folder, "not an MM-Embed folder (config.json not found)")
        digest = hashlib.sha256()
        for f in ("config.json", "model.safetensors.index.json"):
            if (folder / f).is_file():
                digest.update((folder / f).read_bytes())
        revision, path = "local:" + digest.hexdigest()[:12], str(folder)
        options["revision"] = None
    else:
        revision, path = "hub", spec
        options["revision"] = None
    options["path"] = path
    return replace(base, name=name, revision=revision, options=options, embed_dim=None, n_parameters=None,
                   reference=base.reference if revision != "hub" else f"https://huggingface.co/{path}")
