"""Retrieval metrics over ranked runs, vectorised with NumPy and equal to pytrec_eval's.

**The tie-break rule** (used everywhere in mmbench): a row is ordered by score descending, then by
candidate id descending in plain string (codepoint) order. This is trec_eval's and pytrec_eval's own
rule, so mmbench and pytrec_eval agree on runs with ties. :class:`Run` rows are kept in this order and
:func:`evaluate` trusts that they are.

Metrics are named ``FAMILY@K`` (``hit@5``, ``ndcg@10``); each family (its definition, math, trec_eval
measure and scorer) is one entry of the table in :mod:`mmbench.metrics.families`. :func:`evaluate` finds
the ranked slots that hold a relevant document (qrels relevance > 0, trec_eval's default) once, down to
the largest k asked for, and hands each family's scorer the slots within its k.

The evaluated queries are those with at least one judgment in the qrels. One that the run lacks, or
whose row is empty, scores 0 on every metric (pytrec_eval would drop a query missing from the run);
run queries without judgments are ignored. Relevant documents that are not candidates still count in
the denominators, and a query whose judgments are all 0 scores 0 everywhere (as in pytrec_eval).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain, compress, repeat

import numpy as np

from mmbench.data.types import Qrels
from mmbench.metrics.families import FAMILIES, Matched, parse_metric
from mmbench.search.ties import rule_order, tiebreak_ranks


def rank_order(scores: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Per-row column order: score descending, then ``tiebreak`` (same shape) descending
    (:func:`mmbench.search.ties.rule_order`, the one definition of the rule)."""
    return rule_order(scores, tiebreak)


class CandidateIds(Sequence[str]):
    """A pool's ids (treat as immutable) with the lookups scoring needs, each computed once.

    Runs over the same pool should share one instance: :meth:`Run.sort_rows` then reuses the tie-break
    ranks and :func:`evaluate` finds qrels documents through :attr:`position` instead of looking up
    every retrieved id. A plain list works too, only slower.
    """

    def __init__(self, ids: Sequence[str]):
        self._ids = list(ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i):
        return self._ids[i]

    def __repr__(self) -> str:
        return f"CandidateIds({len(self._ids)} ids)"

    @cached_property
    def position(self) -> dict[str, int]:
        """id -> index; raises ValueError if an id occurs twice."""
        position = dict(zip(self._ids, range(len(self._ids))))
        if len(position) != len(self._ids):
            raise ValueError("candidate ids are not unique")
        return position

    @cached_property
    def ranks(self) -> np.ndarray:
        """:func:`tiebreak_ranks` of the ids."""
        return tiebreak_ranks(self._ids)


