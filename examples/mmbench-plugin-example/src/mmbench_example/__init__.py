"""mmbench plugin example: registers the metadata of ``example-hash`` (no heavy import here).

``register`` runs whenever mmbench builds its model list (``mmbench list models``), so it only
describes the model; the encoder module is imported when the model is actually run.
"""

from __future__ import annotations

DIM = 256


def register(registry) -> None:
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
