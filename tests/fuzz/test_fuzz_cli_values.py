"""Fuzzing ``mmbench run``'s numeric options: a bad value is a usage error (exit 2, one ``Error:``
line, no traceback) and nothing is written."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from cli_helpers import invoke  # noqa: E402

BAD = {
    "--memory-budget-gb": st.sampled_from(["nan", "inf", "-inf", "0", "-1", "0.0", "-0", "1e-30", "abc", ""]),
    "--top-k": st.one_of(st.integers(max_value=0), st.integers(min_value=1001)).map(str) | st.just("1.5"),
    "--batch-size": st.integers(max_value=0).map(str) | st.just("x"),
    "--chunk-size": st.integers(max_value=0).map(str),
    "--rerank-top-k": st.one_of(st.integers(max_value=0), st.integers(min_value=1001)).map(str),
    "--seed": st.sampled_from(["1e3", "x", "1.5"]),
    "--device": st.sampled_from(["gpu", "cuda:", "cuda:x", "", "cpu0", "CUDA"]),
    "--instructions": st.sampled_from(["all", "", "FIRST"]),
}


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), option=st.sampled_from(sorted(BAD)))
def test_fuzz_cli_bad_value_is_a_usage_error(capsys, monkeypatch, tmp_path_factory, data, option):
    value = data.draw(BAD[option])
    out = tmp_path_factory.mktemp("cli") / "results"
    result = invoke(capsys, monkeypatch, "run", "--tasks", "mscoco_task0", "--output", str(out), f"{option}={value}")
    assert result.code == 2, (option, value, result)
    assert "Traceback" not in result.err + result.out and "Error" in result.err
    assert option in result.err
    assert not out.exists()
