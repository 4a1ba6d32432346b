"""``torchrun ... tests/distributed/dist_launch.py run ...``: mmbench's command line with a fault
injected into one rank's model, for the failure tests (the product has no such hook).

``MMBENCH_TEST_FAULT=kill:R:N``: rank R kills itself (SIGKILL) when its model is asked for its
chunk N+1, after N chunks; ``hang:R:N``: rank R sleeps instead (a stuck rank).
``MMBENCH_TEST_NODE_LOCAL=1``: every rank but 0 has its own cache, ``$MMBENCH_HOME-rankR`` (as if each
rank were on a node of its own, without a shared file system).
"""

import os
import signal
import time

from mmbench.cli import main
from mmbench.pipeline import pools


def _inject(fault: str) -> None:
    kind, rank, after = fault.split(":")
    if os.environ.get("RANK") != rank:
        return
    load = pools.LazyEncoder.__call__

    def faulty(self):
        encoder = load(self)
        if getattr(encoder, "_faulty", False):
            return encoder
        encode, calls = encoder.encode, []

        def encode_with_fault(items, **kw):
            if len(calls) >= int(after):
                if kind == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(3600)
            calls.append(len(items))
            return encode(items, **kw)

        encoder.encode, encoder._faulty = encode_with_fault, True
        return encoder

    pools.LazyEncoder.__call__ = faulty


if __name__ == "__main__":
    if os.environ.get("MMBENCH_TEST_NODE_LOCAL") == "1" and os.environ.get("RANK", "0") != "0":
        os.environ["MMBENCH_HOME"] = f"{os.environ['MMBENCH_HOME']}-rank{os.environ['RANK']}"
    if os.environ.get("MMBENCH_TEST_FAULT"):
        _inject(os.environ["MMBENCH_TEST_FAULT"])
    main()
