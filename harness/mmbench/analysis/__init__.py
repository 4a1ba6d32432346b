"""Reading finished runs: :mod:`~mmbench.analysis.compare` (per-task deltas with paired tests),
:mod:`~mmbench.analysis.stats` (the tests, intervals and Holm's correction),
:mod:`~mmbench.analysis.leaderboard` (boards from a results tree and the published numbers) and
:mod:`~mmbench.analysis.regress` (a run against a committed baseline). They read result records and
per-query files only; nothing here runs a model or prints (the CLI prints their reports and tables)."""
