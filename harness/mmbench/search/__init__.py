"""Exact top-k search: the ``search()`` entry point and its backends."""

from mmbench.search.engine import describe_backend, exact_search_numpy, search

__all__ = ["describe_backend", "exact_search_numpy", "search"]
