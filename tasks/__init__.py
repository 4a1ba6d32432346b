"""The task and suite specs (``*.toml``), installed as the data package ``mmbench.specs``
(pyproject.toml maps it onto this folder); :mod:`mmbench.data.specs` reads them."""
