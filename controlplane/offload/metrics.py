"""The offload server's Prometheus metrics, named and labelled (``model``, ``version``) as Triton
names them, so dashboards and autoscalers (KEDA on ``nv_inference_pending_request_count``) work
against either server unchanged.

Durations are cumulative microsecond counters, as in Triton: divide by the matching count for a
mean. ``nv_inference_count`` counts inferences (batch rows), ``nv_inference_exec_count`` model
executions (batches), so their ratio is the mean batch size. Every metric is listed in
docs/offload.md; a test keeps that list and :meth:`OffloadMetrics.all` in step.
"""

from __future__ import annotations

from controlplane.metrics import Counter, Gauge, Registry

LABELS = ("model", "version")


class OffloadMetrics(Registry):
    def __init__(self) -> None:
        self.request_success = Counter(
            "nv_inference_request_success", "Inference requests answered 200.", LABELS
        )
        self.request_failure = Counter(
            "nv_inference_request_failure",
            "Inference requests refused or failed (bad input, queue full, draining, deadline, "
            "runtime error).",
            LABELS,
        )
        self.inference_count = Counter(
            "nv_inference_count", "Inferences performed (each row of a batch counts).", LABELS
        )
        self.exec_count = Counter(
            "nv_inference_exec_count", "Model executions (one per batch).", LABELS
        )
        self.request_duration_us = Counter(
            "nv_inference_request_duration_us",
            "Cumulative microseconds from a request's arrival to its answer.",
            LABELS,
        )
        self.queue_duration_us = Counter(
            "nv_inference_queue_duration_us",
            "Cumulative microseconds requests waited in the batcher's queue.",
            LABELS,
        )
        self.compute_infer_duration_us = Counter(
            "nv_inference_compute_infer_duration_us",
            "Cumulative microseconds of model execution, per request (a batch counts once for "
            "each request in it, as in Triton).",
            LABELS,
        )
        self.pending_request_count = Gauge(
            "nv_inference_pending_request_count",
            "Requests waiting in the batcher's queue now.",
            LABELS,
        )

    def add_model(self, model: str, version: str) -> None:
        """Show a model's series at zero before its first request (a scrape sees every model)."""
        for metric in self.all():
            if isinstance(metric, Counter):
                metric.inc(0, model, version)
        self.pending_request_count.set(0, model, version)
