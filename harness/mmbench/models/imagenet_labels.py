"""Training-free image↔text baseline: EfficientNet-Lite0 ImageNet labels embedded with MiniLM.

An image becomes the L2-normalised sum, over its top-5 ImageNet classes, of the renormalised class
probability times the (unit) MiniLM embedding of the bare class name; text is embedded by MiniLM.
Both towers are real pretrained models, but this is a baseline, not CLIP (``offline-assets.md`` §1.3,
Appendix A.3). The 1000 class-name embeddings are computed once and cached as ``.npy``.
"""

from __future__ import annotations

import hashlib
import os
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmbench.util.io import save_npy
from mmbench.models.base import FusionEncoder, ModelMeta, Role, l2_normalize
from mmbench.models.builtin import MINILM
from mmbench.models.efficientnet_lite import IMAGE_SIZE, load_efficientnet_lite0, preprocess
from mmbench.models.loading import resolve_device
from mmbench.models.minilm import MiniLMEncoder
from mmbench.models.progress import batch_done

TOP_K = 5
CLASS_BATCH = 128


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in the standard (logit) order."""
    text = files("mmbench").joinpath("resources/imagenet_classes.txt").read_text(encoding="utf-8")
    names = text.splitlines()
    if len(names) != 1000:
        raise RuntimeError(f"mmbench/resources/imagenet_classes.txt has {len(names)} lines, expected 1000")
    return names


def default_cache_dir() -> Path:
    """``<mmbench home>/assets`` (:func:`mmbench.config.mmbench_home`), by default ``~/.cache/mmbench/assets``."""
    from mmbench.config import mmbench_home

    return mmbench_home() / "assets"




class ImagenetLabelsMiniLM(FusionEncoder):
    """The default offline image↔text baseline; ``options``: ``cache_dir``, ``device``, ``minilm_path``."""

    def __init__(self, meta: ModelMeta, *, cache_dir: str | os.PathLike | None = None,
                 device: str = "auto", minilm_path: str | os.PathLike | None = None):
        self.meta = meta
        self.device = resolve_device(device)
        self.text_encoder = MiniLMEncoder(MINILM, path=minilm_path, device=self.device)
        self.classifier = load_efficientnet_lite0(device=self.device)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.class_embeddings = torch.from_numpy(self._class_embeddings()).to(self.device)

    def _class_embeddings(self) -> np.ndarray:
        """Unit MiniLM embeddings of the bare class names, (1000, 384), from the cache when present."""
        names = imagenet_classes()
        names_hash = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
        revision = re.sub(r"[^A-Za-z0-9._-]+", "_", self.text_encoder.revision)
        path = self.cache_dir / f"imagenet-classes-{names_hash}-minilm-{revision}.npy"
        if path.is_file():
            cached = np.load(path)
            if cached.shape == (len(names), self.text_encoder.model.config.hidden_size):
                return cached
        emb = l2_normalize(self.text_encoder.encode_texts(names, role="candidate", batch_size=CLASS_BATCH))
        save_npy(path, emb)
        return emb

    def settings(self) -> dict[str, Any]:
        return {
            **{f"text_{k}": v for k, v in self.text_encoder.settings().items()},
            "image_size": IMAGE_SIZE,
            "image_resample": "bicubic",
            "image_normalization": "(x-127)/128",
            "top_k_classes": TOP_K,
            "class_name_template": "{}",
        }

    def encode_texts(self, texts: list[str], *, role: Role, batch_size: int) -> np.ndarray:
        return self.text_encoder.encode_texts(texts, role=role, batch_size=batch_size)

    @torch.inference_mode()
    def encode_images(self, images: list, *, role: Role, batch_size: int) -> np.ndarray:
        """Σ over the top-5 classes of renormalised p(class) · class embedding (normalised by the caller)."""
        out = []
        for start in range(0, len(images), batch_size):
            pixels = preprocess(images[start:start + batch_size]).to(self.device)
            probs = self.classifier(pixels).softmax(dim=-1)
            top_p, top_i = probs.topk(TOP_K, dim=-1)
            weights = top_p / top_p.sum(dim=-1, keepdim=True)
            out.append(torch.einsum("bk,bkd->bd", weights, self.class_embeddings[top_i]).float().cpu().numpy())
            batch_done(len(pixels))
        return np.concatenate(out)


def load_imagenet_labels_minilm(meta: ModelMeta, **options: Any) -> ImagenetLabelsMiniLM:
    """Registry loader: ``ImagenetLabelsMiniLM(meta, **options)``."""
    return ImagenetLabelsMiniLM(meta, **options)
