"""Real offline text retrieval tasks in mteb's data format, built deterministically from Debian packages.

Two tasks (each written as an mteb/HF dataset folder: ``corpus``, ``queries`` and ``default`` (=qrels)
parquet configs declared in a ``README.md`` ``configs:`` block, split ``test``; mteb's own
``RetrievalDatasetLoader`` and mmbench's ``mteb`` loader read the same folder):

``TuxPaintXLingualRetrieval`` (``tuxpaint-stamps-default``)
    Query: a stamp caption in German, Spanish, French, Italian, Dutch or Portuguese (human
    translations). Documents: the distinct English captions (one document per distinct text, so no two
    documents tie). Relevant: the English caption(s) of every stamp carrying that translation (a
    translation shared by stamps with different English captions has all of them). Translations equal
    to the English caption are skipped (not cross-lingual).

``WordNetGlossRetrieval`` (``wordnet-base``; 117,659 documents)
    Documents: one per synset, its *lemma entry without the definition*: title = the synset's lemmas
    ("dog, domestic dog, Canis familiaris"), text = part of speech, the lemmas of its hypernyms
    (``a kind of``), or for satellite adjectives the head adjective (``similar to``), and its usage
    examples. Query: the synset's gloss definition (text before the first quoted example).
    Relevant: every synset whose definition is exactly that text (identical glosses are merged into
    one query). Why non-trivial: the query shares almost no words with its entry (a definition, not a
    name); polysemy puts many entries with the same lemmas in the corpus (``bank`` has 10 noun senses
    and 8 verb senses) that differ only in hypernyms and examples; and synonym sets must be matched
    from a paraphrase. 1,000 queries are sampled by the sha256 of the synset id (deterministic,
    independent of file order); every synset stays in the corpus as a distractor.
    ``WordNetGlossRetrieval-5k``/``-10k`` keep the first 300/1,000 sampled queries and a corpus of
    5,000/10,000 entries: all their positives plus distractors chosen by the same hash order.

Same input -> byte-identical parquet files (sorted rows, fixed schema, no timestamps).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mmbench.data.families.mbeir import file_fingerprint
from mmbench.errors import DataError

WORDNET_ROOT = Path("/usr/share/wordnet")
STAMPS_ROOT = Path("/usr/share/tuxpaint/stamps")
BUILDER_VERSION = "1"
XLINGUAL_LANGS = ("de", "es", "fr", "it", "nl", "pt")
WORDNET_QUERIES = 1000
POS_NAMES = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}

TASKS = {
    # name -> (builder, kwargs)
    "TuxPaintXLingualRetrieval": ("tuxpaint", {}),
    "WordNetGlossRetrieval": ("wordnet", {"n_queries": WORDNET_QUERIES, "n_docs": None}),
    "WordNetGlossRetrieval-10k": ("wordnet", {"n_queries": 1000, "n_docs": 10_000}),
    "WordNetGlossRetrieval-5k": ("wordnet", {"n_queries": 300, "n_docs": 5_000}),
}

README = """---
configs:
- config_name: corpus
  data_files:
  - split: test
    path: corpus/test.parquet
- config_name: queries
  data_files:
  - split: test
    path: queries/test.parquet
- config_name: default
  data_files:
  - split: test
    path: qrels/test.parquet
---
# {name}

