"""The control plane's Prometheus metrics, written as the text exposition format by hand.

Three metric kinds are all we need (counter, gauge, histogram), and ~100 lines here are cheaper
than a dependency. Each metric is updated by one side only (the event loop or the store's writer
thread) and read by ``GET /metrics``; a lock per metric keeps a scrape consistent.

Every metric is listed in docs/controlplane.md; a test keeps the list and :meth:`Metrics.all`
in step.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CHANNELS = ("status", "telemetry", "results")


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:
        raise NotImplementedError

    def _labels(self, values: Sequence[str], extra: str = "") -> str:
        pairs = [f'{k}="{_escape(v)}"' for k, v in zip(self.labelnames, values, strict=True)]
        if extra:
            pairs.append(extra)
        return "{" + ",".join(pairs) + "}" if pairs else ""


class _Valued(_Metric):
    """A counter or gauge: one float per combination of label values."""

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str] = (),
        initial: Iterable[Sequence[str]] = (),
    ) -> None:  # fmt: skip
        super().__init__(name, help, labelnames)
        self._values: dict[tuple[str, ...], float] = {tuple(v): 0.0 for v in initial}
        if not self.labelnames:
            self._values[()] = 0.0

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(tuple(labels), 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{self._labels(k)} {_number(v)}" for k, v in items]


class Counter(_Valued):
    kind = "counter"

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        with self._lock:
            key = tuple(labels)
            self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(_Valued):
    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        with self._lock:
            self._values[tuple(labels)] = float(value)

    def replace(self, values: Mapping[tuple[str, ...], float]) -> None:
        """Set every series at once: label values not in ``values`` disappear from the scrape
        (a gauge computed from the store at scrape time must not keep stale series)."""
        fresh = {tuple(k): float(v) for k, v in values.items()}
        with self._lock:
            self._values = fresh


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        super().__init__(name, help)
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * len(self.buckets)
        self._sum = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        with self._lock:
            self._sum += value
            self._count += 1
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    self._counts[i] += 1
                    break

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def lines(self) -> list[str]:
        with self._lock:
            counts, total, count = list(self._counts), self._sum, self._count
        out, cumulative = [], 0
        for bound, n in zip(self.buckets, counts, strict=True):
            cumulative += n
            out.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {cumulative}')
        out.append(f'{self.name}_bucket{{le="+Inf"}} {count}')
        out.append(f"{self.name}_sum {_number(total)}")
        out.append(f"{self.name}_count {count}")
        return out


class Registry:
    """A set of metrics, the attributes of a subclass, served together on one ``/metrics``."""

    def all(self) -> list[_Metric]:
        return [v for v in vars(self).values() if isinstance(v, _Metric)]

    def render(self) -> str:
        """The Prometheus text exposition (version 0.0.4) of every metric."""
        lines: list[str] = []
        for metric in self.all():
            lines += metric.header() + metric.lines()
        return "\n".join(lines) + "\n"


class Metrics(Registry):
    """Every metric of the control plane. One instance per app, shared by ingest and the store."""

    def __init__(self) -> None:
        channels = [(c,) for c in CHANNELS]
        self.devices = Gauge(
            "edgefleet_devices", "Known devices by state (online or offline).", ["state"],
            [("online",), ("offline",)],
        )  # fmt: skip
        self.messages_received = Counter(
            "edgefleet_messages_received_total", "MQTT messages received, by channel.",
            ["channel"], channels,
        )  # fmt: skip
        self.messages_malformed = Counter(
            "edgefleet_messages_malformed_total",
            "Messages that did not parse or validate, acknowledged and dropped, by channel.",
            ["channel"], channels,
        )  # fmt: skip
        self.results_ingested = Counter(
            "edgefleet_results_ingested_total", "Results stored (first copies only)."
        )
        self.results_duplicate = Counter(
            "edgefleet_results_duplicate_total",
            "Results received again (at-least-once delivery) and ignored.",
        )
        self.ingest_latency = Histogram(
            "edgefleet_ingest_latency_seconds",
            "Seconds from the receipt of a message to the commit that stored it.",
        )
        self.store_commit = Histogram(
            "edgefleet_store_commit_seconds", "Seconds per group commit of the store."
        )
        self.store_commit_errors = Counter(
            "edgefleet_store_commit_errors_total", "Failed commits (retried; nothing is acked)."
        )
        self.store_queue_depth = Gauge(
            "edgefleet_store_queue_depth", "Messages waiting for the store's writer thread."
        )
        self.mqtt_connected = Gauge(
            "edgefleet_mqtt_connected", "1 while connected to the MQTT broker, else 0."
        )
        # Fleet gauges, read from the store at scrape time (controlplane/fleet_metrics.py).
        self.devices_by_release = Gauge(
            "edgefleet_devices_by_release",
            "Known devices by the model releases they report running.", ["model", "version"],
        )  # fmt: skip
        self.devices_by_backend = Gauge(
            "edgefleet_devices_by_backend", "Known devices by inference backend.", ["backend"]
        )
        self.devices_fallback = Gauge(
            "edgefleet_devices_fallback",
            "Online devices whose backend fell back (an accelerator missing or failing).",
        )
        self.rollouts = Gauge("edgefleet_rollouts", "Rollouts by state.", ["state"])
        self.rollout_devices = Gauge(
            "edgefleet_rollout_devices",
            "Devices of each active rollout by deployment state.",
            ["rollout", "model", "version", "state"],
        )  # fmt: skip
        self.ingest_lag = Gauge(
            "edgefleet_ingest_lag_seconds",
            "Seconds since the newest result was received (absent before the first).",
        )
        self.outbox_oldest_age_max = Gauge(
            "edgefleet_outbox_oldest_age_seconds_max",
            "Oldest unsent outbox entry's age, max over online devices' latest telemetry.",
        )
        # Kept inputs at rest (controlplane/samples/keeper.py): counts, never content.
        self.data_purged = Counter(
            "edgefleet_data_inputs_purged_total", "Kept inputs deleted past data_retention_days."
        )
        self.data_deleted = Counter(
            "edgefleet_data_inputs_deleted_total", "Kept inputs deleted on demand (DELETE /data)."
        )
        self.data_sealed = Counter(
            "edgefleet_data_inputs_sealed_total",
            "Kept inputs sealed by the keeper: legacy (stored before encryption), rotation.",
            ["reason"], [("legacy",), ("rotation",)],
        )  # fmt: skip
        self.data_unreadable = Counter(
            "edgefleet_data_inputs_unreadable_total",
            "Kept inputs whose file was gone, altered or under a lost key: their rows deleted.",
        )
        # Alerts (controlplane/alerts/): open ones read at scrape time, deliveries as they happen.
        self.alerts = Gauge(
            "edgefleet_alerts", "Open (firing) alerts by rule and severity.", ["rule", "severity"]
        )
        self.alert_notifications = Counter(
            "edgefleet_alert_notifications_total",
            "Alert webhook notifications by outcome (delivered, retried, failed: gave up).",
            ["outcome"], [("delivered",), ("retried",), ("failed",)],
        )  # fmt: skip


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() else repr(value)
