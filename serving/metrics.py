"""Every Prometheus metric of the serving app, built against an injected registry.

Names are the cross-team contract (see docs/serving.md). Label values are bounded: routes
are route templates (unknown paths become ``other``), versions are the few a model has,
features come from the spec; never a request id. With several workers
(``PROMETHEUS_MULTIPROC_DIR`` set) values go to per-process files and ``/metrics``
aggregates them with ``MultiProcessCollector``; the Info is then a gauge of the same name.
"""

from __future__ import annotations

import os
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (.0005, .001, .002, .003, .005, .0075, .01, .015, .025, .05, .1, .25, .5, 1,
                   2.5)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry, model: str) -> None:
        self.model = model
        self.registry = registry
        self.multiprocess = multiprocess_dir() is not None
        r = registry
        self.http_requests = Counter(
            "driftloop_http_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=r)
        self.http_duration = Histogram(
            "driftloop_http_request_duration_seconds", "HTTP request duration.", ["route"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter(
            "driftloop_predictions", "Answered predictions by version and predicted class.",
            ["model", "version", "predicted_class"], registry=r)
        self.score = Histogram(
            "driftloop_prediction_score", "Positive-class score of answered predictions.",
            ["model"], buckets=SCORE_BUCKETS, registry=r)
        self.unseen_category = Counter(
            "driftloop_unseen_category", "Values of a categorical feature absent from the "
            "version's reference sample (served).", ["model", "feature"], registry=r)
        self.out_of_range = Counter(
            "driftloop_out_of_range", "Numbers outside the reference sample's range (served).",
            ["model", "feature"], registry=r)
        self.missing_values = Counter(
            "driftloop_missing_values", "Features sent as null (imputed).", ["model", "feature"],
            registry=r)
        self.validation_errors = Counter(
            "driftloop_validation_errors", "Requests refused with 4xx for their content.",
            ["route"], registry=r)
        self.model_info = Gauge(
            "driftloop_model_info", "The live model versions: 1 for the loaded version per alias.",
            ["model", "version", "alias"], registry=r, multiprocess_mode="livemax")
        self.model_ready = Gauge(
            "driftloop_model_ready", "1 when a champion is loaded and serving.", ["model"],
            registry=r, multiprocess_mode="livemin")
        self.reloads = Counter(
            "driftloop_model_reloads", "Alias checks and reloads by outcome "
            "(loaded, unchanged, rejected, error).", ["model", "outcome"], registry=r)
        self.shadow_scored = Counter(
            "driftloop_shadow_scored", "Requests scored by the challenger.", ["model"], registry=r)
        self.shadow_dropped = Counter(
            "driftloop_shadow_dropped", "Shadow samples dropped because the queue was full.",
            ["model"], registry=r)
        self.shadow_agreed = Counter(
            "driftloop_shadow_agreed", "Shadow-scored requests where the challenger predicted the "
            "same class as the champion.", ["model"], registry=r)
        self.log_rows_written = Counter(
            "driftloop_log_rows_written", "Prediction log rows written.", registry=r)
        self.log_rows_dropped = Counter(
            "driftloop_log_rows_dropped", "Prediction log rows dropped (buffer overflow).",
            registry=r)
        self.log_flush_lag = Gauge(
            "driftloop_log_flush_lag_seconds", "Age of the oldest row at the last flush.",
            registry=r, multiprocess_mode="livemax")
        self.model_ready.labels(model).set(0)
        self._info: dict[str, tuple[str, str]] = {}
        self._written = 0
        self._dropped = 0
        self._sync_lock = threading.Lock()
        # children bound once: the request path does no label lookups
        self.score_child = self.score.labels(model)
        self.shadow_scored_child = self.shadow_scored.labels(model)
        self.shadow_dropped_child = self.shadow_dropped.labels(model)
        self.shadow_agreed_child = self.shadow_agreed.labels(model)
        for outcome in ("loaded", "unchanged", "rejected", "error"):
            self.reloads.labels(model, outcome)

    def set_live(self, alias: str, version: int | None) -> None:
        """Point the Info at ``version`` for ``alias`` (None: nothing loaded for it)."""
        old = self._info.pop(alias, None)
        if old is not None:
            self.model_info.labels(*old, alias).set(0)
            if not self.multiprocess:
                self.model_info.remove(*old, alias)
        if version is not None:
            labels = (self.model, str(version))
            self.model_info.labels(*labels, alias).set(1)
            self._info[alias] = labels
        if alias == "champion":
            self.model_ready.labels(self.model).set(0 if version is None else 1)

    def sync_log_stats(self, rows_written: int, rows_dropped: int, lag_seconds: float) -> None:
        """Carry the log writer's running totals over as counter increments."""
        with self._sync_lock:
            if rows_written > self._written:
                self.log_rows_written.inc(rows_written - self._written)
                self._written = rows_written
            if rows_dropped > self._dropped:
                self.log_rows_dropped.inc(rows_dropped - self._dropped)
                self._dropped = rows_dropped
            self.log_flush_lag.set(lag_seconds)


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The /metrics body: this registry, or every worker's values in multiprocess mode."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
