"""Task families (:class:`~mmbench.data.families.base.TaskFamily`): M-BEIR and MTEB built in, more by plugins."""

from mmbench.data.families.base import BaseFamily, TaskFamily

__all__ = ["BaseFamily", "TaskFamily"]
