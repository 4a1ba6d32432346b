"""The typed boundary between loaders and the rest of the pipeline.

Pools can hold millions of candidates (M-BEIR's global pool has 5.6M), so they are stored column-wise
in an :class:`ItemTable` and turned into :class:`Item` objects only batch by batch. Images are never
decoded here: an :class:`ImageRef` decodes on :meth:`ImageRef.load`.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mmbench.errors import DataError

if TYPE_CHECKING:
    import numpy as np

TEXT, IMAGE, IMAGE_TEXT = "text", "image", "image,text"
MODALITIES = (TEXT, IMAGE, IMAGE_TEXT)


def modality_parts(modality: str) -> frozenset[str]:
    """``"image,text"`` -> ``{"image", "text"}``; accepts either order ("text,image" too)."""
    parts = frozenset(p.strip() for p in modality.split(","))
    if not parts or not parts <= {TEXT, IMAGE}:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    return parts


@functools.lru_cache(maxsize=256)
def canonical_modality(modality: str) -> str:
    """``"text,image"`` -> ``"image,text"``: the one spelling of a modality (ValueError for an unknown one).
    Cached: it is asked once or twice per item of a table."""
    parts = modality_parts(modality)
    return IMAGE_TEXT if len(parts) == 2 else next(iter(parts))


@dataclass(frozen=True)
class ImageRef:
    """An image file on disk, decoded only when :meth:`load` is called."""

    path: Path

    def load(self):
        """Decode to an RGB ``PIL.Image`` (alpha composited on white). Errors name the file."""
        from PIL import Image

        try:
            with Image.open(self.path) as im:
                im.load()
                if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
                    canvas.paste(rgba, mask=rgba.getchannel("A"))
                    return canvas
                return im.convert("RGB")
        except FileNotFoundError:
            raise DataError(self.path, "image file not found") from None
        except Exception as exc:  # PIL raises several types for corrupt files
            raise DataError(self.path, f"cannot decode image ({type(exc).__name__}: {exc})") from None


def format_string(s: str | None) -> str:
    """UniIR's text normalisation (``format_string`` in UniIR's ``mbeir_dataset.py``).

    Strip, drop ``\\r``, strip surrounding double quotes, upper-case the first character, and
    append ``.`` unless the text already ends in ``.``, ``?`` or ``!``. Empty stays empty.
    """
    if not s:
        return ""
    s = s.strip().replace("\r", "").strip('"').strip()
    if not s:
        return ""
    s = s[0].upper() + s[1:]
    if s[-1] not in ".?!":
        s += "."
    return s


@dataclass(slots=True)
class Item:
    """One query or candidate: text, image or both, plus (queries only) the instruction drawn for it.

    A plain slots class (not frozen): pools are turned into items batch by batch on the encoding
    path, and a frozen dataclass costs several times more to construct (docs/perf.md, "Data
    loading"). Treat items as read-only.
    """

    id: str
    modality: str
    text: str | None = None          # normalised text (UniIR format_string); None when absent
    image: ImageRef | None = None
    instruction: str | None = None   # the task instruction chosen for this query, if any
    raw_text: str | None = None      # query text as shipped, for models with their own prompt template

    def prompted_text(self) -> str | None:
        """UniIR's query text: ``format_string(f"{instruction} {raw_text}")``; plain text without one."""
        if self.instruction is None:
            return self.text
        return format_string(f"{self.instruction} {self.raw_text or ''}")


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a moment (and back on, if it was).

    Building thousands of items (which hold no cycles) triggers collections that walk every object
    of the process, which in a process holding many objects (mteb, a notebook) costs most of the
    build (docs/perf.md, "Data loading").
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class ItemTable:
    """Column-wise storage of items that share one root folder for their images."""

    ids: list[str]
    modalities: list[str]
    texts: list[str | None]
    image_paths: list[str | None]            # relative to ``root``
    root: Path
    raw_texts: list[str | None] | None = None
    instructions: list[str | None] | None = None
    source: str = ""                         # file the items came from, for messages

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in ("modalities", "texts", "image_paths"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ItemTable column {name} has {len(getattr(self, name))} rows, ids has {n}")

    def __len__(self) -> int:
        return len(self.ids)

    def item(self, i: int) -> Item:
        img = self.image_paths[i]
        return Item(
            id=self.ids[i],
            modality=self.modalities[i],
            text=self.texts[i],
            image=ImageRef(self.root / img) if img else None,
            instruction=self.instructions[i] if self.instructions is not None else None,
            raw_text=self.raw_texts[i] if self.raw_texts is not None else None,
        )

    def items(self, start: int = 0, stop: int | None = None) -> list[Item]:
        stop = len(self) if stop is None else min(stop, len(self))
        root, n = self.root, max(0, stop - start)
        images = [ImageRef(root / p) if p else None for p in self.image_paths[start:stop]]
        instructions = self.instructions[start:stop] if self.instructions is not None else [None] * n
        raw_texts = self.raw_texts[start:stop] if self.raw_texts is not None else [None] * n
        with _collector_paused():
            return list(map(Item, self.ids[start:stop], self.modalities[start:stop], self.texts[start:stop],
                            images, instructions, raw_texts))

    def duplicate_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, sources): each row whose item has the same content (modality, text, image path,
        instruction, raw text) as an earlier row, and the first row with that content."""
        import numpy as np

        n = len(self)
        if n == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        columns = [c for c in (self.modalities, self.texts, self.image_paths, self.instructions, self.raw_texts)
                   if c is not None and c.count(c[0]) != n]          # a constant column decides nothing
        content = columns[0] if len(columns) == 1 else list(zip(*columns)) if columns else [None] * n
        first = dict(zip(reversed(content), range(n - 1, -1, -1)))   # content -> its first row
        source = np.fromiter(map(first.__getitem__, content), np.int64, count=n)
        rows = np.flatnonzero(source != np.arange(n))
        return rows, source[rows]

    def slice(self, start: int, stop: int) -> ItemTable:
        """Rows ``start:stop`` as a table of their own (same root and source; columns copied as lists)."""
        def cut(column):
            return column[start:stop] if column is not None else None

        return ItemTable(self.ids[start:stop], self.modalities[start:stop], self.texts[start:stop],
                         self.image_paths[start:stop], root=self.root, raw_texts=cut(self.raw_texts),
                         instructions=cut(self.instructions), source=self.source)

    @staticmethod
    def concat(tables: Sequence[ItemTable], source: str = "") -> ItemTable:
        """Concatenate tables. Tables with one root keep it (and their relative image paths); with
        several roots, images keep their own roots by being stored as absolute paths."""
        one_root = len({Path(t.root) for t in tables}) == 1
        out = ItemTable([], [], [], [], root=Path(tables[0].root) if one_root else Path("/"), source=source)
        for t in tables:
            out.ids += t.ids
            out.modalities += t.modalities
            out.texts += t.texts
            out.image_paths += t.image_paths if one_root else [str(t.root / p) if p else None for p in t.image_paths]
        return out


@dataclass(frozen=True)
class PoolPart:
    """Rows ``start:stop`` of a pool, embedded as one table under the cache identity ``key`` (the
    sha256 of the bytes those rows were read from)."""

    start: int
    stop: int
    key: str


@dataclass
class PoolData:
    """A candidate pool loaded on its own, without any task's queries (a local pool, or a suite's
    global pool).

    ``key`` is the pool's identity: the sha256 of the bytes its rows were read from (for a local
    pool, its file's: the ``pool_key`` of the tasks that search it). A global pool is embedded part
    by part (``parts``, in row order, covering every row once), each part through the embedding
    cache under its own key, so that a part with the bytes of a local pool file shares that pool's
    cache entry; a pool without parts is one part.
    """

    table: ItemTable
    key: str
    fingerprints: dict[str, str]             # role -> sha256, as in TaskData.fingerprints ("pool")
    parts: list[PoolPart] = field(default_factory=list)
    source: str = ""                         # what it was read from, for messages
    # the images fingerprint of each part of part_list() (pipeline.plan.Plan.load), None until computed
    part_images: list[str | None] | None = None
    _id_set: frozenset[str] | None = field(default=None, init=False, repr=False, compare=False)

    def part_list(self) -> list[PoolPart]:
        """``parts``, or the whole table as one part."""
        return self.parts or [PoolPart(0, len(self.table), self.key)]

    def id_set(self) -> frozenset[str]:
        """The pool's candidate ids as a set, made once (every task of a global suite checks its qrels
        against it)."""
        if self._id_set is None:
            self._id_set = frozenset(self.table.ids)
        return self._id_set


Qrels = dict[str, dict[str, int]]
"""``{query_id: {candidate_id: relevance}}``; relevance > 0 means relevant (trec_eval's rule)."""


@dataclass
class TaskData:
    """Everything a retrieval task needs, loaded and validated."""

    name: str
    queries: ItemTable
    pool: ItemTable
    qrels: Qrels
    fingerprints: dict[str, str]             # role -> sha256 of the file(s) it came from
    pool_key: str                            # identity of the candidate pool (shared pools share it)
    notes: list[str] = field(default_factory=list)   # warnings worth recording in results
    ignore_identical_ids: bool = False        # mteb: drop a retrieved candidate whose id equals the query id
    mteb: dict | None = None                  # mteb task identity (name, path, revision, split, main_score)
