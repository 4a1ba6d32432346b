import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MMBENCH_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).parent))

from mbeir_fixture import build_fixture  # noqa: E402


@pytest.fixture
def mbeir_root(tmp_path: Path) -> Path:
    return build_fixture(tmp_path / "M-BEIR")


@pytest.fixture(scope="session", autouse=True)
def shared_test_cache(tmp_path_factory) -> Path:
    """One embedding cache (and built mbeir-mini) for the tests that make real runs of the default model,
    so the suite pays the cold run once. MMBENCH_TEST_CACHE=<dir> reuses a cache across pytest runs."""
    if not os.environ.get("MMBENCH_TEST_CACHE"):
        os.environ["MMBENCH_TEST_CACHE"] = str(tmp_path_factory.getbasetemp() / "shared-cache")
    return Path(os.environ["MMBENCH_TEST_CACHE"])


def pytest_report_header(config):
    """numpy's BLAS and the kernel it runs (``make test`` runs the fidelity set under two OpenBLAS kernels)."""
    import numpy  # noqa: F401  (loads the BLAS threadpoolctl reports)
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    core = os.environ.get("OPENBLAS_CORETYPE")
    line = ("numpy BLAS: " + ("; ".join(f"{i.get('internal_api')} {i.get('version')}, kernel "
                                        f"{i.get('architecture', '?')}" for i in blas) or "none found")
            + f" (OPENBLAS_CORETYPE={core or 'unset'})")
    return [line]
