"""Data loading: task specs -> :class:`harness.data.types.TaskData` (queries, candidate pool, qrels)."""
