"""mmbench: evaluation harness for universal multimodal retrieval (M-BEIR) and MTEB retrieval.

Importing this package is cheap: it imports neither torch, faiss nor transformers.
The library API lives in :mod:`mmbench.api`.
"""

__version__ = "0.1.0"
