"""The ``mm-embed`` adapter: MM-Embed natively on current transformers (the checkpoint's own
``modeling_nvmmembed.py`` needs transformers 4.42-4.43 and is not run).

Items → prompts (queries: ``Item.instruction`` + ``Item.raw_text``; candidates: no instruction) →
one token sequence per item with the image's 577 vectors spliced in at ``<image>`` → bidirectional
Mistral → latent-attention pooling with the instruction masked out → unit 4096-d vectors.
Batches are sorted by length (longest first); images are decoded and squashed to the global view
in DataLoader workers (:func:`mmbench.models.batching.image_batches`), in that same order; an
out-of-memory batch is halved and retried (:class:`mmbench.models.batching.OomGuard`); on CUDA the
forward runs in fp16 (the checkpoint's storage dtype) or bf16 under autocast.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmbench.data.types import Item
from mmbench.errors import MmbenchError
from mmbench.models.base import ModelMeta, Role, l2_normalize
from mmbench.models.loading import hub_offline, resolve_device

if TYPE_CHECKING:
    from mmbench.models.batching import OomGuard

HUB_ID = "nvidia/MM-Embed"
HUB_REVISION = "a2542c237b5b700ed01b829689756425441cef97"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
          "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto``: fp16 (the shards' storage dtype, loaded without rounding) on CUDA, fp32 elsewhere."""
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise MmbenchError(f"mm-embed: dtype must be auto, fp32, bf16 or fp16, not {dtype!r}")
    return DTYPES[dtype]


