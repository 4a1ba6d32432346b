"""mmbench plugin example: a model (``example-hash``), a task family (``example-tsv``), a task and a suite.

Each ``register*`` function is an entry point (``pyproject.toml``): mmbench calls it with the registry
it fills, when it first builds that list. They only describe things; the encoder and the family's
module are imported when a run uses them.
"""

from __future__ import annotations

DIM = 256
TASK = "example-animals"
SUITE = "example-tiny"


def register(registry) -> None:
    """Group ``mmbench.models``: the model's metadata."""
    from mmbench.models.base import ModelMeta

    registry.register("example-hash", ModelMeta(
        name="example-hash",
        loader="mmbench_example.encoder:load",      # "module:callable", imported only when run
        revision="0.1.0",
        modalities=("text", "image"),
        embed_dim=DIM,
        description="Plugin example: signed feature hashing of words; images as a fixed random projection "
                    "of a 4x4 colour thumbnail. Deterministic, no weights; not a real retriever.",
        fusion="score-sum",
        max_tokens=None,
        n_parameters=0,
        license="Apache-2.0",
        reference="examples/mmbench-plugin-example",
    ))


def register_family(registry) -> None:
    """Group ``mmbench.loaders``: the task family a spec names in its ``loader`` field."""
    registry.register("example-tsv", "mmbench_example.family:FAMILY")


def register_tasks(registry) -> None:
    """Group ``mmbench.tasks``: a task of the ``example-tsv`` family (its files ship in the package)."""
    from mmbench.data.specs import TaskSpec

    registry.register(TASK, TaskSpec(
        name=TASK, loader="example-tsv", source="example", dataset="animals", query_modality="text",
        candidate_modality="text", domain="example", metrics=("hit@1", "mrr@5", "ndcg@5"), main_metric="hit@1",
        loader_args={"folder": "animals"}, top_k=5, n_queries=3, n_candidates=5,
        description="Plugin example: three animal sentences to find among five."))


def register_suites(registry) -> None:
    """Group ``mmbench.suites``: a suite of the plugin's task."""
    from mmbench.data.specs import SuiteSpec

    registry.register(SUITE, SuiteSpec(name=SUITE, tasks=(TASK,), description="Plugin example suite"))
