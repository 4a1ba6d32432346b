r"""The metric families: the one table where a retrieval metric is defined.

A metric is named ``FAMILY@K`` (``hit@5``, ``ndcg@10``): a family and a cut-off ``K >= 1``. Each family
is one entry of :data:`FAMILIES`, declared by decorating its scorer with :func:`metric_family`; the
entry holds everything mmbench knows about it:

- ``name``: the family's name in mmbench (``"hit"``);
- ``trec_eval``: the trec_eval measure it equals (``"success"``), and ``cut``: whether trec_eval takes the
  cut-off as a parameter (``success.5``, reported as ``success_5``), or (``cut=False``, ``recip_rank``) the
  measure equals ``FAMILY@K`` when trec_eval reads the run truncated to its top ``K``. The pytrec_eval
  equivalence test (``tests/metrics/test_metrics.py``) reads these two fields for every entry;
- ``mteb``: the prefix of mteb's key (``"hit_rate"``: ``hit@5`` is mteb's ``hit_rate_at_5``);
- ``definition``: one line for users; the entries with ``in_records`` are written into every task
  record's ``"metric_definitions"`` (hit and recall: the two that M-BEIR's and trec_eval's names confuse);
- ``scorer``: per-query values from the :class:`Matched` slots; its docstring states the math.

Adding a family is one decorated scorer here (or in a plugin, which calls :func:`register_metric_family`
when it is imported): :func:`parse_metric`, the mteb key mapping, the task records, :func:`evaluate
<mmbench.metrics.scoring.evaluate>` and the equivalence test all read the table. A built-in family can be
neither replaced nor removed: result records already carry its values under its name.

Notation used by the scorers. For an evaluated query :math:`q` (one with at least one judgment in the
qrels), :math:`d_1, d_2, \dots` is its ranked run (the tie rule orders equal scores by candidate id
descending), :math:`\mathrm{rel}(d)` the qrels relevance (0 when unjudged) and
:math:`R_q = \{d : \mathrm{rel}(d) > 0\}` its relevant documents, whether candidates or not
(trec_eval's default relevance level 1). :math:`[\cdot]` is 1 when its condition holds, else 0. Every
quotient with a zero denominator is 0 (a query whose judgments are all 0 scores 0 everywhere).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Matched:
    """A scorer's input for one cut-off ``k``: the ranked slots within the top ``k`` that hold a relevant
    document, over the ``n`` evaluated queries (rows ``0 .. n-1``).

    ``rows``, ``ranks`` and ``gains`` are aligned, sorted by (row, rank): so the first slot of a row is its
    best-ranked relevant document. ``judged_rows``/``judged_rels`` list every relevant qrels entry of the
    evaluated queries, rows ascending (retrieved or not): what ideal rankings are built from.
    """

    k: int
    rows: np.ndarray          # int64: evaluated-query row of each matched slot
    ranks: np.ndarray         # int64: its 0-based rank in the row (< k)
    gains: np.ndarray         # float64: the relevance (> 0) of the document it holds
    n_rel: np.ndarray         # float64 (n,): |R_q|, the relevant documents of each query in the qrels
    judged_rows: np.ndarray   # int64: evaluated-query row of each relevant qrels entry, ascending
    judged_rels: np.ndarray   # float64: that entry's relevance (> 0)

    @property
    def n(self) -> int:
        """The number of evaluated queries."""
        return len(self.n_rel)

    def count(self) -> np.ndarray:
        """float64 (n,): relevant documents in each query's top k."""
        return np.bincount(self.rows, minlength=self.n).astype(np.float64)


Scorer = Callable[[Matched], np.ndarray]


@dataclass(frozen=True)
class MetricFamily:
    """One entry of the table (see the module docstring for each field)."""

    name: str
    trec_eval: str
    cut: bool
    mteb: str
    definition: str
    scorer: Scorer
    in_records: bool = False


FAMILIES: dict[str, MetricFamily] = {}
"""The table: family name -> entry, in declaration order (the order error messages list them in)."""

_BUILTIN: set[str] = set()


def register_metric_family(family: MetricFamily) -> MetricFamily:
    """Add ``family`` to :data:`FAMILIES`; raises ValueError for a malformed name or one that (or whose mteb
    prefix) is taken. Returns it."""
    if not family.name.isidentifier() or not family.name.islower():
        raise ValueError(f"bad metric family name {family.name!r}: lowercase letters, digits and '_'")
    if family.name in FAMILIES:
        raise ValueError(f"metric family {family.name!r} is already registered")
    taken = {f.mteb: f.name for f in FAMILIES.values()}
    if family.mteb in taken:
        raise ValueError(f"mteb key prefix {family.mteb!r} of {family.name!r} is {taken[family.mteb]!r}'s")
    FAMILIES[family.name] = family
    return family


def unregister_metric_family(name: str) -> None:
    """Remove a family that :func:`register_metric_family` added; built-in families stay."""
    if name in _BUILTIN:
        raise ValueError(f"metric family {name!r} is built in")
    del FAMILIES[name]


def metric_family(name: str, *, trec_eval: str, mteb: str, definition: str, cut: bool = True,
                  in_records: bool = False) -> Callable[[Scorer], Scorer]:
    """Decorator: register the decorated scorer as family ``name`` (the built-in table is declared so)."""

    def register(scorer: Scorer) -> Scorer:
        register_metric_family(MetricFamily(name, trec_eval, cut, mteb, definition, scorer, in_records))
        return scorer

    return register


def parse_metric(name: str) -> tuple[str, int]:
    """``"ndcg@10"`` -> ``("ndcg", 10)``; raises ValueError on anything else."""
    family, sep, k = name.partition("@")
    if not sep or family not in FAMILIES or not k.isdigit() or int(k) < 1:
        raise ValueError(
            f"bad metric {name!r}: expected FAMILY@K with FAMILY in {', '.join(FAMILIES)}"
        )
    return family, int(k)


