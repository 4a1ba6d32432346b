"""Regenerate tests/golden/mbeir_mini.json from a fresh run (only when a score change is explained).

Usage: python tests/golden/regenerate.py
"""

import json
import tempfile
from pathlib import Path

from mmbench import api

MODELS = ["effnet-lite0-imagenet-labels-minilm"]
METRICS = ["hit@1", "hit@5", "hit@10", "recall@10", "ndcg@10", "mrr@10", "map@10"]


def main() -> None:
    golden = {}
    with tempfile.TemporaryDirectory() as out:
        for model in MODELS:
            outcome = api.run(api.RunConfig(model=model, suite="mbeir-mini", output=Path(out)))
            golden[model] = {t.task: {m: t.metrics[m] for m in METRICS} for t in outcome.tasks}
    path = Path(__file__).with_name("mbeir_mini.json")
    path.write_text(json.dumps(golden, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
