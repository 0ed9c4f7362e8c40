"""Every Prometheus metric of the serving app, built against an injected registry.

Names are the cross-team contract (see docs/serving.md). Label values are bounded: routes
are route templates (unknown paths become ``other``), versions are the few a model has,
features come from the spec; never a request id. With several workers
(``PROMETHEUS_MULTIPROC_DIR`` set) values go to per-process files and ``/metrics``
aggregates them with ``MultiProcessCollector``; the Info is then a gauge of the same name.

The observations every request makes (route, method, status and duration; a
prediction's version, class and score; each text feature's text) go through
:class:`Tally`: the request path appends a tuple to a deque, and the tuples are folded in
bulk (one increment per label set; one pass over a histogram's values into
:class:`BulkHistogram`'s own bucket counts, exposed through prometheus_client's public
collector interface) before every collection of the registry (a scrape,
``get_sample_value``) and every second. Observed one by one (a lock per counter, a bucket
search and two locks per histogram value) they were the largest part of what monitoring
added to the request path; docs/bench/serving_cost.md measures what is left. With several
workers a scrape reaches one of them and reads every worker's files, so there each
observation is applied at once instead, to prometheus_client's own
``Histogram`` (whose values go to those files).

A multi-class version's predictions are also counted per class
(``driftloop_predictions_by_class_total``): the class label is always one of the version's
own classes (the argmax over them), so its values are bounded by the classes a model has.
Text features are observed once per text when the tally folds, off the request path: its
length in characters, and by the version's ``TextProfile`` its out-of-vocabulary share
(the words found once) and whether it is out of distribution. A binary version without text
features observes nothing more than before.
"""

from __future__ import annotations

import bisect
import collections
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from kernel.text import TextProfile
    from monitoring.predlog import WriterStats

LATENCY_BUCKETS = (.0005, .001, .002, .003, .005, .0075, .01, .015, .025, .05, .1, .25, .5, 1,
                   2.5)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
