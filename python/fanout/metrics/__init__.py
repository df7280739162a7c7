"""Prometheus metrics: what fanout counts, and the ``/metrics`` endpoint."""

from fanout.metrics.collector import CoreMetrics, StateCollector, make_registry
from fanout.metrics.endpoint import MetricsEndpoint

__all__ = ["CoreMetrics", "MetricsEndpoint", "StateCollector", "make_registry"]