def to_mteb_key(metric: str) -> str:
    """``"hit@5"`` -> ``"hit_rate_at_5"``, ``"ndcg@10"`` -> ``"ndcg_at_10"``; KeyError for an unknown family."""
    family, _, k = metric.partition("@")
    return f"{FAMILIES[family].mteb}_at_{k}"


def from_mteb_key(key: str) -> str | None:
    """``"ndcg_at_10"`` -> ``"ndcg@10"``; None for keys mmbench has no metric for."""
    prefix, sep, k = key.rpartition("_at_")
    family = next((f.name for f in FAMILIES.values() if f.mteb == prefix), None)
    if not sep or family is None or not k.isdigit():
        return None
    return f"{family}@{k}"


def metric_notes() -> dict[str, str]:
    """``{"hit@k": definition, ...}`` of the families with ``in_records``: a task record's ``"metric_definitions"``."""
    return {f"{f.name}@k": f.definition for f in FAMILIES.values() if f.in_records}


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


# ------------------------------------------------------------------------------------------------
# The table. Declaration order is the order users see (parse_metric's message, metric_definitions).


@metric_family(
    "hit", trec_eval="success", mteb="hit_rate", in_records=True,
    definition="1 if any relevant candidate is in the top k (trec_eval success@k); what M-BEIR/UniIR tables "
               "call Recall@k",
)
def hit(m: Matched) -> np.ndarray:
    r"""Hit rate (success):

    .. math:: \mathrm{Hit@}k(q) = \left[\, \exists\, i \le k : d_i \in R_q \,\right]
    """
    return (m.count() > 0).astype(np.float64)


@metric_family(
    "recall", trec_eval="recall", mteb="recall", in_records=True,
    definition="relevant candidates in the top k / relevant candidates in qrels (trec_eval recall_k)",
)
def recall(m: Matched) -> np.ndarray:
    r"""Recall:

    .. math:: \mathrm{Recall@}k(q) = \frac{\left|\{\, i \le k : d_i \in R_q \,\}\right|}{|R_q|}
    """
    return _safe_div(m.count(), m.n_rel)


@metric_family(
    "ndcg", trec_eval="ndcg_cut", mteb="ndcg",
    definition="DCG of the top k (gain = relevance, discount log2(rank + 1)) / DCG of the ideal ranking of "
               "the qrels (trec_eval ndcg_cut_k)",
)
def ndcg(m: Matched) -> np.ndarray:
    r"""Normalised discounted cumulative gain (trec_eval's: gain = relevance, negative relevance gains 0):

    .. math::
        \mathrm{DCG@}k(q) = \sum_{i=1}^{k} \frac{\max(\mathrm{rel}(d_i), 0)}{\log_2(i + 1)}, \qquad
        \mathrm{nDCG@}k(q) = \frac{\mathrm{DCG@}k(q)}{\mathrm{IDCG@}k(q)}

    where :math:`\mathrm{IDCG@}k(q)` is the DCG@k of :math:`R_q` ranked by relevance descending.
    """
    dcg = np.bincount(m.rows, weights=m.gains / np.log2(m.ranks + 2), minlength=m.n)
    return _safe_div(dcg, _ideal_dcg(m))


def _ideal_dcg(m: Matched) -> np.ndarray:
    """Per query DCG@k of its relevant documents in descending relevance."""
    order = np.lexsort((-m.judged_rels, m.judged_rows))
    rows, rels = m.judged_rows[order], m.judged_rels[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    top = rank < m.k
    return np.bincount(rows[top], weights=rels[top] / np.log2(rank[top] + 2), minlength=m.n)


@metric_family(
    "mrr", trec_eval="recip_rank", cut=False, mteb="mrr",
    definition="1 / rank of the first relevant candidate if it is in the top k, else 0 (trec_eval recip_rank "
               "on the top k)",
)
def mrr(m: Matched) -> np.ndarray:
    r"""Reciprocal rank of the first relevant document, within the top k:

    .. math:: \mathrm{RR@}k(q) = \max_{i \le k,\ d_i \in R_q} \frac{1}{i} \quad (0 \text{ if there is none})
    """
    first = np.diff(m.rows, prepend=-1) != 0               # first match of each row = its best rank
    value = np.zeros(m.n)
    value[m.rows[first]] = 1.0 / (m.ranks[first] + 1)
    return value


@metric_family(
    "map", trec_eval="map_cut", mteb="map",
    definition="sum of the precision at the rank of each relevant candidate in the top k / relevant "
               "candidates in qrels (trec_eval map_cut_k)",
)
def average_precision(m: Matched) -> np.ndarray:
    r"""Average precision cut at k (trec_eval's ``map_cut``: the denominator is all of :math:`R_q`):

    .. math::
        \mathrm{AP@}k(q) = \frac{1}{|R_q|} \sum_{i=1}^{k} \left[ d_i \in R_q \right] \mathrm{P@}i(q)
    """
    found_so_far = np.arange(1, len(m.rows) + 1) - np.searchsorted(m.rows, m.rows)
    return _safe_div(np.bincount(m.rows, weights=found_so_far / (m.ranks + 1), minlength=m.n), m.n_rel)


@metric_family(
    "precision", trec_eval="P", mteb="precision",
    definition="relevant candidates in the top k / k, even when fewer than k were retrieved (trec_eval P_k)",
)
def precision(m: Matched) -> np.ndarray:
    r"""Precision:

    .. math:: \mathrm{P@}k(q) = \frac{\left|\{\, i \le k : d_i \in R_q \,\}\right|}{k}
    """
    return m.count() / m.k


_BUILTIN.update(FAMILIES)