TEXT_LENGTH_BUCKETS = (0, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000)
OOV_SHARE_BUCKETS = (0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
#: ``predicted_class`` of a multi-class version's predictions in ``driftloop_predictions``
#: (its classes are counted in ``driftloop_predictions_by_class``); binary: ``"0"``/``"1"``
MULTICLASS = "multiclass"


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def observe_many(histogram: Any, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for each value: in one pass for a :class:`BulkHistogram`
    child, one call per value for anything else (prometheus_client's ``Histogram``)."""
    bulk = getattr(histogram, "observe_many", None)
    if bulk is not None:
        bulk(values)
        return
    for v in values:
        histogram.observe(v)


def _created_series() -> bool:
    """prometheus_client's documented switch for ``_created`` samples."""
    flag = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False")
    return flag.lower() not in ("true", "1", "t")


class _HistogramChild:
    """One label set of a :class:`BulkHistogram`: per-bucket counts and the sum."""

    def __init__(self, owner: BulkHistogram) -> None:
        self.owner = owner
        self.counts = [0] * len(owner.bounds)
        self.total = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.observe_many((value,))

    def observe_many(self, values: Sequence[float]) -> None:
        """As prometheus_client's ``Histogram.observe`` for each value: the first bucket
        whose bound is at least the value; a NaN counts in the sum only."""
        bounds, counts = self.owner.bounds, [0] * len(self.owner.bounds)
        for v in values:
            if v == v:  # not NaN
                counts[bisect.bisect_left(bounds, v)] += 1
        total = sum(values)  # as observe adds them (fsum raises on inf - inf)
        with self.owner.lock:
            for i, n in enumerate(counts):
                if n:
                    self.counts[i] += n
            self.total += total


class BulkHistogram(Collector):
    """A labelled histogram that takes its values in bulk and exposes them as a
    ``HistogramMetricFamily``: the same samples as prometheus_client's ``Histogram`` (buckets,
    count, sum, created), for one process (multiprocess mode uses ``Histogram`` itself)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], *,
                 buckets: Sequence[float], registry: CollectorRegistry | None) -> None:
        self.name, self.documentation = name, documentation
        self.labelnames = tuple(labelnames)
        bounds = tuple(float(b) for b in buckets)
        self.bounds = bounds if bounds[-1] == math.inf else (*bounds, math.inf)
        self.lock = threading.Lock()
        self.children: dict[tuple[str, ...], _HistogramChild] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> _HistogramChild:
        key = tuple(str(v) for v in values)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {key}")
        with self.lock:
            child = self.children.get(key)
            if child is None:
                child = self.children[key] = _HistogramChild(self)
            return child

    def describe(self) -> Iterable[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        names = [floatToGoString(b) for b in self.bounds]
        created = _created_series()
        with self.lock:
            children = [(key, list(c.counts), c.total, c.created) for key, c in self.children.items()]
        for key, counts, total, since in children:
            cumulative, running = [], 0
            for name, n in zip(names, counts, strict=True):
                running += n
                cumulative.append((name, float(running)))
            family.add_metric(list(key), cumulative, total)
            if created:
                family.add_sample(f"{self.name}_created",
                                  dict(zip(self.labelnames, key, strict=True)), since)
        yield family


def _drain(queue: collections.deque[Any]) -> list[Any]:
    return [queue.popleft() for _ in range(len(queue))]


class Tally:
    """Per-request observations, buffered on the request path and folded in bulk
    (``buffered=False``: applied at once, for multiprocess mode)."""

    def __init__(self, metrics: ServingMetrics, *, buffered: bool = True) -> None:
        self.metrics = metrics
        self.buffered = buffered
        self._http: collections.deque[tuple[str, str, int, float]] = collections.deque()
        self._predictions: collections.deque[tuple[int, int, float]] = collections.deque()
        self._classes: collections.deque[tuple[int, str, float]] = collections.deque()
        self._texts: collections.deque[tuple[int, str, TextProfile | None, str | None]] = \
            collections.deque()
        self._lock = threading.Lock()
        self._children: dict[tuple[Any, ...], Any] = {}

    def http(self, route: str, method: str, status: int, seconds: float) -> None:
        if self.buffered:
            self._http.append((route, method, status, seconds))
            return
        m = self.metrics
        self._child(("http", route, method, status), m.http_requests, route, method,
                    str(status)).inc()
        self._child(("duration", route), m.http_duration, route).observe(seconds)

    def prediction(self, version: int, predicted: int, score: float) -> None:
        if self.buffered:
            self._predictions.append((version, predicted, score))
            return
        m = self.metrics
        self._child(("predictions", version, predicted), m.predictions, m.model, str(version),
                    str(predicted)).inc()
        m.score_child.observe(score)

    def classified(self, version: int, predicted: str, score: float) -> None:
        """A multi-class version's prediction: its class (one of the version's) and top
        probability."""
        if self.buffered:
            self._classes.append((version, predicted, score))
            return
        m = self.metrics
        self._child(("predictions", version, MULTICLASS), m.predictions, m.model, str(version),
                    MULTICLASS).inc()
        self._child(("class", version, predicted), m.predictions_by_class, m.model,
                    str(version), predicted).inc()
        m.score_child.observe(score)

    def text(self, version: int, column: str, profile: TextProfile | None,
             text: str | None) -> None:
        """One text feature's value (None: missing, observed as the empty text), with the
        serving version's profile of that column (None: only its length is observed)."""
        if self.buffered:
            self._texts.append((version, column, profile, text))
            return
        self._observe_texts(version, column, profile, [text])

    def _observe_texts(self, version: int, column: str, profile: TextProfile | None,
                       texts: Sequence[str | None]) -> None:
        m = self.metrics
        labels = (m.model, str(version), column)
        observe_many(self._child(("text_length", version, column), m.text_length, *labels),
                     [0 if t is None else len(t) for t in texts])
        if profile is None:
            return
        shares, ood = [], 0
        for text in texts:
            share = profile.oov(text)  # the words found once, for both observations
            shares.append(share)
            ood += profile.is_ood(text, share)
        observe_many(self._child(("text_oov", version, column), m.text_oov, *labels), shares)
        out = self._child(("text_ood", version, column), m.text_ood, *labels)  # 0 from the start
        if ood:
            out.inc(ood)

    def fold(self) -> None:
        """Apply everything buffered to the Prometheus metrics (any thread; idempotent)."""
        with self._lock:
            http, predictions = _drain(self._http), _drain(self._predictions)
            classes, texts = _drain(self._classes), _drain(self._texts)
            m = self.metrics
            durations: dict[str, list[float]] = collections.defaultdict(list)
            for key, n in collections.Counter((r, meth, st) for r, meth, st, _ in http).items():
                self._child(("http", *key), m.http_requests, key[0], key[1], str(key[2])).inc(n)
            for route, _, _, seconds in http:
                durations[route].append(seconds)
            for route, values in durations.items():
                observe_many(self._child(("duration", route), m.http_duration, route), values)
            for (version, predicted), n in collections.Counter(
                    (v, c) for v, c, _ in predictions).items():
                self._child(("predictions", version, predicted), m.predictions, m.model,
                            str(version), str(predicted)).inc(n)
            if predictions:
                observe_many(m.score_child, [score for _, _, score in predictions])
            if classes:
                self._fold_classes(classes)
            if texts:
                grouped: dict[tuple[int, str], tuple[TextProfile | None, list[str | None]]] = {}
                for version, column, profile, text in texts:
                    grouped.setdefault((version, column), (profile, []))[1].append(text)
                for (version, column), (profile, column_texts) in grouped.items():
                    self._observe_texts(version, column, profile, column_texts)

    def _fold_classes(self, classes: list[tuple[int, str, float]]) -> None:
        m = self.metrics
        per_class = collections.Counter((v, c) for v, c, _ in classes)
        for version, n in collections.Counter(v for v, _, _ in classes).items():
            self._child(("predictions", version, MULTICLASS), m.predictions, m.model,
                        str(version), MULTICLASS).inc(n)
        for (version, predicted), n in per_class.items():
            self._child(("class", version, predicted), m.predictions_by_class, m.model,
                        str(version), predicted).inc(n)
        observe_many(m.score_child, [score for _, _, score in classes])

    def _child(self, key: tuple[Any, ...], metric: Any, *labels: str) -> Any:
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


class _FoldBeforeCollect:
    """Registered before the metrics, so every collection of the registry folds first."""

    def __init__(self) -> None:
        self.tally: Tally | None = None

    def describe(self) -> Iterable[Any]:
        return ()

    def collect(self) -> Iterable[Any]:
        if self.tally is not None:
            self.tally.fold()
        return ()


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry, model: str) -> None:
        self.model = model
        self.registry = registry
        self.multiprocess = multiprocess_dir() is not None
        fold_first = _FoldBeforeCollect()
        registry.register(fold_first)
        self._declare_requests(registry)
        self._declare_model(registry)
        self._declare_log(registry)
        self.model_ready.labels(model).set(0)
        self._info: dict[str, tuple[str, str]] = {}
        self._written = 0
        self._dropped = 0
        self._synced: dict[tuple[Any, ...], int] = {}
        self.log_writer_healthy.set(1)  # until a writer says otherwise (or with no log)
        self._sync_lock = threading.Lock()
        # children bound once: the request path does no label lookups
        self.score_child = self.score.labels(model)
        self.shadow_scored_child = self.shadow_scored.labels(model)
        self.shadow_dropped_child = self.shadow_dropped.labels(model)
        self.shadow_agreed_child = self.shadow_agreed.labels(model)
        self.shadow_offered_child = self.shadow_offered.labels(model)
        self.shadow_refused_child = self.shadow_refused.labels(model)
        self.shadow_sample_rate_child = self.shadow_sample_rate.labels(model)
        self.shadow_target_rate_child = self.shadow_target_rate.labels(model)
        for outcome in ("loaded", "unchanged", "rejected", "error"):
            self.reloads.labels(model, outcome)
        self.tally = fold_first.tally = Tally(self, buffered=not self.multiprocess)

    def _declare_requests(self, r: CollectorRegistry) -> None:
        """HTTP, predictions and the inputs they carried."""
        self.http_requests = Counter(
            "driftloop_http_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=r)
        histogram: Any = Histogram if self.multiprocess else BulkHistogram
        self.http_duration = histogram(
            "driftloop_http_request_duration_seconds", "HTTP request duration.", ["route"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter(
            "driftloop_predictions", "Answered predictions by version and predicted class "
            "(1/0; 'multiclass' for a multi-class version, whose classes are counted in "
            "driftloop_predictions_by_class).", ["model", "version", "predicted_class"],
            registry=r)
        self.predictions_by_class = Counter(
            "driftloop_predictions_by_class", "A multi-class version's answered predictions by "
            "predicted class (one of the version's classes).", ["model", "version", "class"],
            registry=r)
        self.score = histogram(
            "driftloop_prediction_score", "Score of answered predictions: the positive-class "
            "probability (binary), the top class's probability (multi-class).",
            ["model"], buckets=SCORE_BUCKETS, registry=r)
        self.text_length = histogram(
            "driftloop_text_length_characters", "Length of each text feature's value in "
            "characters (null as the empty text).", ["model", "version", "column"],
            buckets=TEXT_LENGTH_BUCKETS, registry=r)
        self.text_oov = histogram(
            "driftloop_text_oov_share", "Share of a text's words absent from the version's "
            "training vocabulary (its text profile).", ["model", "version", "column"],
            buckets=OOV_SHARE_BUCKETS, registry=r)
        self.text_ood = Counter(
            "driftloop_text_ood", "Texts out of distribution by the version's text profile "
            "(OOV share above its threshold, or one of its patterns; served).",
            ["model", "version", "column"], registry=r)
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

    def _declare_model(self, r: CollectorRegistry) -> None:
        """The live versions, reloads and shadow scoring."""
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
            "driftloop_shadow_dropped", "Sampled shadow requests dropped because the queue was "
            "still full.", ["model"], registry=r)
        self.shadow_offered = Counter(
            "driftloop_shadow_offered", "Requests answered while a challenger was loaded (the "
            "population shadow samples are drawn from).", ["model"], registry=r)
        self.shadow_refused = Counter(
            "driftloop_shadow_refused", "Shadowed requests the challenger's schema would have "
            "refused (a dropped, added or retyped feature).", ["model"], registry=r)
        self.shadow_sample_rate = Gauge(
            "driftloop_shadow_sample_rate", "Share of offered requests actually queued for "
            "shadow scoring (averaged over the shadow horizon).", ["model"], registry=r,
            multiprocess_mode="livemin")
        self.shadow_target_rate = Gauge(
            "driftloop_shadow_target_rate", "Sample rate (by request-id hash) derived from the "
            "challenger's cost and the offered load.", ["model"], registry=r,
            multiprocess_mode="livemin")
        self.shadow_agreed = Counter(
            "driftloop_shadow_agreed", "Shadow-scored requests where the challenger predicted the "
            "same class as the champion.", ["model"], registry=r)

    def _declare_log(self, r: CollectorRegistry) -> None:
        """The prediction log writer: written, failed, lost, spooled."""
        self.log_rows_written = Counter(
            "driftloop_log_rows_written", "Prediction log rows written.", registry=r)
        self.log_rows_dropped = Counter(
            "driftloop_log_rows_dropped", "Prediction log rows dropped (buffer overflow).",
            registry=r)
        self.log_flush_lag = Gauge(
            "driftloop_log_flush_lag_seconds", "Age of the oldest row at the last flush.",
            registry=r, multiprocess_mode="livemax")
        self.log_labels_written = Counter(
            "driftloop_log_labels_written", "Label log rows written.", registry=r)
        self.log_flush_errors = Counter(
            "driftloop_log_flush_errors", "Failed log flushes by reason (no_space, read_only, "
            "permission, io, encode, other); the rows are kept and retried.", ["reason"],
            registry=r)
        self.log_rows_lost = Counter(
            "driftloop_log_rows_lost", "Answered rows (kind prediction or label) that are in "
            "neither the log nor the spool, by reason (buffer_full, unencodable, shutdown, "
            "spool_corrupt).", ["kind", "reason"], registry=r)
        self.log_rows_spooled = Counter(
            "driftloop_log_rows_spooled", "Rows the store could not take at shutdown, written "
            "to the local spool instead.", ["kind"], registry=r)
        self.log_rows_replayed = Counter(
            "driftloop_log_rows_replayed", "Spooled rows written to the store since.", ["kind"],
            registry=r)
        self.log_buffered_rows = Gauge(
            "driftloop_log_buffered_rows", "Rows and labels in memory, not yet written.",
            registry=r, multiprocess_mode="livesum")
        self.log_spool_pending_rows = Gauge(
            "driftloop_log_spool_pending_rows", "Rows and labels waiting in the spool.",
            registry=r, multiprocess_mode="livemax")
        self.log_last_flush_success = Gauge(
            "driftloop_log_last_flush_success_timestamp_seconds", "When a flush last failed "
            "nothing (epoch seconds).", registry=r, multiprocess_mode="livemin")
        self.log_writer_healthy = Gauge(
            "driftloop_log_writer_healthy", "1 when the log writer keeps up (writer.health()).",
            registry=r, multiprocess_mode="livemin")

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
        """Carry the log writer's running totals over as counter increments (the first three;
        :meth:`sync_log_writer` carries them all)."""
        with self._sync_lock:
            if rows_written > self._written:
                self.log_rows_written.inc(rows_written - self._written)
                self._written = rows_written
            if rows_dropped > self._dropped:
                self.log_rows_dropped.inc(rows_dropped - self._dropped)
                self._dropped = rows_dropped
            self.log_flush_lag.set(lag_seconds)

    def sync_log_writer(self, stats: WriterStats, healthy: bool) -> None:
        """Every figure of the log writer: ``sync_log_writer(w.stats, w.health().ok)``."""
        self.sync_log_stats(stats.rows_written, stats.rows_dropped, stats.last_flush_lag_seconds)
        totals: list[tuple[Any, tuple[str, ...], int]] = [
            (self.log_labels_written, (), stats.labels_written),
            (self.log_rows_spooled, ("prediction",), stats.rows_spooled),
            (self.log_rows_spooled, ("label",), stats.labels_spooled),
            (self.log_rows_replayed, ("prediction",), stats.rows_replayed),
            (self.log_rows_replayed, ("label",), stats.labels_replayed)]
        totals += [(self.log_flush_errors, (reason,), n)
                   for reason, n in list(stats.flush_errors_by_reason.items())]
        totals += [(self.log_rows_lost, ("prediction", reason), n)
                   for reason, n in list(stats.rows_lost.items())]
        totals += [(self.log_rows_lost, ("label", reason), n)
                   for reason, n in list(stats.labels_lost.items())]
        with self._sync_lock:
            for metric, labels, total in totals:
                key = (id(metric), *labels)
                done = self._synced.get(key, 0)
                if total > done:
                    (metric.labels(*labels) if labels else metric).inc(total - done)
                    self._synced[key] = total
            self.log_buffered_rows.set(stats.buffered)
            self.log_spool_pending_rows.set(stats.spool_pending_rows)
            if stats.last_flush_ok_at is not None:
                self.log_last_flush_success.set(stats.last_flush_ok_at)
            self.log_writer_healthy.set(1 if healthy else 0)


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The /metrics body: this registry, or every worker's values in multiprocess mode."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
