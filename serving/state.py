"""What one serving app holds while it runs: settings, metrics, the registry, the log
writer, the model follower and the shadow logger. Started and stopped by the app's lifespan;
the routes reach it through serving/deps.py."""

from __future__ import annotations

import gc
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry

from kernel.clock import Clock
from monitoring.predlog import LogStore, PredictionLogWriter
from registry.port import ModelRegistry
from serving.follower import ModelFollower
from serving.metrics import ServingMetrics, multiprocess_dir
from serving.model import BundleCache, LoadedModel
from serving.schema import Observation
from serving.settings import ServingSettings
from serving.shadow import ShadowLogger

log = logging.getLogger(__name__)


@dataclass
class ServingState:
    settings: ServingSettings
    metrics: ServingMetrics | None
    metrics_registry: CollectorRegistry
    registry: ModelRegistry | None = None   # injected, or opened at start
    writer: PredictionLogWriter | None = None   # injected (not started), or built at start
    follower: ModelFollower | None = None
    shadow: ShadowLogger | None = None
    _stop_sync: threading.Event = field(default_factory=threading.Event)
    clock: Clock = field(init=False)  # what log rows and labels are stamped with

    def __post_init__(self) -> None:
        self.clock = self.settings.clock()

    @property
    def champion(self) -> LoadedModel | None:
        return self.follower.champion if self.follower else None

    @property
    def not_ready_reason(self) -> str:
        return (self.follower.last_error if self.follower else None) or "starting"

    def log_unready_reason(self) -> str | None:
        """Why readiness fails for the log (``log_failure_mode=unready`` and an unhealthy
        writer), else None: with ``serve`` the app keeps answering while rows are kept."""
        if self.writer is None or self.settings.log_failure_mode != "unready":
            return None
        health = self.writer.health()
        return None if health.ok else f"prediction log: {health.reason}"

    async def start(self) -> None:
        """Open the registry and the log, load the champion once, start the threads."""
        settings, name = self.settings, self.settings.model or ""
        if self.registry is None:
            from registry import open_registry

            self.registry = await run_in_threadpool(open_registry, settings)
        if self.writer is not None:
            self.writer = self.writer.start()
        elif settings.serving_log:
            self.writer = PredictionLogWriter(
                LogStore(settings.resolved_log_uri), flush_interval=settings.log_flush_interval,
                sample_rate=settings.log_sample_rate, max_buffer=settings.log_max_buffer,
                spool_dir=settings.spool_dir, stall_after=settings.log_stall_seconds).start()
        self.shadow = ShadowLogger(self.writer.append if self.writer else None, self.metrics,
                                   queue_size=settings.serving_shadow_queue,
                                   cpu_share=settings.serving_shadow_cpu_share,
                                   adaptive=settings.serving_shadow_adaptive).start()
        self.follower = ModelFollower(
            name, self.registry, BundleCache(settings.cache_dir, name,
                                             settings.serving_cache_versions),
            metrics=self.metrics, shadow=settings.serving_shadow,
            on_load=self.writer.register_spec if self.writer is not None else None,
            check_rows=settings.serving_check_rows, fast_path=settings.serving_fast_path,
            max_text_chars=settings.serving_max_text_chars,
            poll_interval=settings.serving_poll_interval,
            retry_interval=settings.serving_retry_interval)
        first = await run_in_threadpool(self.follower.refresh)
        log.info("startup: %s (%s)", first.outcome, first.detail)
        # What start-up made (imports, the models) lives as long as the process: moved out
        # of the collector's generations, full collections stop re-scanning it. Answered
        # rows waiting for the log's next flush trigger those; unfrozen, each took tens to
        # hundreds of milliseconds, the worst of monitoring's p99 (docs/bench/serving.md).
        gc.freeze()
        self.follower.start()
        threading.Thread(target=self._sync_loop, name="log-metrics", daemon=True).start()

    async def stop(self) -> None:
        """Stop polling, drain the shadow queue, close the log, bring the metrics up to date."""
        if self.follower is not None:
            self.follower.stop()
        if self.shadow is not None:
            self.shadow.close()
        if self.writer is not None:
            await run_in_threadpool(self.writer.close)
        self._stop_sync.set()
        self.sync_log_metrics()
        if multiprocess_dir() is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())
        if self.writer is None:
            log.info("stopped: the prediction log is off")
        else:
            summary = self.writer.summary()
            s = self.writer.stats
            lost = sum(s.rows_lost.values()) + sum(s.labels_lost.values())
            (log.warning if lost or s.rows_spooled or s.labels_spooled else log.info)(
                "stopped: %s", summary)

    def sync_log_metrics(self) -> None:
        """Bring the metrics up to date: the request tally, the log writer's totals."""
        if self.metrics:
            self.metrics.tally.fold()
        if self.metrics and self.writer:
            self.metrics.sync_log_writer(self.writer.stats, self.writer.health().ok)

    def _sync_loop(self) -> None:
        while not self._stop_sync.wait(1.0):
            try:
                self.sync_log_metrics()
            except Exception:  # never let the metrics thread die: the next second retries
                log.exception("updating the metrics failed")

    def count_prediction(self, model: LoadedModel, score: float, prediction: int,
                         seen: Observation) -> None:
        m = self.metrics
        if m is None:
            return
        m.tally.prediction(model.version, prediction, score)
        if seen.unseen or seen.out_of_range or seen.missing:
            self._count_seen(model, seen)

    def count_class(self, model: LoadedModel, score: float, predicted: str,
                    seen: Observation) -> None:
        """A multi-class version's prediction: its class and top probability."""
        m = self.metrics
        if m is None:
            return
        m.tally.classified(model.version, predicted, score)
        if seen.unseen or seen.out_of_range or seen.missing:
            self._count_seen(model, seen)

    def count_texts(self, model: LoadedModel, record: dict[str, Any]) -> None:
        """Each text feature of ``record``: observed when the tally folds (length, and by
        the version's profile the OOV share and OOD)."""
        m = self.metrics
        if m is None:
            return
        profiles = model.text_profiles
        for column in model.schema.text:
            m.tally.text(model.version, column, profiles.get(column), record[column])

    def _count_seen(self, model: LoadedModel, seen: Observation) -> None:
        m = self.metrics
        if m is not None:
            for feature in seen.unseen:
                m.unseen_category.labels(model.name, feature).inc()
            for feature in seen.out_of_range:
                m.out_of_range.labels(model.name, feature).inc()
            for feature in seen.missing:
                m.missing_values.labels(model.name, feature).inc()

    def count_refusal(self, route: str) -> None:
        """Count a request refused for its content (a 4xx naming what is wrong)."""
        if self.metrics is not None:
            self.metrics.validation_errors.labels(route).inc()
