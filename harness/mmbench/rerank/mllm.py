"""``mllm-rerank:<folder-or-hub-id>``: zero-shot LLaVA-Next reranking as in MM-Embed's paper.

Each pair becomes one user turn: ``Query:`` (its image, then its text), ``Candidate:`` (its image, then its
text), then a yes/no question chosen by the pair's modalities (:data:`QUESTIONS`, the per-task-type prompt,
e.g. "Does the candidate image match the query text?"), followed by "Answer True or False.". The turn is
rendered with the processor's chat template when it has one (llava-v1.6-* do), else in LLaVA-Next Mistral's
format ``[INST] ... [/INST]``. Query text is the query without its task instruction (the question states the
task); nothing is truncated (truncation could cut image tokens).

Relevance = P("True") from the next-token logits at the last prompt position, **restricted** to the two
answer tokens: ``softmax([logit("True"), logit("False")])[0]`` (monoT5's rule; bounded in [0, 1] and
independent of the rest of the vocabulary). ``normalize="full"`` uses the softmax over the full vocabulary
instead. The answer tokens are the first token of ``tokenizer("True")`` / ``tokenizer("False")`` without
special tokens. Batches are right-padded and the logit is read at each row's last real token, so a pair's
score does not depend on its batch; ``--batch-size`` counts pairs. bfloat16 on a GPU, float32 on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmbench.data.types import Item
from mmbench.rerank.base import PairwiseReranker, RerankerMeta, device_of

_DESC = {"text": "text", "image": "image", "image,text": "image and its text"}
QUESTIONS: dict[tuple[str, str], str] = {
    ("text", "text"): "Is the candidate text relevant to the query text?",
    ("text", "image"): "Does the candidate image match the query text?",
    ("text", "image,text"): "Does the candidate image and its text match the query text?",
    ("image", "text"): "Does the candidate text describe the query image?",
    ("image", "image"): "Does the candidate image show the same thing as the query image?",
    ("image", "image,text"): "Does the candidate image and its text match the query image?",
    ("image,text", "text"): "Does the candidate text answer the query image and its text?",
    ("image,text", "image"): "Does the candidate image match the query image modified as its text asks?",
    ("image,text", "image,text"): "Does the candidate image and its text match the query image and its text?",
}
ANSWER = "Answer True or False."


def item_modality(item: Item, *, text: str | None) -> str:
    if item.image is not None and text:
        return "image,text"
    return "image" if item.image is not None else "text"


def build_content(query: Item, candidate: Item) -> list[dict]:
    """The user turn of one pair as chat-template content (``{"type": "image"}`` marks an image)."""
    content: list[dict] = []
    for label, item in (("Query:", query), ("Candidate:", candidate)):
        content.append({"type": "text", "text": label})
        if item.image is not None:
            content.append({"type": "image"})
        if item.text:
            content.append({"type": "text", "text": item.text})
    key = (item_modality(query, text=query.text), item_modality(candidate, text=candidate.text))
    content.append({"type": "text", "text": f"{QUESTIONS[key]} {ANSWER}"})
    return content


def fallback_prompt(content: list[dict], image_token: str) -> str:
    """LLaVA-Next Mistral's format for processors without a chat template."""
    parts = [f"{image_token}\n" if c["type"] == "image" else c["text"] + "\n" for c in content]
    return "[INST] " + "".join(parts).rstrip("\n") + " [/INST]"


class MllmReranker(PairwiseReranker):
    def __init__(self, meta: RerankerMeta, *, device: str = "auto", normalize: str = "restricted"):
        import torch
        from transformers import AutoProcessor, LlavaNextForConditionalGeneration

        if normalize not in ("restricted", "full"):
            raise ValueError(f"normalize must be 'restricted' or 'full', got {normalize!r}")
        self.meta, self.normalize = meta, normalize
        self.device = device_of(device)
        self.dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        path = meta.options.get("path", meta.model)
        self.processor = AutoProcessor.from_pretrained(path)
        self.processor.tokenizer.padding_side = "right"
        self.model = LlavaNextForConditionalGeneration.from_pretrained(path, dtype=self.dtype).to(self.device).eval()
        tok = self.processor.tokenizer
        self.answer_ids = [tok(w, add_special_tokens=False).input_ids[0] for w in ("True", "False")]
        if self.answer_ids[0] == self.answer_ids[1]:
            raise ValueError(f"{path}: 'True' and 'False' start with the same token")
        self.image_token = getattr(self.processor, "image_token", "<image>")
        self.has_template = bool(getattr(self.processor, "chat_template", None))

    def prompt(self, query: Item, candidate: Item) -> str:
        content = build_content(query, candidate)
        if self.has_template:
            return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=True, tokenize=False)
        return fallback_prompt(content, self.image_token)

    def score(self, queries: Sequence[Item], candidates: Sequence[Item], *, batch_size: int) -> np.ndarray:
        out = np.empty(len(queries), dtype=np.float64)
        for lo in range(0, len(queries), max(batch_size, 1)):
            qs, cs = queries[lo: lo + batch_size], candidates[lo: lo + batch_size]
            out[lo: lo + len(qs)] = self._score_batch(qs, cs)
        return out

    def _score_batch(self, queries: Sequence[Item], candidates: Sequence[Item]) -> np.ndarray:
        import torch

        prompts = [self.prompt(q, c) for q, c in zip(queries, candidates, strict=True)]
        images = [it.image.load() for q, c in zip(queries, candidates) for it in (q, c) if it.image is not None]
        inputs = self.processor(text=prompts, images=images or None, padding=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            hidden = self.model.model(**inputs, use_cache=False).last_hidden_state   # (B, L, H); no KV cache
            last = inputs["attention_mask"].sum(dim=1) - 1                    # right padding
            h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
            logits = self.model.lm_head(h).float()                            # (B, V)
            if self.normalize == "restricted":
                p = torch.softmax(logits[:, self.answer_ids], dim=-1)[:, 0]
            else:
                p = torch.softmax(logits, dim=-1)[:, self.answer_ids[0]]
        return p.cpu().numpy().astype(np.float64)

    def settings(self) -> dict[str, Any]:
        return {"prompt": "chat template" if self.has_template else "[INST] ... [/INST]",
                "questions": {f"{q}->{c}": v for (q, c), v in QUESTIONS.items()}, "answer": ANSWER,
                "relevance": f"P('True') of the next token, softmax {self.normalize}",
                "answer_token_ids": self.answer_ids, "dtype": str(self.dtype).replace("torch.", ""),
                "query_text": "without instruction", "device": self.device}


def load_mllm_reranker(meta: RerankerMeta, *, config=None, reporter=None, **_) -> MllmReranker:
    return MllmReranker(meta, device=getattr(config, "device", "auto"), **meta.options.get("mllm", {}))
