"""Prompts, tokenisation, instruction lengths and the 336-px global image view of MM-Embed.

Follows ``modeling_nvmmembed.py``'s ``encode`` (mmembed.md §4.2, §4.4, §4.5, §6):

* query with instruction: ``Instruct: {instruction}\\nQuery: `` + (``<image>\\n`` if image) + text;
  query without: ``Query: `` + …; candidate: (``<image>\\n``) + text — no prefix;
* BOS + tokens + EOS (``add_eos_token=True``), right truncation to ``max_length`` keeping EOS,
  right padding;
* the instruction length = token count of ``Instruct: {instruction}`` tokenised alone *with* BOS and
  EOS, so the first ``n + 2`` positions (BOS, the instruction, the ``\\n``) leave the pooling mask;
* image: the whole image squashed to 336×336 (bicubic, aspect ratio not kept), ×1/255, CLIP mean/std
  — the global view of LLaVA-NeXT AnyRes, the only one MM-Embed keeps.

The tokenizer is the folder's own ``tokenizer.json`` loaded verbatim (as transformers 4.42 did);
``AutoTokenizer`` in transformers 5 would rebuild a Llama tokenizer's normaliser/pre-tokeniser from
class defaults, which changes ids around ``<image>`` and newlines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.errors import DataError

IMAGE_TOKEN = "<image>"
QUERY_PREFIX = "Query: "
INSTRUCTION_TEMPLATE = "Instruct: {instruction}\n"

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def build_prompt(text: str | None, *, has_image: bool, instruction: str | None, is_query: bool) -> str:
    """The original template, with ``<image>\\n`` dropped when there is no image and ``<text>`` → text or ""."""
    body = (IMAGE_TOKEN + "\n" if has_image else "") + (text or "")
    if not is_query:
        return body
    if instruction:
        return INSTRUCTION_TEMPLATE.format(instruction=instruction) + QUERY_PREFIX + body
    return QUERY_PREFIX + body


def instruction_part(prompt: str) -> str | None:
    """The text before ``\\nQuery: `` (the masked part), or None when the prompt has no instruction."""
    sep = "\n" + QUERY_PREFIX
    return prompt.split(sep)[0] if sep in prompt else None


def load_tokenizer(folder: Path):
    """The folder's tokenizer: ``tokenizer.json`` verbatim when present, else ``AutoTokenizer``."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (folder / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