@dataclass
class Run:
    """A ranked run. Row i holds query ``query_ids[i]``'s results, best first.

    ``indices``: int64 (Q, k) into ``candidate_ids`` (unique ids; a :class:`CandidateIds` is fastest),
    -1 = empty slot (fewer than k results); ``scores``: float (Q, k), -inf in empty slots. Rows are
    sorted by the tie-break rule.
    """

    query_ids: list[str]
    candidate_ids: Sequence[str]
    indices: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.indices.ndim != 2 or self.indices.shape != self.scores.shape:
            raise ValueError(f"indices {self.indices.shape} and scores {self.scores.shape} must be equal 2-d shapes")
        if self.indices.shape[0] != len(self.query_ids):
            raise ValueError(f"{len(self.query_ids)} query ids for {self.indices.shape[0]} rows")

    @classmethod
    def from_dict(cls, run: dict[str, dict[str, float]]) -> Run:
        """``{query_id: {candidate_id: score}}`` -> a Run over the sorted unique candidate ids."""
        candidate_ids = CandidateIds(sorted({doc for row in run.values() for doc in row}))
        position = candidate_ids.position
        width = max((len(row) for row in run.values()), default=0)
        indices = np.full((len(run), width), -1, dtype=np.int64)
        scores = np.full((len(run), width), -np.inf, dtype=np.float64)
        for i, row in enumerate(run.values()):
            indices[i, : len(row)] = [position[doc] for doc in row]
            scores[i, : len(row)] = list(row.values())
        return cls(list(run), candidate_ids, indices, scores).sort_rows()

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{query_id: {candidate_id: score}}`` without the empty slots."""
        return {
            q: {self.candidate_ids[j]: float(s) for j, s in zip(row.tolist(), srow.tolist()) if j >= 0}
            for q, row, srow in zip(self.query_ids, self.indices, self.scores)
        }

    def sort_rows(self) -> Run:
        """A copy with every row sorted by the tie-break rule; raises ValueError on NaN scores."""
        if np.isnan(self.scores).any():
            raise ValueError("run scores contain NaN")
        ids = self.candidate_ids
        ranks = ids.ranks if isinstance(ids, CandidateIds) else tiebreak_ranks(ids)
        tiebreak = np.append(ranks, -1)[self.indices]          # empty slots (-1) get -1
        order = rank_order(self.scores, tiebreak)
        return Run(
            list(self.query_ids),
            ids,
            np.take_along_axis(self.indices, order, axis=1),
            np.take_along_axis(self.scores, order, axis=1),
        )


@dataclass
class MetricResult:
    query_ids: list[str]                 # the evaluated queries
    per_query: dict[str, np.ndarray]     # metric name -> float64 array aligned with query_ids
    mean: dict[str, float]               # metric name -> mean over query_ids (0.0 if no queries)


@dataclass
class _Judged:
    """The relevant qrels entries of the evaluated queries, as flat arrays."""

    rows: np.ndarray      # evaluated-query row of each entry (ascending)
    docs: list[str]       # document id of each entry
    rels: np.ndarray      # relevance (> 0) of each entry


def _judged(query_ids: list[str], qrels: Qrels) -> _Judged:
    judgments = [qrels[q] for q in query_ids]
    rows = np.repeat(np.arange(len(query_ids)), [len(j) for j in judgments])
    rels = np.fromiter(chain.from_iterable(j.values() for j in judgments), np.float64, len(rows))
    keep = rels > 0
    docs = list(compress(chain.from_iterable(judgments), keep.tolist()))
    return _Judged(rows[keep], docs, rels[keep])


def _candidate_index(ids: Sequence[str], docs: list[str], hits: np.ndarray) -> np.ndarray:
    """Index in ``ids`` of each of ``docs``; -1 where it is no candidate (for a plain sequence of ids,
    also where it is not among ``hits``)."""
    if isinstance(ids, CandidateIds):
        return np.fromiter(map(ids.position.get, docs, repeat(-1)), np.int64, len(docs))
    # A plain sequence: look up each distinct retrieved id among the documents.
    entry = dict(zip(docs, range(len(docs))))            # document -> one of its entries
    seen = np.zeros(len(ids) + 1, dtype=bool)
    seen[hits] = True                                     # empty slots (-1) land on the extra last slot
    distinct = np.flatnonzero(seen[:-1])
    found = np.fromiter(map(entry.get, map(ids.__getitem__, distinct.tolist()), repeat(-1)), np.int64, len(distinct))
    ok = found >= 0
    if np.unique(found[ok]).size != int(ok.sum()):
        raise ValueError("candidate ids are not unique")
    index_of_entry = np.full(len(docs), -1, dtype=np.int64)
    index_of_entry[found[ok]] = distinct[ok]
    return index_of_entry[np.fromiter(map(entry.__getitem__, docs), np.int64, len(docs))]


def _check_no_duplicates(hits: np.ndarray, n_candidates: int, query_ids: list[str]) -> None:
    small = hits.astype(np.int32) if n_candidates < 2**31 else hits   # int32 sorts much faster
    s = np.sort(small, axis=1)
    dup = ((s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)).any(axis=1)
    if dup.any():
        raise ValueError(f"duplicate candidate in the run row of query {query_ids[int(np.argmax(dup))]!r}")


@dataclass
class _Matches:
    """The ranked slots that hold a relevant document, sorted by (row, rank)."""

    rows: np.ndarray      # evaluated-query row
    ranks: np.ndarray     # 0-based rank in the row
    gains: np.ndarray     # relevance

    @classmethod
    def empty(cls) -> _Matches:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))


def _matches(run: Run, rows: list[int], judged: _Judged, depth: int) -> _Matches:
    """Relevant documents among the top ``depth`` hits of the evaluated run ``rows``."""
    hits = run.indices[:, :depth] if len(rows) == len(run.query_ids) else run.indices[rows, :depth]
    n = len(run.candidate_ids)
    _check_no_duplicates(hits, n, [run.query_ids[i] for i in rows])
    if not judged.docs:
        return _Matches.empty()
    index = _candidate_index(run.candidate_ids, judged.docs, hits)
    found = index >= 0
    qkeys = judged.rows[found] * n + index[found]
    order = np.argsort(qkeys)
    qkeys, qrels = qkeys[order], judged.rels[found][order]
    # owner[c]: the row of the one query that judges candidate c, -2 if several do, -1 if none. A hit
    # can only match where its row owns it or several rows do; compare those hits' keys with the qrels'.
    owner = np.full(n + 1, -1, dtype=np.int32)            # empty slots (-1) land on the extra last slot
    owner[index[found]] = judged.rows[found]
    shared = np.sort(index[found])
    owner[shared[1:][shared[1:] == shared[:-1]]] = -2
    of_hit = owner[hits]
    r, c = np.nonzero((of_hit == np.arange(len(hits), dtype=np.int32)[:, None]) | (of_hit == -2))  # by (row, rank)
    keys = r * n + hits[r, c]
    pos = np.minimum(np.searchsorted(qkeys, keys), len(qkeys) - 1)
    match = qkeys[pos] == keys
    return _Matches(r[match], c[match], qrels[pos[match]])


def _score(family: str, k: int, m: _Matches, judged: _Judged, n_rel: np.ndarray) -> np.ndarray:
    """Per-query value of ``family@k``: the family's scorer (:mod:`mmbench.metrics.families`) on the slots
    matched within the top k."""
    top = m.ranks < k
    matched = Matched(k, m.rows[top], m.ranks[top], m.gains[top], n_rel, judged.rows, judged.rels)
    return FAMILIES[family].scorer(matched)


def evaluate(run: Run, qrels: Qrels, metrics: Sequence[str]) -> MetricResult:
    """Score ``run`` against ``qrels`` on each metric (see the module docstring for the semantics).

    Only the top max-k columns of the run are read. Raises ValueError for a bad metric name, duplicate
    query ids, or a candidate repeated within those columns of a row.
    """
    parsed = {name: parse_metric(name) for name in metrics}
    run_ids = set(run.query_ids)
    if len(run_ids) != len(run.query_ids):
        raise ValueError("run has duplicate query ids")
    rows = [i for i, q in enumerate(run.query_ids) if qrels.get(q)]
    query_ids = [run.query_ids[i] for i in rows] + [q for q, docs in qrels.items() if docs and q not in run_ids]
    depth = max((k for _, k in parsed.values()), default=0)
    judged = _judged(query_ids, qrels)
    matches = _matches(run, rows, judged, depth)
    n_rel = np.bincount(judged.rows, minlength=len(query_ids)).astype(np.float64)
    per_query = {name: _score(family, k, matches, judged, n_rel) for name, (family, k) in parsed.items()}
    mean = {name: float(v.mean()) if query_ids else 0.0 for name, v in per_query.items()}
    return MetricResult(query_ids, per_query, mean)
