"""mteb's own results format: write it for mteb tasks, and import mteb result folders into one table.

Written next to mmbench's results, in the layout of ``mteb.ResultCache`` (so
``mteb.ResultCache("<output>/mteb").load_results()`` and ``TaskResult.from_disk`` read them back, and
the folder can be submitted to ``embeddings-benchmark/results``)::

    <output>/mteb/results/<model name, "/" -> "__">/<revision>/<TaskName>.json
    <output>/mteb/results/<model name>/<revision>/model_meta.json

Keys follow mteb (``ndcg_at_10``, ``map_at_100``, ``recall_at_100``, ``mrr_at_10``, ``hit_rate_at_5``,
``precision_at_k``, ``accuracy`` = recall@1, ``main_score``, ``hf_subset``, ``languages``), rounded to 5
decimals as mteb rounds. mteb's nAUC abstention scores are not computed (not part of any main score).
``import mmbench`` stays light: mteb is never imported here.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from mmbench.metrics.families import from_mteb_key, to_mteb_key
from mmbench.util.io import write_json


def mteb_model_name(meta) -> str:
    """The model's hub id when known (``sentence-transformers/all-MiniLM-L6-v2``), else its mmbench name."""
    ref = meta.reference or ""
    prefix = "https://huggingface.co/"
    if ref.startswith(prefix) and ref.count("/") >= 4:
        return ref[len(prefix):].strip("/")
    name = meta.name
    for scheme in ("st:", "clip:"):
        if name.startswith(scheme) and "/" in name and not name[len(scheme):].startswith(("/", ".", "~")):
            return name[len(scheme):]
    return name.replace(":", "_")


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=+" else "_" for c in s.replace("/", "__"))


def mteb_version() -> str | None:
    try:
        return version("mteb")
    except PackageNotFoundError:
        return None


def score_dict(mean: dict[str, float], main_score_key: str, languages: list[str], subset: str = "default") -> dict:
    scores = {to_mteb_key(m): round(float(v), 5) for m, v in sorted(mean.items())}
    if "recall@1" in mean:
        scores["accuracy"] = round(float(mean["recall@1"]), 5)
    scores["main_score"] = scores[main_score_key]
    scores["hf_subset"] = subset
    scores["languages"] = list(languages)
    return scores


def write_mteb_result(output: Path, meta, spec, td, mean: dict[str, float], record: dict) -> Path:
    """Write one task's ``TaskResult`` JSON (and the model's ``model_meta.json``); returns its path."""
    info = td.mteb or {}
    name = info.get("name", spec.name)
    model = mteb_model_name(meta)
    folder = Path(output) / "mteb" / "results" / _slug(model) / _slug(meta.revision)
    main_key = info.get("main_score") or to_mteb_key(spec.main_metric)
    timings = record.get("timings_s", {})
    result = {
        "dataset_revision": info.get("revision", "local"),
        "task_name": name,
        "mteb_version": mteb_version(),
        "scores": {info.get("split", "test"): [score_dict(mean, main_key, info.get("languages", ["eng-Latn"]))]},
        "evaluation_time": round(sum(v for k, v in timings.items() if not k.endswith("from_cache")), 3),
        "kg_co2_emissions": None,
        "date": datetime.now(timezone.utc).timestamp(),
    }
    path = folder / f"{name}.json"
    write_json(path, result)
    write_json(folder / "model_meta.json", {
        "name": model, "revision": meta.revision, "release_date": None, "languages": None,
        "n_parameters": meta.n_parameters, "memory_usage_mb": None, "max_tokens": meta.max_tokens,
        "embed_dim": meta.embed_dim, "license": meta.license, "open_weights": True, "public_training_code": None,
        "public_training_data": None, "framework": ["Sentence Transformers", "PyTorch"],
        "reference": meta.reference, "similarity_fn_name": meta.similarity, "use_instructions": meta.uses_instructions,
        "training_datasets": None, "adapted_from": None, "superseded_by": None, "modalities": list(meta.modalities),
        "loader": None, "is_cross_encoder": None,
    })
    return path


# ------------------------------------------------------------------------------------------------
# Import


def read_mteb_results(folder: Path) -> list[dict]:
    """Rows ``{model, revision, task, split, subset, main_score, <mmbench metric names>...}`` of every
    ``<model>/<revision>/<Task>.json`` under ``folder`` (mteb's cache, its ``results`` folder, or a
    clone of ``embeddings-benchmark/results``). Files that are not TaskResults are skipped."""
    rows = []
    for path in sorted(Path(folder).rglob("*.json")):
        if path.name in ("model_meta.json",) or path.name.endswith("_predictions.json"):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "task_name" not in data or not isinstance(data.get("scores"), dict):
            continue
        revision, model = path.parent.name, path.parent.parent.name.replace("__", "/")
        for split, subsets in data["scores"].items():
            for sc in subsets if isinstance(subsets, list) else []:
                row = {"model": model, "revision": revision, "task": data["task_name"], "split": split,
                       "subset": sc.get("hf_subset", "default"), "main_score": sc.get("main_score"),
                       "dataset_revision": data.get("dataset_revision"), "mteb_version": data.get("mteb_version")}
                for key, value in sc.items():
                    m = from_mteb_key(key)
                    if m is not None and isinstance(value, (int, float)):
                        row[m] = value
                rows.append(row)
    return rows


def import_mteb_results(folder: Path, out: Path) -> tuple[Path, int]:
    """Write :func:`read_mteb_results` as CSV (``.csv``) or JSON lines (anything else)."""
    rows = read_mteb_results(folder)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        import csv

        cols = list(dict.fromkeys(k for r in rows for k in r))
        with open(out, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
    else:
        with open(out, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, sort_keys=True) + "\n")
    return out, len(rows)
