"""Where a run's results live, and what their files are called.

Layout under the output folder (default ``results/``)::

    <model>/<revision>/<suite>/<task>.json            every metric, headline, timings, provenance
    <model>/<revision>/<suite>/<task>.trec.gz         top-k run: qid Q0 did rank score tag (gzip;
                                                      ``<task>.trec`` with ``--run-format trec``)
    <model>/<revision>/<suite>/<task>.per_query.tsv   per-query value of every metric
    <model>/<revision>/<suite>/summary.json           headline per task and their plain mean
    <model>/<revision>/<suite>/experiments/<name>/    a second stage (rerank), the same files
    <model>/<revision>/<suite>__<variant>/            a non-default configuration (RunConfig.variant):
                                                      the same files, its config.json and mteb/ copies

Every folder name is :func:`slug` of the name it stands for.
"""

from __future__ import annotations

from pathlib import Path

from mmbench.util.text import slug

SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
VARIANT_SEP = "__"


def result_dir(output: Path, model: str, revision: str, suite_label: str, variant: str = "") -> Path:
    """``<output>/<model>/<revision>/<suite>`` for the default configuration, ``<suite>__<variant>``
    for another (:meth:`mmbench.config.RunConfig.variant`), so that no configuration overwrites another."""
    name = suite_label + (VARIANT_SEP + variant if variant else "")
    return Path(output) / slug(model) / slug(revision) / slug(name)


def record_file(task: str) -> str:
    return f"{task}.json"


RUN_FORMATS = ("trec.gz", "trec")      # gzip-compressed TREC lines (the default), or plain text
DEFAULT_RUN_FORMAT = "trec.gz"


def run_file(task: str, run_format: str = DEFAULT_RUN_FORMAT) -> str:
    """The run file's name: ``<task>.trec.gz`` (default) or ``<task>.trec``."""
    if run_format not in RUN_FORMATS:
        raise ValueError(f"run format {run_format!r}: expected one of {', '.join(RUN_FORMATS)}")
    return f"{task}.{run_format}"


def per_query_file(task: str) -> str:
    return f"{task}.per_query.tsv"


def experiment_dir(directory: Path, experiment: str) -> Path:
    """A second stage's folder inside the first stage's ``directory``."""
    return Path(directory) / "experiments" / experiment


def trec_tag(*names: str) -> str:
    """The run tag of a TREC line: ``mmbench.<name>[.<name>...]``, each name slugged, so that a model
    path with spaces (``st:/models/my model``) cannot split the tag into more fields."""
    return ".".join(["mmbench", *(slug(n) for n in names)])


__all__ = ["CONFIG_FILE", "DEFAULT_RUN_FORMAT", "RUN_FORMATS", "SUMMARY_FILE", "VARIANT_SEP", "experiment_dir", "per_query_file", "record_file", "result_dir", "run_file", "slug",
           "trec_tag"]
