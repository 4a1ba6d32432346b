"""``--model-option`` parsing and what options do to a model's identity."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmbench.catalog import get_model
from mmbench.config import RunConfig, parse_model_options
from mmbench.models.loading import with_model_options

keys = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)
scalars = st.one_of(st.integers(-10**6, 10**6), st.booleans(), st.none(), st.text(max_size=20),
                    st.floats(allow_nan=False, allow_infinity=False))


@given(st.dictionaries(keys, scalars, max_size=5))
def test_json_values_read_back_as_written(options):
    pairs = [f"{k}={json.dumps(v)}" for k, v in options.items()]
    assert parse_model_options(pairs) == tuple(sorted(options.items()))


@given(st.text(min_size=1, max_size=30).filter(lambda s: not _is_json(s)))
def test_any_other_value_is_the_string_itself(raw):
    assert parse_model_options([f"path={raw}"]) == (("path", raw),)


def _is_json(s: str) -> bool:
    try:
        json.loads(s)
    except ValueError:
        return False
    return True


def test_remote_code_cannot_be_enabled_through_an_option():
    from mmbench.errors import MmbenchError

    with pytest.raises(MmbenchError, match="never runs a checkpoint's own code"):
        with_model_options(get_model("mm-embed"), parse_model_options(["trust_remote_code=true"]))


@pytest.mark.parametrize("bad", ["path", "=x", "two words=1", "1x=2"])
def test_malformed_pairs_are_refused_with_the_expected_form(bad):
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_model_options([bad])


def test_options_change_revision_and_config_hash_and_the_last_one_wins():
    meta = get_model("uniir-clip-sf-l")
    opts = parse_model_options(["path=/models/clip_sf_large.pth", "num_workers=2", "num_workers=8"])
    assert opts == (("num_workers", 8), ("path", "/models/clip_sf_large.pth"))
    changed = with_model_options(meta, opts)
    assert changed.options["path"] == "/models/clip_sf_large.pth" and changed.options["filename"] == "clip_sf_large.pth"
    assert changed.revision.startswith(meta.revision + "+options-") and with_model_options(meta, ()) is meta
    assert with_model_options(meta, opts).revision == changed.revision            # deterministic
    assert with_model_options(meta, opts[:1]).revision != changed.revision
    plain, optioned = RunConfig(model=meta.name), RunConfig(model=meta.name, model_options=opts)
    assert plain.config_hash() != optioned.config_hash()
    assert optioned.to_dict()["model_options"] == dict(opts)
