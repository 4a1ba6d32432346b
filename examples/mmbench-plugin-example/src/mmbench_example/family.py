"""The ``example-tsv`` task family: a tiny tab-separated format shipped inside the plugin.

A task of this family is a folder with three UTF-8 files, one record a line:

* ``queries.tsv``: ``query_id <TAB> text``;
* ``corpus.tsv``: ``doc_id <TAB> text``;
* ``qrels.tsv``: ``query_id <TAB> doc_id <TAB> relevance`` (relevance > 0: relevant).

A family implements :class:`mmbench.data.families.base.TaskFamily`; subclassing ``BaseFamily`` leaves
``name``, ``data_root`` and ``load`` to write. This one also writes an extra file after each task is
scored (``<output>/example-tsv/<task>.txt``: the headline), to show that step.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mmbench.data.families.base import BaseFamily
from mmbench.data.types import ItemTable, TaskData
from mmbench.errors import DataError

DATA = Path(__file__).parent / "data"


def _rows(path: Path, columns: int) -> list[list[str]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != columns:
                raise DataError(path, f"line {lineno}: expected {columns} tab-separated fields, got {len(fields)}")
            rows.append(fields)
    return rows


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class TsvFamily(BaseFamily):
    name = "example-tsv"

    def data_root(self, spec, config) -> Path:
        """The task's folder inside the installed plugin (``loader_args.folder``)."""
        return DATA / spec.loader_args["folder"]

    def load(self, spec, root: Path, *, instructions: str = "first", seed: int = 2023) -> TaskData:
        files = {role: Path(root) / f"{role}.tsv" for role in ("queries", "corpus", "qrels")}
        queries = _rows(files["queries"], 2)
        corpus = _rows(files["corpus"], 2)
        qrels: dict[str, dict[str, int]] = {}
        for qid, did, rel in _rows(files["qrels"], 3):
            qrels.setdefault(qid, {})[did] = int(rel)

        def table(rows: list[list[str]], role: str) -> ItemTable:
            return ItemTable([r[0] for r in rows], ["text"] * len(rows), [r[1] for r in rows], [None] * len(rows),
                             root=Path(root), raw_texts=[r[1] for r in rows], source=str(files[role]))

        fingerprints = {role: _sha256(path) for role, path in files.items()}
        return TaskData(name=spec.name, queries=table(queries, "queries"), pool=table(corpus, "corpus"),
                        qrels=qrels, fingerprints=fingerprints, pool_key=fingerprints["corpus"])

    def write_extra_outputs(self, output: Path, meta, spec, data: TaskData, scores: dict[str, float],
                            record: dict) -> None:
        folder = Path(output) / self.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{spec.name}.txt").write_text(f"{meta.name}\t{spec.main_metric}\t{record['main_score']}\n",
                                                 encoding="utf-8")


FAMILY = TsvFamily()
