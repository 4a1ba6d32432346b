"""Query instructions for MM-Embed.

M-BEIR tasks: the task's instruction chosen by the loader (UniIR TSV ``prompt_1`` with
``--instructions first``, pyserini's MM-Embed convention; ``mbeir.md`` §4). MTEB text retrieval: the
E5-Mistral / NV-Embed instruction of each task (``mmembed.md`` §5.2), which are also mteb's own task
prompts (``mteb.get_task(name).metadata.prompt["query"]``) — the mteb loader passes those to the
encoder as ``Item.instruction``. Tasks mteb gives no prompt (the CQADupStack forums, the
``HardNegatives`` variants, ``Touche2020Retrieval.v3``) take this table's instruction of their
base task: MM-Embed's ``task_instructions`` names :func:`mteb_instruction`, which the runner
applies (:meth:`mmbench.data.families.mteb.MtebFamily.with_model_instructions`).
"""

from __future__ import annotations

import re

MTEB_INSTRUCTIONS: dict[str, str] = {
    "ArguAna": "Given a claim, find documents that refute the claim",
    "ClimateFEVER": "Given a claim about climate change, retrieve documents that support or refute the claim",
    "CQADupStack": "Given a question, retrieve detailed question descriptions from Stackexchange that are "
                   "duplicates to the given question",
    "DBPedia": "Given a query, retrieve relevant entity descriptions from DBPedia",
    "FEVER": "Given a claim, retrieve documents that support or refute the claim",
    "FiQA2018": "Given a financial question, retrieve user replies that best answer the question",
    "HotpotQA": "Given a multi-hop question, retrieve documents that can help answer the question",
    "MSMARCO": "Given a web search query, retrieve relevant passages that answer the query",
    "NFCorpus": "Given a question, retrieve relevant documents that best answer the question",
    "NQ": "Given a question, retrieve Wikipedia passages that answer the question",
    "QuoraRetrieval": "Given a question, retrieve questions that are semantically equivalent to the given question",
    "SCIDOCS": "Given a scientific paper title, retrieve paper abstracts that are cited by the given paper",
    "SciFact": "Given a scientific claim, retrieve documents that support or refute the claim",
    "Touche2020": "Given a question, retrieve detailed and persuasive arguments that answer the question",
    "TRECCOVID": "Given a query on COVID-19, retrieve documents that answer the query",
}


def mteb_instruction(task: str) -> str | None:
    """The instruction for an MTEB task name: the CQADupStack forums share one; a variant of a
    listed task (``FEVERHardNegatives``, ``Touche2020Retrieval.v3``) takes its base task's."""
    if task.startswith("CQADupstack") or task.startswith("CQADupStack"):
        return MTEB_INSTRUCTIONS["CQADupStack"]
    base = re.sub(r"\.v\d+$", "", task)
    for name in (task, base, base.removesuffix("HardNegatives"), base.removesuffix("Retrieval")):
        if name in MTEB_INSTRUCTIONS:
            return MTEB_INSTRUCTIONS[name]
    return None
