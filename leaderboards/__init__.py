"""Installed as the data package ``mmbench.published``, which carries ``reported.toml`` only (the
published numbers; pyproject.toml maps the package onto this folder). The boards and baselines here
are the checkout's, not the package's."""
