"""Row ranges split across threads: every row exactly once, results in part order, failures raised."""

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbench.util.parallel import cores, map_parts, row_parts


@settings(max_examples=200, deadline=None)
@given(n_rows=st.integers(0, 10_000), min_rows=st.integers(1, 5_000), parts=st.integers(1, 16))
def test_row_parts_cover_every_row_once_in_order(n_rows: int, min_rows: int, parts: int) -> None:
    got = row_parts(n_rows, min_rows=min_rows, parts=parts)
    assert 1 <= len(got) <= parts
    assert [r for s in got for r in range(s.start, s.stop)] == list(range(n_rows))
    if len(got) > 1:
        assert min(s.stop - s.start for s in got) >= min_rows
    assert len(row_parts(n_rows, min_rows=min_rows)) <= cores()


@pytest.mark.parametrize("threads", [1, 3])
def test_map_parts_yields_in_part_order_on_threads(threads: int) -> None:
    parts = [slice(i, i + 1) for i in range(20)]
    seen = set()

    def fn(s: slice) -> int:
        seen.add(threading.get_ident())
        return s.start * 10

    assert list(map_parts(fn, parts, threads=threads)) == [i * 10 for i in range(20)]
    assert (threading.get_ident() in seen) == (threads == 1)


def test_map_parts_raises_the_failure_of_a_part() -> None:
    def fn(s: slice) -> int:
        if s.start == 3:
            raise ValueError("part 3 failed")
        return s.start

    with pytest.raises(ValueError, match="part 3 failed"):
        list(map_parts(fn, [slice(i, i + 1) for i in range(8)], threads=2))
