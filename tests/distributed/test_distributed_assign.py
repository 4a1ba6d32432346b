"""The cost-balanced assignment of missing chunks to ranks (mmbench.distributed.assign): pure, so
its properties are checked over many generated cost lists."""

from hypothesis import given, settings, strategies as st

from mmbench.distributed.assign import IMAGE_COST, ITEM_BASE, assign, chunk_cost, item_cost, loads

costs_st = st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False), max_size=60)


@settings(max_examples=300, deadline=None)
@given(costs=costs_st, ranks=st.integers(1, 9))
def test_shares_are_disjoint_cover_everything_and_are_sorted(costs, ranks):
    shares = assign(costs, ranks)
    assert len(shares) == ranks
    flat = [i for s in shares for i in s]
    assert sorted(flat) == list(range(len(costs)))          # every chunk once: disjoint and complete
    assert all(s == sorted(s) for s in shares)


@settings(max_examples=300, deadline=None)
@given(costs=costs_st, ranks=st.integers(1, 9))
def test_the_most_loaded_rank_is_within_one_chunk_of_the_mean(costs, ranks):
    shares = assign(costs, ranks)
    load = loads(costs, shares)
    bound = sum(costs) / ranks + (max(costs) if costs else 0.0)
    assert max(load) <= bound * (1 + 1e-12) + 1e-9


@settings(max_examples=200, deadline=None)
@given(costs=costs_st, ranks=st.integers(1, 9))
def test_the_assignment_is_a_function_of_the_list_alone(costs, ranks):
    assert assign(list(costs), ranks) == assign(tuple(costs), ranks)      # what every rank computes


def test_one_rank_gets_everything_and_equal_costs_alternate():
    assert assign([3.0, 1.0, 2.0], 1) == [[0, 1, 2]]
    assert assign([1.0] * 5, 2) == [[0, 2, 4], [1, 3]]
    assert assign([], 3) == [[], [], []]


def test_image_chunks_weigh_more_than_caption_chunks():
    captions = chunk_cost(["a red bus"] * 16, [None] * 16, 0, 16)
    images = chunk_cost([None] * 16, ["x.png"] * 16, 0, 16)
    assert images > 20 * captions
    assert item_cost(None, True) == ITEM_BASE + IMAGE_COST
    mixed = chunk_cost(["ab", None, "abcd"], [None, "i.png", None], 1, 3)
    assert mixed == item_cost(None, True) + item_cost("abcd", False)
    # the last, shorter chunk counts only its own items
    assert chunk_cost(["x"] * 5, [None] * 5, 4, 8) == item_cost("x", False)


def test_a_heavy_chunk_among_light_ones_gets_a_rank_to_itself():
    costs = [600.0] + [10.0] * 60
    shares = assign(costs, 2)
    heavy = next(s for s in shares if 0 in s)
    assert heavy == [0]
