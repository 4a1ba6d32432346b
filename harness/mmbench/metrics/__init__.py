"""Retrieval metrics equal to trec_eval's, and the modality report."""

from mmbench.metrics.scoring import CandidateIds, MetricResult, Run, evaluate

__all__ = ["CandidateIds", "MetricResult", "Run", "evaluate"]
