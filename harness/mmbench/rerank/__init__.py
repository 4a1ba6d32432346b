"""Second-stage rerankers over a first-stage run's top-k (``mmbench run ... --rerank R --rerank-top-k K``).

``base`` (the contract and :func:`~mmbench.rerank.base.parse_reranker`), ``rescore`` (an embedding model),
``cross_encoder`` (text cross-encoders), ``mllm`` (LLaVA-Next True/False judge), ``stage`` (read the run,
rerank, evaluate, write the experiment). Nothing heavy is imported here.
"""
