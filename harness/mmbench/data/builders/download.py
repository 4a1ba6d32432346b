"""``mmbench data download --tasks SciFact,NFCorpus --out DIR``: fetch mteb tasks' datasets for offline use.

Each task's HF dataset repository is downloaded at the exact revision the installed mteb pins, into
``DIR/<TaskName>/`` (a snapshot of the repo: ``README.md`` with its ``configs:`` and the data files).
That folder is what ``--data-root DIR`` reads, and mteb's own loader reads it too. Needs hub access;
run it on a connected machine and copy ``DIR`` to the offline one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mmbench.errors import MmbenchError


def download_tasks(names: list[str], out: Path, *, message: Callable[[str], None] = print) -> list[Path]:
    from mmbench import catalog
    from mmbench.data.families.mteb import detect_layout, task_info

    folders = []
    for name in names:
        spec = catalog.tasks().get(name)
        if spec.loader != "mteb" or "task" not in spec.loader_args:
            raise MmbenchError(f"task {name!r} is not an mteb hub task (offline tasks are built by `mmbench data build-text`)")
        info = task_info(spec)
        target = Path(out) / info["name"]
        message(f"{info['name']}: {info['path']}@{info['revision'][:12]} -> {target}")
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(repo_id=info["path"], repo_type="dataset", revision=info["revision"],
                              local_dir=str(target))
        except Exception as exc:   # offline, DNS, HTTP errors
            raise MmbenchError(f"task {info['name']!r}: could not download {info['path']}@{info['revision'][:12]} "
                               f"from the HF hub ({type(exc).__name__}: {exc}); run this on a machine with hub access") from None
        if detect_layout(target) is None:
            raise MmbenchError(f"task {info['name']!r}: {target} has no README.md configs nor corpus.jsonl")
        folders.append(target)
    return folders
