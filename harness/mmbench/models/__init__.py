"""Models: the adapter contract, the built-in catalog, and one adapter module per model family.

* :mod:`~mmbench.models.base`: the plugin contract (:class:`ModelMeta`, :class:`Encoder`,
  :class:`FusionEncoder`); plugins and ``examples/`` import it;
* :mod:`~mmbench.models.builtin`: the built-in ``ModelMeta`` table and the dynamic ``clip:``,
  ``siglip:``, ``st:`` and ``mm-embed:`` schemes (weight-free, no torch import);
* :mod:`~mmbench.models.loading`: loading helpers shared by the adapters and the pipeline (local path or
  hub id, a folder's ``local:`` revision, hub source and commit, device, ``--model-option``, hub-miss errors);
* :mod:`~mmbench.models.batching`: length-ordered text batches, image decoding in workers, OOM halving;
* the adapters (``minilm``, ``clip``, ``siglip``, ``blip``, ``uniir``, ``sentence_transformer``,
  ``imagenet_labels``, ``mmembed/``), each imported only when its model is chosen.
"""
