"""Step 5 of a run: the run file, the per-query file, the task record, the summary, the family's extras.

Files go through a writer with ``submit(fn, *args) -> Future``: the run's background writer
(:class:`~mmbench.embeddings.BackgroundWriter`, in submission order) or :class:`Immediate`. The run
file is submitted as soon as the run is ranked, so it is written while the run is scored; the task
record (what marks a task finished) is submitted after it, so it never names a missing run file, and
records the run file's size (the run file is not fsynced: a reuse checks the size instead).
"""

from __future__ import annotations

from concurrent.futures import Future
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mmbench.results.layout import DEFAULT_RUN_FORMAT, RUN_FORMATS, per_query_file, record_file, run_file
from mmbench.results.records import load_task_result, write_per_query, write_summary, write_task_result
from mmbench.results.trec import write_trec


class Immediate:
    """A writer that does each job at once, in the caller's thread."""

    def submit(self, fn, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def start_run_file(writer, directory: Path, task: str, ranked, tag: str, depth: int | None = None,
                   run_format: str = DEFAULT_RUN_FORMAT) -> Future:
    """Submit the TREC run file of ``ranked`` (a :class:`~mmbench.metrics.scoring.Run`), its first
    ``depth`` hits per query (all with None: the rows are in rank order, so the file is the top
    ``depth`` of the run), as ``run_format`` (:data:`~mmbench.results.layout.RUN_FORMATS`); the future
    gives its size in bytes. Once it is written, the task's run file of the other format (an earlier
    run's) is removed: the folder holds one run file per task, the one its record names."""
    indices, scores = ranked.indices, ranked.scores
    if depth is not None and indices.ndim == 2 and depth < indices.shape[1]:
        indices, scores = indices[:, :depth], scores[:, :depth]
    return writer.submit(_write_run_file, Path(directory), task, run_format, ranked.query_ids, ranked.candidate_ids,
                         indices, scores, tag)


def _write_run_file(directory: Path, task: str, run_format: str, query_ids, candidate_ids, indices, scores,
                    tag: str) -> int:
    size = write_trec(directory / run_file(task, run_format), query_ids, candidate_ids, indices, scores, tag,
                      fsync=False)
    for other in RUN_FORMATS:
        if other != run_format:
            (directory / run_file(task, other)).unlink(missing_ok=True)
    return size


def finish_task(writer, directory: Path, task: str, scored, record: dict, run_bytes: Future) -> Path:
    """Submit the per-query file and then the task record (with the run file's size); returns the
    record's path."""
    writer.submit(write_per_query, Path(directory) / per_query_file(task), scored.result.query_ids,
                  scored.result.per_query)
    writer.submit(_write_record, Path(directory), task, record, run_bytes)
    return Path(directory) / record_file(task)


def _write_record(directory: Path, task: str, record: dict, run_bytes: Future) -> None:
    write_task_result(directory, task, {**record, "files": {**record["files"], "run_bytes": run_bytes.result()}})


def write_extras(writer, family, output: Path, meta, spec, data, scored, record: dict) -> None:
    """Submit the files the task's family writes beside mmbench's own (mteb's results format) under
    ``output`` (the run's --output; a non-default configuration's own results folder, so that its
    copies never replace the default's: :func:`extras_root`)."""
    writer.submit(family.write_extra_outputs, output, meta, spec, data, scored.result.mean, record)


def extras_root(output: Path, directory: Path, variant: str) -> Path:
    """Where the families' extra files go: ``--output`` for the default configuration, the results
    folder itself for another (``<suite>__<variant>/mteb/results/...``)."""
    return Path(directory) if variant else Path(output)


def write_config(directory: Path, config) -> Path:
    """A non-default configuration's ``config.json``: its variant, config hash and every setting."""
    from mmbench.results.layout import CONFIG_FILE
    from mmbench.util.io import write_json

    path = Path(directory) / CONFIG_FILE
    write_json(path, {"variant": config.variant(), "config_hash": config.config_hash(),
                      "scoring_fields": config.scoring_fields(), "run_depth": config.run_depth,
                      "config": config.to_dict()})
    return path


def write_suite_summary(outcome, suite_tasks: tuple[str, ...], config_hash: str,
                        groups: dict | None = None) -> tuple[float | None, Path]:
    """Headlines of every suite task with a result of this configuration, and their plain mean (UniIR's
    average); returns the average and the summary's path."""
    headlines = {}
    for name in suite_tasks:
        rec = load_task_result(outcome.directory / record_file(name))
        if rec and rec.get("provenance", {}).get("config_hash") == config_hash:
            headlines[name] = {"main_metric": rec["main_metric"], "main_score": rec["main_score"]}
    units = group_units(headlines, groups or {})
    average = round(float(np.mean(list(units.values()))), 6) if units else None
    summary = {"suite": outcome.suite, "pool": outcome.pool, "model": outcome.model, "revision": outcome.revision,
               "config_hash": config_hash, "average_main_score": average,
               "average_definition": "plain mean of the task headline scores (as UniIR averages its 16 tasks)",
               "complete": len(headlines) == len(suite_tasks),
               "missing_tasks": [t for t in suite_tasks if t not in headlines],
               "tasks": headlines, **({"groups": {g: units.get(g) for g in groups}} if groups else {}),
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return average, write_summary(outcome.directory, summary)


def group_units(headlines: dict, groups: dict) -> dict[str, float]:
    """Scores that enter the suite average: each group's mean of its members (as mteb averages
    CQADupStack's forums) counts as one task; other tasks count as themselves."""
    grouped = {m for members in groups.values() for m in members}
    units = {n: h["main_score"] for n, h in headlines.items() if n not in grouped}
    for g, members in groups.items():
        present = [headlines[m]["main_score"] for m in members if m in headlines]
        if present:
            units[g] = round(float(np.mean(present)), 6)
    return units


__all__ = ["Immediate", "extras_root", "finish_task", "group_units", "start_run_file", "write_config", "write_extras",
           "write_suite_summary"]
