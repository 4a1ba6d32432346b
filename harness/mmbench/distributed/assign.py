"""Which rank encodes which missing cache chunk: a declared cost per item, and a deterministic,
cost-balanced assignment of chunks to ranks.

**The cost model.** An item's cost is in units of "text tokens through the model":

.. math:: c(\\text{item}) = B + \\frac{|\\text{text}|}{4} + I \\cdot [\\text{item has an image}]

with :data:`ITEM_BASE` :math:`B = 8` (the special tokens, padding and per-item work of any item),
:data:`CHARS_PER_TOKEN` = 4 (a text of :math:`n` characters is about :math:`n/4` tokens for English
BPE vocabularies) and :data:`IMAGE_COST` :math:`I = 600` (a ViT-L/14 at 336 px passes 577 patch
tokens, and MM-Embed feeds those 577 tokens to its 7B LLM besides: an image, or an image+text item,
costs as much as a 2,400-character text). A chunk's cost is the sum over its items. The model only
has to rank chunks roughly right: a short caption costs ~15, an image ~600, so a chunk of
image+text candidates weighs ~40x a chunk of captions, as it does on a GPU.

**The assignment** (:func:`assign`) is greedy list scheduling in the "longest processing time
first" order (Graham, 1969): chunks sorted by cost, highest first (ties by their position in the
list), each given to the rank with the least cost so far (ties: the lowest rank). It is a pure
function of the cost list and the number of ranks, so every rank computes the same assignment
from the same broadcast list. Bounds (tested): the shares are disjoint and cover every chunk, and
each rank's load is at most ``total / ranks + max_cost``: when the most loaded rank received its
last chunk, it was the least loaded, so all ranks then carried at least its load minus that chunk,
i.e. ``load - c <= total / ranks``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["CHARS_PER_TOKEN", "IMAGE_COST", "ITEM_BASE", "assign", "chunk_cost", "item_cost", "loads"]

ITEM_BASE = 8.0            # any item: special tokens, padding, bookkeeping (in text tokens)
CHARS_PER_TOKEN = 4.0      # characters of text per token
IMAGE_COST = 600.0         # an image: a ViT-L/14-336's 577 patch tokens (and an MLLM's 577 input tokens)


def item_cost(text: str | None, has_image: bool) -> float:
    """The declared cost of one item (module docstring)."""
    return ITEM_BASE + (len(text) / CHARS_PER_TOKEN if text else 0.0) + (IMAGE_COST if has_image else 0.0)


def chunk_cost(texts: Sequence[str | None], image_paths: Sequence[str | None], start: int, stop: int) -> float:
    """The cost of items ``start:stop`` of a table given as its text and image-path columns."""
    n = max(0, min(stop, len(texts)) - start)
    chars = sum(len(t) for t in texts[start:stop] if t)
    images = sum(1 for p in image_paths[start:stop] if p)
    return n * ITEM_BASE + chars / CHARS_PER_TOKEN + images * IMAGE_COST


def assign(costs: Sequence[float], ranks: int) -> list[list[int]]:
    """Rank ``r``'s share of the chunks ``0..len(costs)-1``, ``shares[r]`` in increasing order
    (longest-processing-time-first greedy; module docstring)."""
    if ranks < 1:
        raise ValueError(f"need at least one rank, got {ranks}")
    order = sorted(range(len(costs)), key=lambda i: (-float(costs[i]), i))
    load = [0.0] * ranks
    shares: list[list[int]] = [[] for _ in range(ranks)]
    for i in order:
        r = min(range(ranks), key=lambda k: (load[k], k))
        shares[r].append(i)
        load[r] += float(costs[i])
    return [sorted(s) for s in shares]


def loads(costs: Sequence[float], shares: Sequence[Sequence[int]]) -> list[float]:
    """Each rank's total cost under ``shares``."""
    return [sum(float(costs[i]) for i in share) for share in shares]
