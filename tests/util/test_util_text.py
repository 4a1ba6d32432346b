"""mmbench.util.text.slug: cache and result folders are named with it, so its output is pinned."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmbench.util.text import slug

ALLOWED = set("-_.=+")


@pytest.mark.parametrize("name, expected", [
    ("clip:openai/clip-vit-base-patch32", "clip_openai_clip-vit-base-patch32"),
    ("x@1+options-ab", "x_1+options-ab"),
    ("é/ü", "é_ü"),
    ("..", "_"),
    ("", "_"),
    ("._a b_.", "a_b"),
])
def test_known_names(name, expected):
    assert slug(name) == expected


@given(st.text(max_size=30))
def test_a_slug_is_safe_and_stable(name):
    s = slug(name)
    assert s and all(c.isalnum() or c in ALLOWED for c in s)
    assert "/" not in s and s not in (".", "..") and not s.startswith((".", "_")) or s == "_"
    assert slug(s) == s