def resolve_folder(path: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder as is; a hub id through the local HF cache (or a download when online)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return p.resolve()
    if str(path).startswith(("/", ".", "~")):
        raise MmbenchError(f"mm-embed: model folder {path} does not exist")
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    try:
        return Path(snapshot_download(str(path), revision=revision, local_files_only=offline,
                                      allow_patterns=["*.json", "*.safetensors"]))
    except Exception as exc:
        raise MmbenchError(
            f"mm-embed: cannot get {path}@{revision or 'main'} ({type(exc).__name__}: {exc}). Download it first, "
            f"e.g. `hf download {path} --revision {revision or 'main'}`, or pass a local folder") from None


class PixelQueue:
    """Pixel rows from ``image_batches`` (fixed-size batches), handed out ``n`` at a time: a
    length-sorted batch of items holds any number of images, from none to all."""

    def __init__(self, batches: Iterator[torch.Tensor]):
        self.batches = batches
        self.rest: torch.Tensor | None = None

    def take(self, n: int) -> torch.Tensor | None:
        """The next ``n`` rows ([n, 3, S, S]), or None for ``n == 0``."""
        if n == 0:
            return None
        chunks = [self.rest] if self.rest is not None else []
        have = sum(len(c) for c in chunks)
        while have < n:
            batch = next(self.batches, None)
            if batch is None:
                raise RuntimeError(f"mm-embed: the image loader ended {n - have} image(s) early")
            chunks.append(batch)
            have += len(batch)
        rows = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
        self.rest = rows[n:] if have > n else None
        return rows[:n]

    def close(self) -> None:
        """Stop the loader now (its worker processes exit) rather than when it is garbage-collected."""
        close = getattr(self.batches, "close", None)
        if close is not None:
            close()


class MMEmbedEncoder:
    """Native MM-Embed. ``options``: ``path`` (folder or hub id), ``device``, ``dtype``, ``max_length``
    (4096, what the card and pyserini pass), ``retriever`` (an NV-Embed config folder; default: the
    built-in NV-Embed-v1 values), ``revision`` (for hub ids), ``num_workers`` (image-decoding
    DataLoader processes; None = automatic, 0 = in this process; as the CLIP adapter)."""

    implementation = "native"

    def __init__(self, meta: ModelMeta, *, path: str = HUB_ID, device: str = "auto", dtype: str = "auto",
                 max_length: int = 4096, retriever: str | None = None, revision: str | None = HUB_REVISION,
                 num_workers: int | None = None):
        from mmbench.models.mmembed.config import read_config
        from mmbench.models.mmembed.modules import MMEmbedModel
        from mmbench.models.mmembed.processor import MMEmbedProcessor
        from mmbench.models.mmembed.weights import load_weights

        self.meta = meta
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.folder = resolve_folder(path, revision if not Path(path).expanduser().is_dir() else None)
        self.config = read_config(self.folder, retriever)
        self.processor = MMEmbedProcessor(self.folder, image_token_index=self.config.image_token_index,
                                          image_size=self.config.image_size, max_length=max_length)
        with torch.device("meta"):
            model = MMEmbedModel(self.config)
        self.stored_dtypes = load_weights(model, self.folder, dtype=self.dtype, device=self.device)
        self.model = model.eval()
        self.embed_dim = self.config.text["hidden_size"]
        self.num_workers = num_workers
        self.last_halvings = 0      # batch halvings in the latest encode() call
        self.oom_halvings = 0       # ... and in all calls so far (settings())

    # -- settings -----------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.startswith("cuda") and self.dtype in (torch.float16, torch.bfloat16):
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def settings(self) -> dict[str, Any]:
        c = self.config
        return {
            "implementation": "native (mmbench re-implementation, no remote code)",
            "folder": str(self.folder),
            "dtype": str(self.dtype).removeprefix("torch."),
            "stored_dtypes": self.stored_dtypes,
            "autocast": str(self.dtype).removeprefix("torch.") if self.device.startswith("cuda") and self.dtype != torch.float32 else "off",
            **self.processor.settings(),
            "tokens_per_image": c.tokens_per_image,
            "vision_feature_layer": c.vision_feature_layer,
            "query_template": "Instruct: {instruction}\\nQuery: [<image>\\n]{text}",
            "candidate_template": "[<image>\\n]{text}",
            "instruction_masking": "BOS + 'Instruct: ...' + '\\n' excluded from pooling",
            "language_model": f"bidirectional Mistral ({c.text_source}), rope_theta {c.text['rope_theta']}",
            "pooling": (f"latent attention ({c.latent['num_latents_value']} latents, {c.latent['num_cross_heads']} heads "
                        f"x {c.latent['cross_dim_head']}) + masked mean + L2"),
            "normalize": True,
            **self.batching_settings(),
        }

    def batching_settings(self) -> dict[str, Any]:
        """Batch order, where images are decoded, and how often an out-of-memory batch was halved."""
        return {"text_order": "longest-first (text tokens + image positions)",
                "image_decoding": "DataLoader workers (mmbench.models.batching.image_batches), length order",
                "image_workers": "auto" if self.num_workers is None else self.num_workers,
                "oom_halvings": self.oom_halvings}

    # -- encoding -----------------------------------------------------------------------------------
    def _prompt(self, item: Item, role: Role) -> str:
        from mmbench.models.mmembed.processor import IMAGE_TOKEN, build_prompt

        text = item.raw_text if item.raw_text is not None else item.text
        if text and IMAGE_TOKEN in text:
            text = text.replace(IMAGE_TOKEN, "")   # a literal <image> would take an image's place
        is_query = role == "query"
        instruction = item.instruction if is_query and self.meta.uses_instructions else None
        if text is None and item.image is None:
            raise ValueError(f"item {item.id!r} has neither text nor image")
        return build_prompt(text, has_image=item.image is not None, instruction=instruction, is_query=is_query)

    def _encode_prompts(self, items: Sequence[Item], role: Role) -> list:
        """Token ids per item; refuses an item whose ``<image>`` token was truncated away."""
        encoded = self.processor.encode([self._prompt(it, role) for it in items])
        for it, enc in zip(items, encoded):
            if enc.n_images != (1 if it.image is not None else 0):
                raise MmbenchError(f"mm-embed: item {it.id!r}: its <image> token did not survive truncation "
                                   f"to {self.processor.max_length} tokens")
        return encoded

    def _pixel_queue(self, refs: list, batch_size: int) -> PixelQueue:
        """Global views of ``refs`` (in the order the batches will need them), decoded in workers."""
        from mmbench.models.batching import image_batches

        batches = image_batches(refs, self.processor.global_view.tensor, batch_size,
                                num_workers=self.num_workers) if refs else iter(())
        return PixelQueue(batches)

    def encode(self, items: Sequence[Item], *, role: Role, batch_size: int) -> np.ndarray:
        from mmbench.models.batching import OomGuard, length_order

        if not items:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        encoded = self._encode_prompts(items, role)
        per_image = self.config.tokens_per_image - 1
        order = [int(i) for i in length_order([len(e.input_ids) + per_image * e.n_images for e in encoded])]
        pixels = self._pixel_queue([items[i].image for i in order if items[i].image is not None], batch_size)
        guard = OomGuard(batch_size)
        try:
            parts = [self._encode_batch(order[s:s + batch_size], encoded, items, pixels, guard)
                     for s in range(0, len(items), batch_size)]
        finally:
            pixels.close()
            self.last_halvings = guard.halvings
            self.oom_halvings += guard.halvings
        out = np.empty((len(items), self.embed_dim), dtype=np.float32)
        out[order] = np.concatenate(parts)
        return l2_normalize(out)

    def _encode_batch(self, rows: list[int], encoded: list, items: Sequence[Item], pixels: PixelQueue,
                      guard: OomGuard) -> np.ndarray:
        """One length-sorted batch through ``guard`` (halved on OOM); its images' pixels are taken
        from the queue once, and each half gets the rows of its own images."""
        with_image = [r for r in rows if items[r].image is not None]
        batch_pixels = pixels.take(len(with_image))
        where = {r: k for k, r in enumerate(with_image)}

        def run(sub: list[int]) -> np.ndarray:
            picked = [where[r] for r in sub if r in where]
            return self._forward([encoded[r] for r in sub], batch_pixels[picked] if picked else None)

        return guard(run, rows)

    def text_tensors(self, encoded: list) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids`` (pad = the tokenizer's pad id, or EOS), ``attention_mask`` and the
        pooling mask (attention mask with the instruction positions zeroed)."""
        pad = self.processor.pad_id if self.processor.pad_id is not None else self.processor.eos_id
        longest = max(len(e.input_ids) for e in encoded)
        ids = torch.full((len(encoded), longest), pad, dtype=torch.long)
        attn = torch.zeros((len(encoded), longest), dtype=torch.long)
        for b, e in enumerate(encoded):
            ids[b, :len(e.input_ids)] = torch.tensor(e.input_ids)
            attn[b, :len(e.input_ids)] = 1
        pool = attn.clone()
        for b, e in enumerate(encoded):
            pool[b, :e.instruction_length] = 0
        return {"input_ids": ids, "attention_mask": attn, "pool_mask": pool}

    def batch_tensors(self, encoded: list, images: list) -> dict[str, torch.Tensor]:
        """:meth:`text_tensors` plus ``pixel_values`` of PIL ``images`` preprocessed here, in this process
        (the in-process reference for what :meth:`encode` gets from the DataLoader workers)."""
        out = self.text_tensors(encoded)
        if images:
            out["pixel_values"] = torch.from_numpy(self.processor.pixel_values(images))
        return out

    @torch.inference_mode()
    def _forward(self, encoded: list, pixels: torch.Tensor | None) -> np.ndarray:
        batch = self.text_tensors(encoded)
        if pixels is not None:
            batch["pixel_values"] = pixels
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with self._autocast():
            emb = self.model(**batch, pad_token_id=self.processor.pad_id)
        return emb.float().cpu().numpy()


def load_mmembed(meta: ModelMeta, *, path: str = HUB_ID, device: str = "auto", dtype: str = "auto",
                 max_length: int = 4096, retriever: str | None = None, revision: str | None = HUB_REVISION,
                 num_workers: int | None = None):
    """Registry loader: the native implementation. (The checkpoint's own ``modeling_nvmmembed.py`` is not
    offered: it needs transformers 4.42-4.43, and mmbench needs 4.45 or later.)"""
    return MMEmbedEncoder(meta, path=path, device=device, dtype=dtype, max_length=max_length,
                          retriever=retriever, revision=revision, num_workers=num_workers)
