"""The search sharded over a torchrun group's ranks (:mod:`mmbench.distributed.search`): real torchrun,
2 and 3 gloo ranks, every CPU backend, seeded tie-heavy cases (duplicate rows, near-ties, NaN rows, k
past the pool, pools smaller than the group), and a rank that is sent its shares instead of opening
the pool: the same bytes as one process's search. The shares'
plan is checked by properties."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dist_helpers import mmbench_env
from mmbench.distributed.search import share_pool
from mmbench.search.base import Pool, even_ranges

SCRIPT = Path(__file__).with_name("dist_search_cases.py")
BACKENDS = ("auto", "faiss-cpu", "torch", "sharded", "auto+sent")


@given(st.integers(0, 5000), st.integers(1, 9))
def test_shares_are_contiguous_near_equal_and_cover_the_pool(total, world):
    cut = even_ranges(total, world)
    assert len(cut) == world and cut[0][0] == 0 and cut[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(cut, cut[1:]))
    sizes = [hi - lo for lo, hi in cut]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@given(st.lists(st.integers(0, 7), min_size=1, max_size=5), st.data(), st.booleans())
def test_a_share_holds_its_rows_with_the_pools_keys(lengths, data, keyed):
    parts = [np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 100 * i for i, n in enumerate(lengths)]
    total = sum(lengths)
    lo = data.draw(st.integers(0, total))
    hi = data.draw(st.integers(lo, total))
    keys = np.random.default_rng(total).permutation(total).astype(np.int64) if keyed else None
    share = share_pool(Pool(tuple(parts), total, 2, keys, "cpu", 64), lo, hi, "cpu")
    rows = np.concatenate(parts)[lo:hi]
    assert share.total == hi - lo and all(p.shape[0] for p in share.parts)
    got = np.concatenate(share.parts) if share.parts else np.empty((0, 2), np.float32)
    np.testing.assert_array_equal(got, rows)
    np.testing.assert_array_equal(share.tiebreak, keys[lo:hi] if keyed else np.arange(lo, hi))


@pytest.mark.slow
@pytest.mark.parametrize("ranks,cases", [(2, 60), (3, 40)])
def test_ranks_answer_what_one_process_answers(tmp_path, ranks, cases):
    env = mmbench_env(tmp_path / "cache", tmp_path / "data")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
           "--monitor-interval", "0.1", str(SCRIPT), str(tmp_path / "out"), str(cases)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (tmp_path / "out.rank0").read_text().split()
    verdicts = lines[2::3]
    assert len(verdicts) == cases * len(BACKENDS) and set(verdicts) == {"same"}, lines
    for r in range(1, ranks):                     # every serving rank answered every search, retries included
        served = (tmp_path / f"out.rank{r}").read_text().splitlines()
        assert [s.split()[0] for s in served] == list(BACKENDS)
        assert all(int(s.split()[2]) >= cases for s in served)
