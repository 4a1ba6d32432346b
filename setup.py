"""The package list only (everything else is in pyproject.toml): every package found under harness/,
plus the two data packages that pyproject.toml's package-dir maps onto the top-level folders tasks/
(mmbench.specs, with its sub-folders) and leaderboards/ (mmbench.published), which a find in harness/
cannot see."""

from setuptools import find_namespace_packages, setup

SPECS = ["mmbench.specs", *(f"mmbench.specs.{p}" for p in find_namespace_packages("tasks") if p.isidentifier())]

setup(packages=[*find_namespace_packages("harness", include=["mmbench", "mmbench.*"]), *SPECS, "mmbench.published"])