Built by mmbench (`mmbench data build-text`) from the Debian package `{package}`.
{description}
"""


def default_text_root() -> Path:
    """``$MMBENCH_DATA/mteb-text``; default ``<mmbench home>/data/mteb-text`` (:func:`mmbench.config.data_home`)."""
    from mmbench.config import data_home

    return data_home() / "mteb-text"


@dataclass
class Built:
    corpus: list[dict]        # {"id", "title", "text"}
    queries: list[dict]       # {"id", "text"}
    qrels: list[dict]         # {"query-id", "corpus-id", "score"}
    package: str
    description: str


# ------------------------------------------------------------------------------------------------
# TuxPaint cross-lingual captions


def build_tuxpaint(stamps_root: Path = STAMPS_ROOT) -> Built:
    from mmbench.data.builders.mini import scan_stamps

    stamps = scan_stamps(stamps_root)
    doc_of: dict[str, str] = {}
    for s in stamps:                              # stamps sorted by path: first stamp names the doc
        doc_of.setdefault(s.caption, "en-" + _slug(s.rel))
    corpus = sorted(({"id": d, "title": "", "text": cap} for cap, d in doc_of.items()), key=lambda r: r["id"])
    rel: dict[tuple[str, str], set[str]] = {}
    for s in stamps:
        for lang in XLINGUAL_LANGS:
            t = s.translations.get(lang, "").strip()
            if t and t != s.caption:
                rel.setdefault((lang, t), set()).add(doc_of[s.caption])
    queries, qrels = [], []
    for (lang, text), docs in sorted(rel.items()):
        qid = f"{lang}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
        queries.append({"id": qid, "text": text})
        qrels += [{"query-id": qid, "corpus-id": d, "score": 1} for d in sorted(docs)]
    return Built(corpus, queries, qrels, "tuxpaint-stamps-default",
                 "Query: a stamp caption in de/es/fr/it/nl/pt; document: the distinct English captions.")


def _slug(rel: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", rel)


# ------------------------------------------------------------------------------------------------
# WordNet glosses


@dataclass
class Synset:
    id: str
    pos: str
    lemmas: list[str]
    hypernyms: list[str]      # synset ids (@, @i; & for satellite adjectives)
    definition: str
    examples: list[str]


_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def parse_wordnet(root: Path = WORDNET_ROOT) -> list[Synset]:
    """Every synset of ``data.{noun,verb,adj,adv}``, in file order."""
    out: list[Synset] = []
    for fname in ("noun", "verb", "adj", "adv"):
        path = Path(root) / f"data.{fname}"
        if not path.is_file():
            raise DataError(path, "WordNet not found. Install it with `sudo apt-get install wordnet-base`")
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                head, _, gloss = line.partition(" | ")
                parts = head.split()
                offset, ss_type = parts[0], parts[2]
                n_words = int(parts[3], 16)
                lemmas = [_MARKER.sub("", parts[4 + 2 * i]).replace("_", " ") for i in range(n_words)]
                j = 4 + 2 * n_words
                n_ptr = int(parts[j])
                hyper = []
                for p in range(n_ptr):
                    sym, off, pos = parts[j + 1 + 4 * p: j + 4 + 4 * p]
                    if sym in ("@", "@i") or (ss_type == "s" and sym == "&"):
                        hyper.append(f"{'a' if pos == 's' else pos}{off}")
                definition, examples = _split_gloss(gloss.strip())
                pos_key = "a" if ss_type == "s" else ss_type
                out.append(Synset(f"{pos_key}{offset}", ss_type, lemmas, hyper, definition, examples))
    return out


def _split_gloss(gloss: str) -> tuple[str, list[str]]:
    """``'a domestic dog; "the dog barked"'`` -> (``'a domestic dog'``, [``'the dog barked'``])."""
    q = gloss.find('"')
    definition = (gloss if q < 0 else gloss[:q]).strip().rstrip(";").strip()
    examples = re.findall(r'"([^"]+)"', gloss[q:]) if q >= 0 else []
    return definition, [e.strip() for e in examples if e.strip()]


def _entry(s: Synset, by_id: dict[str, Synset]) -> dict:
    bits = [POS_NAMES[s.pos]]
    heads = [", ".join(by_id[h].lemmas[:3]) for h in s.hypernyms if h in by_id]
    if heads:
        bits.append(("similar to: " if s.pos == "s" else "a kind of: ") + "; ".join(heads))
    if s.examples:
        bits.append("usage: " + " / ".join(s.examples))
    return {"id": f"wn-{s.id}", "title": ", ".join(s.lemmas), "text": ". ".join(bits)}


def _hash(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def build_wordnet(root: Path = WORDNET_ROOT, *, n_queries: int = WORDNET_QUERIES, n_docs: int | None = None) -> Built:
    synsets = parse_wordnet(root)
    by_id = {s.id: s for s in synsets}
    by_def: dict[str, list[str]] = {}
    for s in synsets:
        if len(s.definition.split()) >= 3:
            by_def.setdefault(s.definition, []).append(s.id)
    order = sorted(by_id, key=lambda i: _hash("wordnet-gloss:" + i))     # deterministic sample order
    chosen, seen = [], set()
    for sid in order:
        d = by_id[sid].definition
        if d in by_def and d not in seen:
            seen.add(d)
            chosen.append(d)
            if len(chosen) == n_queries:
                break
    queries, qrels, positives = [], [], set()
    for d in chosen:
        qid = "q-" + _hash(d)[:12]
        queries.append({"id": qid, "text": d})
        for sid in sorted(by_def[d]):
            qrels.append({"query-id": qid, "corpus-id": f"wn-{sid}", "score": 1})
            positives.add(sid)
    if n_docs is None:
        keep = set(by_id)
    else:
        if len(positives) > n_docs:
            raise ValueError(f"{len(positives)} positives do not fit in {n_docs} documents")
        keep = set(positives)
        for sid in order:
            if len(keep) >= n_docs:
                break
            keep.add(sid)
    corpus = sorted((_entry(by_id[s], by_id) for s in keep), key=lambda r: r["id"])
    queries.sort(key=lambda r: r["id"])
    qrels.sort(key=lambda r: (r["query-id"], r["corpus-id"]))
    return Built(corpus, queries, qrels, "wordnet-base",
                 "Query: a WordNet gloss definition; document: a synset's lemma entry (lemmas, part of speech, "
                 "hypernym lemmas, usage examples) without its definition.")


# ------------------------------------------------------------------------------------------------
# Writing


def write_mteb_folder(out: Path, name: str, built: Built) -> dict:
    """Write ``built`` as an HF/mteb dataset folder; returns the manifest (counts, sha256 of files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    tables = {
        "corpus": pa.table({k: [r[k] for r in built.corpus] for k in ("id", "title", "text")},
                           schema=pa.schema([("id", pa.string()), ("title", pa.string()), ("text", pa.string())])),
        "queries": pa.table({k: [r[k] for r in built.queries] for k in ("id", "text")},
                            schema=pa.schema([("id", pa.string()), ("text", pa.string())])),
        "qrels": pa.table({k: [r[k] for r in built.qrels] for k in ("query-id", "corpus-id", "score")},
                          schema=pa.schema([("query-id", pa.string()), ("corpus-id", pa.string()),
                                            ("score", pa.int32())])),
    }
    files = {}
    for config, table in tables.items():
        path = out / config / "test.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp, compression="zstd", write_statistics=False)
        os.replace(tmp, path)
        files[f"{config}/test.parquet"] = file_fingerprint(path)
    (out / "README.md").write_text(README.format(name=name, package=built.package, description=built.description),
                                   encoding="utf-8")
    manifest = {"name": name, "builder_version": BUILDER_VERSION, "package": built.package,
                "counts": {"corpus": len(built.corpus), "queries": len(built.queries), "qrels": len(built.qrels)},
                "files": files}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def build_task(name: str, out: Path, *, stamps_root: Path = STAMPS_ROOT, wordnet_root: Path = WORDNET_ROOT) -> dict:
    kind, kwargs = TASKS[name]
    built = build_tuxpaint(stamps_root) if kind == "tuxpaint" else build_wordnet(wordnet_root, **kwargs)
    return write_mteb_folder(out, name, built)


def ensure_text_task(name: str, root: Path | None = None) -> Path:
    """The folder of offline task ``name`` under ``root`` (default :func:`default_text_root`), built if missing."""
    folder = Path(root or default_text_root()) / name
    manifest = folder / "MANIFEST.json"
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text())["builder_version"] == BUILDER_VERSION:
                return folder
        except (ValueError, KeyError):
            pass
    build_task(name, folder)
    return folder
