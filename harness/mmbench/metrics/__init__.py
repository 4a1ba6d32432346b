"""Retrieval metrics equal to trec_eval's (one table of metric families), and the modality report."""

from mmbench.metrics.families import FAMILIES, MetricFamily, parse_metric, register_metric_family
from mmbench.metrics.scoring import CandidateIds, MetricResult, Run, evaluate

__all__ = ["FAMILIES", "CandidateIds", "MetricFamily", "MetricResult", "Run", "evaluate", "parse_metric",
           "register_metric_family"]
