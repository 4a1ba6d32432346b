"""mmbench.metrics.families: the table's guards, metric names, mteb keys and the record's definitions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmbench.metrics.families import (
    FAMILIES,
    MetricFamily,
    from_mteb_key,
    metric_notes,
    parse_metric,
    register_metric_family,
    to_mteb_key,
    unregister_metric_family,
)

BUILTIN = ("hit", "recall", "ndcg", "mrr", "map", "precision")


def test_builtin_table():
    assert tuple(FAMILIES)[: len(BUILTIN)] == BUILTIN
    trec = {name: (FAMILIES[name].trec_eval, FAMILIES[name].cut) for name in BUILTIN}
    assert trec == {"hit": ("success", True), "recall": ("recall", True), "ndcg": ("ndcg_cut", True),
                    "mrr": ("recip_rank", False), "map": ("map_cut", True), "precision": ("P", True)}
    for family in FAMILIES.values():
        assert family.definition and ".. math::" in family.scorer.__doc__, family.name


def test_metric_definitions_in_records_are_unchanged():
    """Written into every task record: the text (and the families) must stay byte-identical."""
    assert metric_notes() == {
        "hit@k": "1 if any relevant candidate is in the top k (trec_eval success@k); what M-BEIR/UniIR tables "
                 "call Recall@k",
        "recall@k": "relevant candidates in the top k / relevant candidates in qrels (trec_eval recall_k)",
    }
    assert list(metric_notes()) == ["hit@k", "recall@k"]


@given(st.sampled_from(BUILTIN), st.integers(1, 10**6))
def test_parse_metric_round_trip(family, k):
    assert parse_metric(f"{family}@{k}") == (family, k)


@pytest.mark.parametrize("name", ["hit@0", "foo@5", "ndcg", "ndcg@x", "Recall@5", "mrr@-1", "@5", "hit@", "hit@+1"])
def test_parse_metric_rejects(name):
    with pytest.raises(ValueError) as err:
        parse_metric(name)
    families = "hit, recall, ndcg, mrr, map, precision"
    assert str(err.value) == f"bad metric {name!r}: expected FAMILY@K with FAMILY in {families}"


@given(st.sampled_from(BUILTIN), st.integers(1, 10**6))
def test_mteb_key_round_trip(family, k):
    name = f"{family}@{k}"
    key = to_mteb_key(name)
    assert key == f"{FAMILIES[family].mteb}_at_{k}" and from_mteb_key(key) == name


def test_mteb_keys():
    assert [to_mteb_key(f"{f}@10") for f in BUILTIN] == [
        "hit_rate_at_10", "recall_at_10", "ndcg_at_10", "mrr_at_10", "map_at_10", "precision_at_10"]
    for key in ("main_score", "hf_subset", "accuracy", "nauc_ndcg_at_10_max", "cv_recall_at_5", "ndcg_at_x",
                "hit_at_5", "ndcg_at_", "rate_at_5"):
        assert from_mteb_key(key) is None, key
    with pytest.raises(KeyError):
        to_mteb_key("foo@5")


def _zeros(m):
    return np.zeros(m.n)


def test_register_guards():
    with pytest.raises(ValueError, match="already registered"):
        register_metric_family(MetricFamily("hit", "success", True, "hit_two", "", _zeros))
    with pytest.raises(ValueError, match="'hit_rate' of 'hit2' is 'hit'"):
        register_metric_family(MetricFamily("hit2", "success", True, "hit_rate", "", _zeros))
    for bad in ("Hit", "a@b", "", "9x", "r-prec"):
        with pytest.raises(ValueError, match="bad metric family name"):
            register_metric_family(MetricFamily(bad, "success", True, "x_" + bad, "", _zeros))
    with pytest.raises(ValueError, match="built in"):
        unregister_metric_family("ndcg")
    assert tuple(FAMILIES)[: len(BUILTIN)] == BUILTIN and "hit2" not in FAMILIES


def test_a_registered_family_reaches_names_keys_and_notes():
    family = MetricFamily("zeros", "success", True, "zero_rate", "always 0", _zeros, in_records=True)
    register_metric_family(family)
    try:
        assert parse_metric("zeros@4") == ("zeros", 4)
        assert to_mteb_key("zeros@4") == "zero_rate_at_4" and from_mteb_key("zero_rate_at_4") == "zeros@4"
        assert metric_notes()["zeros@k"] == "always 0"
        assert str(pytest.raises(ValueError, parse_metric, "x@1").value).endswith("map, precision, zeros")
    finally:
        unregister_metric_family("zeros")
    assert from_mteb_key("zero_rate_at_4") is None and "zeros@k" not in metric_notes()
