"""Every registered search backend that can run here answers as the numpy reference does.

The backends are read from the registry (:func:`mmbench.search.backend_names`), so a new backend,
built-in or plugin, is checked with no edit here. An exact backend must give the reference's
indices on tie-heavy cases: duplicate rows at random positions, near-ties, k at (and past) the pool
size, several blocks, float16 blocks, NaN rows. An inexact one is only checked for shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from search_cases import assert_same, search_with, tie_heavy_cases

from mmbench.search import backend_names, exact_search_numpy, get_backend
from mmbench.search.base import SearchBackend

NAMES = [name for name in backend_names() if name != "auto"]


def _device(backend: SearchBackend) -> str | None:
    """A device the backend can run on here (CPU first), or None."""
    for device in ("cpu", "cuda"):
        if device in backend.devices and backend.available(device) is True:
            return device
    return None


@pytest.mark.parametrize("name", NAMES)
def test_backend_declares_the_contract(name: str) -> None:
    backend = get_backend(name)
    assert isinstance(backend, SearchBackend) and backend.name == name
    assert isinstance(backend.exact, bool) and backend.devices
    for device in backend.devices:
        verdict = backend.available(device)
        assert verdict is True or (isinstance(verdict, str) and verdict)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(case=tie_heavy_cases(near_ties=True, nan_rows=True, max_n=1500))
def test_backend_matches_reference_on_tie_heavy_cases(name: str, case: dict) -> None:
    backend = get_backend(name)
    device = _device(backend)
    if device is None:
        pytest.skip(f"{name} cannot run here: {backend.available(backend.devices[0])}")
    got = search_with(backend, case, device)
    want = exact_search_numpy(case["queries"], case["pool"], case["k"], case["tiebreak"])
    if backend.exact:
        assert_same(got, want)
    else:
        assert got[0].shape == want[0].shape and got[1].dtype == np.float32


@pytest.mark.parametrize("name", NAMES)
def test_backend_describes_itself(name: str) -> None:
    backend = get_backend(name)
    device = _device(backend)
    if device is None:
        pytest.skip(f"{name} cannot run here")
    info = backend.describe(device)
    assert info["library"] and info["device"] == device and "version" in info
