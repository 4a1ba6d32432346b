"""Data loading: task specs -> :class:`mmbench.data.types.TaskData` (queries, candidate pool, qrels)."""