class GlobalView:
    """One PIL image → its [3, S, S] float32 global view: squash to S×S (bicubic), centre crop (a no-op),
    rescale, normalise. Holds only the image config, so it pickles cheaply into DataLoader workers."""

    def __init__(self, config: dict[str, Any]):
        self.config = config

    def __call__(self, im) -> np.ndarray:
        from PIL import Image

        c = self.config
        mean = np.asarray(c["image_mean"], dtype=np.float32)
        std = np.asarray(c["image_std"], dtype=np.float32)
        im = im.convert("RGB") if im.mode != "RGB" else im
        im = im.resize((c["resize"], c["resize"]), resample=Image.Resampling(c["resample"]), reducing_gap=None)
        arr = np.asarray(im)
        h, w = c["crop"]
        top, left = (arr.shape[0] - h) // 2, (arr.shape[1] - w) // 2
        arr = arr[top:top + h, left:left + w]
        x = (arr.astype(np.float64) * c["rescale_factor"]).astype(np.float32)
        x = (x - mean) / std
        return x.transpose(2, 0, 1).astype(np.float32)

    def tensor(self, im):
        """The view as a ``torch.Tensor`` (what :func:`mmbench.models.batching.image_batches` stacks)."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(self(im)))


@dataclass
class Encoded:
    input_ids: list[int]
    instruction_length: int      # leading positions (pre-image-expansion) removed from pooling
    n_images: int


class MMEmbedProcessor:
    """Tokenises prompts (BOS/EOS added here, by id) and preprocesses images to the global view."""

    def __init__(self, folder: Path, *, image_token_index: int, image_size: int, max_length: int = 4096):
        self.tokenizer = load_tokenizer(folder)
        tok = self.tokenizer
        if tok.bos_token_id is None or tok.eos_token_id is None:
            raise DataError(folder, "MM-Embed's tokenizer needs BOS and EOS tokens")
        self.bos_id, self.eos_id = tok.bos_token_id, tok.eos_token_id
        self.pad_id = tok.pad_token_id
        found = tok.convert_tokens_to_ids(IMAGE_TOKEN)
        if found != image_token_index:
            raise DataError(folder, f"tokenizer maps {IMAGE_TOKEN} to {found}, config.json says {image_token_index}")
        self.image_token_index = image_token_index
        self.max_length = max_length
        self.image_size = image_size
        self.image_config = self._read_image_config(folder)

    # -- text ---------------------------------------------------------------------------------------
    def _tokens(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def encode(self, prompts: list[str]) -> list[Encoded]:
        bodies = self._tokens(prompts)
        parts = [instruction_part(p) for p in prompts]
        with_instr = [i for i, p in enumerate(parts) if p is not None]
        instr_tokens = self._tokens([parts[i] for i in with_instr]) if with_instr else []
        instr_len = [0] * len(prompts)
        for i, toks in zip(with_instr, instr_tokens):
            instr_len[i] = len(toks) + 2          # + BOS + EOS, as tokenizer(...) with add_eos_token=True
        out = []
        for body, n in zip(bodies, instr_len):
            ids = [self.bos_id] + body[: max(0, self.max_length - 2)] + [self.eos_id]
            out.append(Encoded(ids, n, sum(1 for t in ids if t == self.image_token_index)))
        return out

    # -- images -------------------------------------------------------------------------------------
    def _read_image_config(self, folder: Path) -> dict[str, Any]:
        path = folder / "preprocessor_config.json"
        raw = json.loads(path.read_text()) if path.is_file() else {}
        size = raw.get("size") or {}
        crop = raw.get("crop_size") or {}
        edge = int(size.get("shortest_edge") or size.get("height") or self.image_size)
        crop_hw = (int(crop.get("height", edge)), int(crop.get("width", edge))) if raw.get("do_center_crop", True) else (edge, edge)
        if crop_hw != (self.image_size, self.image_size):
            raise DataError(path, f"global view would be {crop_hw}, the vision tower expects {self.image_size}×{self.image_size}")
        return {
            "source": str(path) if path.is_file() else "defaults (no preprocessor_config.json)",
            "resize": edge,
            "crop": crop_hw,
            "resample": int(raw.get("resample", 3)),
            "rescale_factor": float(raw.get("rescale_factor", 1 / 255)),
            "image_mean": [float(x) for x in raw.get("image_mean", CLIP_MEAN)],
            "image_std": [float(x) for x in raw.get("image_std", CLIP_STD)],
            "image_processor_type": raw.get("image_processor_type"),
        }

    def pixel_values(self, images: list) -> np.ndarray:
        """[n, 3, S, S] float32: the global view (:class:`GlobalView`) of each image."""
        return np.stack([self.global_view(im) for im in images]).astype(np.float32)

    @property
    def global_view(self) -> GlobalView:
        """The image preprocessing alone (no tokenizer), small enough to send to DataLoader workers."""
        return GlobalView(self.image_config)

    def settings(self) -> dict[str, Any]:
        from PIL import Image

        c = self.image_config
        return {
            "tokenizer": type(self.tokenizer).__name__ + " (tokenizer.json verbatim)",
            "max_length": self.max_length,
            "truncation": "right (BOS/EOS kept); counts the single <image> token, not its 577 positions",
            "padding_side": "right",
            "special_tokens": {"bos": self.bos_id, "eos": self.eos_id, "pad": self.pad_id,
                               "image": self.image_token_index},
            "image_view": f"global only: squash to {c['resize']}x{c['resize']} (aspect ratio not kept)",
            "resample": Image.Resampling(c["resample"]).name,
            "rescale_factor": c["rescale_factor"],
            "image_mean": c["image_mean"],
            "image_std": c["image_std"],
            "preprocessor_config": c["source"],
        }
