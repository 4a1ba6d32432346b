"""A run over many processes (``torchrun``, SLURM's ``srun torchrun``), on ``torch.distributed``.

* :mod:`~mmbench.distributed.group`: detection of a torchrun launch, the process group's set-up and
  tear-down (:func:`process_group`), :class:`RankInfo`, collectives with a timeout;
* :mod:`~mmbench.distributed.assign`: the declared cost of an item and the cost-balanced,
  deterministic assignment of missing cache chunks to ranks;
* :mod:`~mmbench.distributed.encode`: :func:`encode_shared`, every rank encoding its share of a run's
  missing chunks into the shared embedding cache, rank 0 holding the entries' locks for the group.

Rank 0 alone then searches, scores and writes (:func:`mmbench.pipeline.run.run`): its results are
those of a single-process run on the same embeddings. Importing this package imports no torch.
"""

from mmbench.distributed.group import DistributedError, RankInfo, current, launched, process_group

__all__ = ["DistributedError", "RankInfo", "current", "launched", "process_group"]
