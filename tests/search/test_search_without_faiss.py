"""faiss is optional (the cpu/gpu extras): without it and without the C kernel, the CPU search is torch's,
and it writes what every other exact backend writes."""

import subprocess
import sys

CODE = r"""
import sys
sys.modules["faiss"] = None                      # as if faiss were not installed
import numpy as np
from mmbench import native
native.library = lambda: None                    # as if no C compiler was found at install
from mmbench.search import describe_backend, resolve, search
backend, device = resolve("auto", "cpu")
rng = np.random.default_rng(3)
pool = np.round(rng.standard_normal((500, 16)) * 2).astype(np.float32)
pool[250:300] = pool[0]                          # a tie group across the cut-off
queries = rng.standard_normal((20, 16)).astype(np.float32)
idx, scores = search(queries, pool, 60, device="cpu")
ref_i, ref_s = search(queries, pool, 60, backend="numpy", device="cpu")
same = (idx == ref_i).all() and scores.tobytes() == ref_s.tobytes()
print(backend.name, describe_backend("auto", "cpu")["name"], bool(same))
"""


def test_the_cpu_search_falls_back_to_torch_without_faiss_and_kernel():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["torch", "torch", "True"]
