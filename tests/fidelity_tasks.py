"""Fixture tasks for the mteb fidelity test: the cases real data brings, in BEIR format, from real text.

Each task is written as a BEIR folder (``corpus.jsonl`` with ``_id``/``title``/``text``,
``queries.jsonl``, ``qrels/test.tsv``) that also carries a ``README.md`` ``configs:`` block naming the
corpus, the queries and ``qrels/test.jsonl`` (the same rows: ``datasets`` reads one file format per
folder), so mmbench reads it as a BEIR folder (``--data-root``, the way a user runs an MTEB
task offline) and mteb's own ``RetrievalDatasetLoader`` reads it through ``datasets``. The folders are
named after the mteb task whose spec (``tasks/mteb/<name>.toml``) and metadata mmbench applies, as
for the real data: the texts are stand-ins, the loading path and the task settings are the real ones.

``DUPLICATES_TASK`` (SciFact's spec: no ``ignore_identical_ids``), from ``wordnet-base``
    The WordNet gloss task (:func:`mmbench.data.builders.text_tasks.build_wordnet`: query = a gloss,
    document = a synset's lemma entry), 200 queries and 1,500 entries, with about 10% of the documents
    repeated under new ids (the same title and text; some two or three times), written in a shuffled
    order so originals and copies sit at random positions of the file. Half of the repeated entries are
    positives; a qrels row points at a copy only, at the original only, or at both, so where a tie group
    of identical documents falls in a ranking decides the metrics.

``IDENTICAL_IDS_TASK`` (QuoraRetrieval's spec: mteb's ``ignore_identical_ids = True``), from
    ``tuxpaint-stamps-default``. The corpus is Tux Paint stamp captions in English and in six other
    languages (one document per (stamp, language), ids ``<lang>-<stamp>``; stamps taken in sha256 order
    until about 1,500 documents); a translation equal to another caption is a document with the same
    text under another id. The queries are 200 of those documents (same id, same text, as Quora's and
    CQADupStack's queries are also documents); the relevant documents are the stamp's captions in the
    other languages. Every query finds itself first;
    only dropping it (the task attribute) gives mteb's numbers.

Deterministic: the same packages give byte-identical files (sha256 orders, a seeded shuffle).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

DUPLICATES_TASK = "SciFact"
IDENTICAL_IDS_TASK = "QuoraRetrieval"

README = """---
configs:
- config_name: corpus
  data_files:
  - split: test
    path: corpus.jsonl
- config_name: queries
  data_files:
  - split: test
    path: queries.jsonl
- config_name: default
  data_files:
  - split: test
    path: qrels/test.jsonl
---
# {name} (mmbench fidelity fixture)
"""


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_beir(folder: Path, name: str, corpus: list[dict], queries: list[dict], qrels: list[tuple[str, str, int]]) -> Path:
    """A BEIR folder (also an HF dataset folder through its README) holding the three files."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for d in corpus:
            f.write(json.dumps({"_id": d["id"], "title": d["title"], "text": d["text"]}, ensure_ascii=False) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        for q in queries:
            f.write(json.dumps({"_id": q["id"], "text": q["text"]}, ensure_ascii=False) + "\n")
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, did, score in qrels:
            f.write(f"{qid}\t{did}\t{score}\n")
    with open(folder / "qrels" / "test.jsonl", "w", encoding="utf-8") as f:   # datasets reads one format per folder
        for qid, did, score in qrels:
            f.write(json.dumps({"query-id": qid, "corpus-id": did, "score": score}) + "\n")
    (folder / "README.md").write_text(README.format(name=name), encoding="utf-8")
    return folder


def build_duplicates(root: Path, *, n_queries: int = 200, n_docs: int = 1500, seed: int = 23) -> dict:
    """:data:`DUPLICATES_TASK` under ``root``; returns counts (documents, copies, qrels on copies)."""
    from mmbench.data.builders.text_tasks import build_wordnet

    built = build_wordnet(n_queries=n_queries, n_docs=n_docs)
    rng = random.Random(seed)
    corpus = list(built.corpus)
    positives = sorted({r["corpus-id"] for r in built.qrels})
    negatives = sorted({d["id"] for d in corpus} - set(positives))
    n_dup = len(corpus) // 20                       # 5% positives + 5% distractors repeated: ~10% of the docs
    repeated = rng.sample(positives, min(n_dup, len(positives))) + rng.sample(negatives, n_dup)
    by_id = {d["id"]: d for d in corpus}
    copies: dict[str, list[str]] = {}
    for i, did in enumerate(repeated):
        for c in range(1 + (i % 4 == 0)):         # every 4th repeated entry gets two copies
            cid = f"wn-copy-{_h(f'{did}:{c}')[:10]}"
            copies.setdefault(did, []).append(cid)
            corpus.append({**by_id[did], "id": cid})
    rng.shuffle(corpus)
    qrels, on_copies = [], 0
    for r in built.qrels:
        qid, did = r["query-id"], r["corpus-id"]
        dup = copies.get(did)
        if not dup:
            qrels.append((qid, did, 1))
            continue
        how = int(_h(qid + did), 16) % 3            # 0: the copy only, 1: the original only, 2: both
        if how != 1:
            qrels.append((qid, dup[-1], 1))
            on_copies += 1
        if how != 0:
            qrels.append((qid, did, 1))
    queries = sorted(built.queries, key=lambda q: _h(q["id"]))
    write_beir(root / DUPLICATES_TASK, DUPLICATES_TASK, corpus, queries, qrels)
    return {"docs": len(corpus), "copies": sum(map(len, copies.values())), "qrels_on_copies": on_copies,
            "queries": len(queries)}


def build_identical_ids(root: Path, *, n_queries: int = 200, n_docs: int = 1500) -> dict:
    """:data:`IDENTICAL_IDS_TASK` under ``root``; returns counts (documents, queries, texts shared by
    several documents)."""
    from mmbench.data.builders.mini import scan_stamps
    from mmbench.data.builders.text_tasks import STAMPS_ROOT, XLINGUAL_LANGS, _slug

    corpus, by_stamp = [], {}
    for s in sorted(scan_stamps(STAMPS_ROOT), key=lambda s: _h("stamp:" + s.rel)):
        if len(corpus) >= n_docs:
            break
        texts = {"en": s.caption, **{lang: s.translations[lang] for lang in XLINGUAL_LANGS if s.translations.get(lang)}}
        if len(texts) < 2:
            continue
        ids = []
        for lang, text in texts.items():
            did = f"{lang}-{_slug(s.rel)}"
            corpus.append({"id": did, "title": "", "text": text})
            ids.append(did)
        by_stamp[s.rel] = ids
    corpus.sort(key=lambda d: _h(d["id"]))
    text_of = {d["id"]: d["text"] for d in corpus}
    chosen = sorted(text_of, key=lambda i: _h("quora-like:" + i))[:n_queries]
    stamp_of = {did: rel for rel, ids in by_stamp.items() for did in ids}
    queries = [{"id": qid, "text": text_of[qid]} for qid in chosen]
    qrels = [(qid, did, 1) for qid in chosen for did in by_stamp[stamp_of[qid]] if did != qid]
    write_beir(root / IDENTICAL_IDS_TASK, IDENTICAL_IDS_TASK, corpus, queries, qrels)
    counts: dict[str, int] = {}
    for t in text_of.values():
        counts[t] = counts.get(t, 0) + 1
    return {"docs": len(corpus), "queries": len(queries),
            "shared_texts": sum(1 for c in counts.values() if c > 1)}
