"""mmbench.metrics.modality: the share of each top k that is of another modality than the task's target."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmbench.metrics.modality import modality_report


def test_hand_case():
    pool = np.array(["image", "text", "image,text", "image"])
    indices = np.array([[0, 1, 2], [3, -1, -1]])
    report = modality_report(indices, pool, "image", [1, 3])
    assert report == {"target": "image", "at": {
        "1": {"wrong_modality_share": 0.0, "by_modality": {"image": 1.0}},
        "3": {"wrong_modality_share": 0.5, "by_modality": {"image": 0.5, "image,text": 0.25, "text": 0.25}},
    }}


def test_no_retrieved_slot():
    report = modality_report(np.full((2, 3), -1), np.array(["text"]), "image", [3])
    assert report["at"]["3"] == {"wrong_modality_share": 0.0, "by_modality": {}}


@given(arrays(np.int64, st.tuples(st.integers(1, 6), st.integers(1, 8)), elements=st.integers(-1, 4)),
       st.lists(st.sampled_from(["image", "text", "image,text"]), min_size=5, max_size=5),
       st.lists(st.integers(1, 10), min_size=1, max_size=3, unique=True))
def test_shares_count_the_retrieved_slots(indices, modalities, ks):
    pool = np.array(modalities)
    report = modality_report(indices, pool, "image", ks)
    for k in ks:
        at = report["at"][str(k)]
        top = indices[:, :k]
        retrieved = pool[top[top >= 0]]
        if retrieved.size == 0:
            assert at == {"wrong_modality_share": 0.0, "by_modality": {}}
            continue
        assert at["by_modality"] == {m: pytest.approx(float(np.mean(retrieved == m)), abs=1e-6)
                                     for m in set(retrieved.tolist())}
        assert at["wrong_modality_share"] == pytest.approx(float(np.mean(retrieved != "image")), abs=1e-6)
