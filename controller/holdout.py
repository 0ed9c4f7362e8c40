"""The static holdout (the spec's ``holdout:``; docs/controller.md, "Static holdout").

A fixed, fully labelled file the champion re-scores every ``every_hours`` on the controller's
clock, and once after each promotion (the champion version changed since its last score). A
drop there is unambiguous: same rows, same labels, only the model changed. Each score:

- ``score_holdout`` (pure): the file's rows typed by the version's spec, labels decoded by the
  spec's one decoder (kernel/labels.py), the spec's metric (kernel/metrics.py) of the
  version's probabilities;
- recorded where the audit trail lives, the registry: tags on the version
  (``driftloop.holdout_<metric>``, ``..._rows``, ``..._hash``, ``..._scored_at``: the
  throttle survives a restart) and a run in the ``driftloop-monitoring`` experiment;
- exported as ``driftloop_holdout_metric{model,version}`` (the champion and the version it
  is compared with);
- compared with the previous champion's (``@previous``) holdout metric on the same file (it
  is scored too when its tags are of another file): worse by more than ``tolerance``
  (default ``drift.performance_tolerance``) does what ``action`` says, once per champion
  version: ``retrain`` (a trigger of source ``holdout``), ``ticket`` (recorded, never acted
  on), ``none`` (logged).

A holdout that cannot be read or scored is logged and counted
(``driftloop_holdout_errors_total``), never a failure of the reconcile pass.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge

from controller.evidence import ModelCache, version_classes
from controller.metrics import ControllerMetrics
from controller.store import Store
from kernel.errors import DataError, RetryableError
from kernel.frames import fill_missing_text
from kernel.metrics import metric_value, multiclass_value
from kernel.spec import DatasetSpec
from kernel.tables import conform, read_table
from monitoring.check import worse_by
from registry import ALIAS_CHAMPION, ALIAS_PREVIOUS, TAG_PREFIX, ModelRegistry
from registry.port import MONITORING_EXPERIMENT

log = logging.getLogger(__name__)

SOURCE = "holdout"   # the source of the triggers a degraded holdout adds


@dataclass(frozen=True)
class HoldoutScore:
    version: int
    metric: str
    value: float
    rows: int
    digest: str      # the holdout file's content hash: scores of other files are not compared


def file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise DataError(f"holdout {path}: cannot read: {exc.strerror or exc}") from None


def score_holdout(frame: pd.DataFrame, spec: DatasetSpec, version_spec: DatasetSpec,
                  model: Any, classes: list[str] | None) -> tuple[float, int]:
    """The spec's metric of ``model`` (a version trained on ``version_spec``'s features; a
    multi-class one's ``classes`` in its predict_proba order) on the holdout rows, and their
    count. A missing column, a missing or undefined label is a DataError naming it."""
    if spec.target not in frame.columns:
        raise DataError(f"missing target column {spec.target!r}")
    if frame[spec.target].isna().any():
        raise DataError(f"target {spec.target!r} has {int(frame[spec.target].isna().sum())} "
                        "missing values (a holdout is fully labelled)")
    timeless = frame.assign(**{version_spec.timestamp_column: pd.Timestamp(0, tz="UTC")})
    rows = conform(timeless, version_spec, require_target=False, name="holdout")
    features = version_spec.features
    proba = np.asarray(model.predict_proba(fill_missing_text(rows[features.all], features.text)),
                       dtype=float)
    if spec.is_multiclass:
        if classes is None:
            raise DataError("a multi-class holdout needs the version's classes")
        y = spec.class_codec(classes).decode_many(frame[spec.target])
        value = multiclass_value(spec.metric, y, proba)
    else:
        y = spec.labels.decode_many(frame[spec.target])
        value = metric_value(spec.metric, y, proba[:, 1])
    if not np.isfinite(value):
        raise DataError(f"{spec.metric} is undefined on the {len(frame)} holdout rows "
                        "(one class only?)")
    return float(value), len(frame)


_INSTRUMENTS: weakref.WeakKeyDictionary[CollectorRegistry, tuple[Gauge, Counter]] = \
    weakref.WeakKeyDictionary()


def instruments(registry: CollectorRegistry) -> tuple[Gauge, Counter]:
    """The holdout's gauge and error counter on ``registry`` (made once per registry)."""
    if registry not in _INSTRUMENTS:
        _INSTRUMENTS[registry] = (
            Gauge("driftloop_holdout_metric", "The spec's metric of a version on the static "
                  "holdout (the champion and the previous champion it is compared with).",
                  ["model", "version"], registry=registry),
            Counter("driftloop_holdout_errors_total", "Holdout scores that failed (file "
                    "unreadable, columns or labels that do not fit, model failing).",
                    ["model"], registry=registry))
    return _INSTRUMENTS[registry]


class HoldoutMonitor:
    """Scores each model's holdout with its champion when due; records, exports, compares
    and acts (module doc)."""

    def __init__(self, *, store: Store, registry: ModelRegistry,
                 cache: Callable[[], ModelCache], metrics: ControllerMetrics) -> None:
        self.store = store
        self.registry = registry
        self.cache = cache   # asked when a holdout is scored (the evaluator's bundles and models)
        self.metrics = metrics
        self._last: dict[str, tuple[int, datetime]] = {}   # model -> (champion, last look)
        self._exported: dict[str, set[str]] = {}

    @property
    def gauge(self) -> Gauge:
        return instruments(self.metrics.registry)[0]

    @property
    def errors(self) -> Counter:
        return instruments(self.metrics.registry)[1]

    def check(self, model: str, spec: DatasetSpec, now: datetime) -> int:
        """Score the holdout if due; the number of failures (0 or 1: logged and counted)."""
        settings = spec.holdout
        if settings is None:
            return 0
        self.errors.labels(model=model)  # exported at 0, so the first failure is an increase
        try:
            champion = self.registry.aliases(model).get(ALIAS_CHAMPION)
            if champion is None or not self._due(model, champion, settings.every_hours, now):
                return 0
            self._last[model] = (champion, now)
            self.score(model, spec, champion, now)
        except RetryableError as exc:
            self._last.pop(model, None)  # the next pass tries again
            log.warning("%s: holdout not scored, retrying later: %s", model, exc)
        except DataError as exc:
            self.errors.labels(model=model).inc()
            log.error("%s: holdout not scored: %s", model, exc)
            return 1
        except Exception:
            self.errors.labels(model=model).inc()
            log.exception("%s: holdout not scored", model)
            return 1
        return 0

    def _due(self, model: str, champion: int, every_hours: float, now: datetime) -> bool:
        last = self._last.get(model)
        if last is None:  # after a start: the champion's own tag says when it was scored
            stamp = self.registry.get_version(model, champion).tags.get(
                TAG_PREFIX + "holdout_scored_at")
            last = (champion, datetime.fromisoformat(stamp)) if stamp else None
        if last is None or last[0] != champion:
            return True
        elapsed = now - last[1]
        return elapsed >= timedelta(hours=every_hours) or elapsed < timedelta(0)

    def score(self, model: str, spec: DatasetSpec, champion: int,
              now: datetime) -> HoldoutScore:
        """Score, record, export and compare the champion's holdout now."""
        path = spec.holdout_path()
        assert path is not None and spec.holdout is not None
        digest = file_digest(path)
        frame = read_table(path)
        mine = self._score(model, spec, champion, frame, digest, now)
        previous = self.registry.aliases(model).get(ALIAS_PREVIOUS)
        if previous is not None and previous != champion:
            theirs = self._recorded(model, spec, previous, digest)
            if theirs is None:
                theirs = self._score(model, spec, previous, frame, digest, now)
            self._compare(model, spec, mine, theirs, now)
        self._keep(model, {str(champion), *([str(previous)] if previous else [])})
        return mine

    def _score(self, model: str, spec: DatasetSpec, version: int, frame: pd.DataFrame,
               digest: str, now: datetime) -> HoldoutScore:
        cache = self.cache()
        bundle = cache.bundle(model, version)
        fitted = cache.model(model, version)
        classes = version_classes(bundle, fitted) if spec.is_multiclass else None
        try:
            value, rows = score_holdout(frame, spec, bundle.spec, fitted, classes)
        except DataError as exc:
            raise DataError(f"holdout {spec.holdout_path()} (v{version}): {exc}") from None
        score = HoldoutScore(version, spec.metric, value, rows, digest)
        tag = TAG_PREFIX + "holdout_"
        self.registry.set_tags(model, version, {
            tag + spec.metric: f"{value:.6f}", tag + "rows": str(rows), tag + "hash": digest,
            tag + "scored_at": now.isoformat()})
        self.registry.log_run(
            MONITORING_EXPERIMENT, f"holdout {model} v{version}",
            params={"holdout": str(spec.holdout_path()), "rows": rows, "version": version,
                    "hash": digest, "metric": spec.metric},
            metrics={f"holdout_{spec.metric}": value},
            tags={TAG_PREFIX + "model": model, TAG_PREFIX + "kind": "holdout",
                  TAG_PREFIX + "version": str(version)})
        self.gauge.labels(model=model, version=str(version)).set(value)
        log.info("%s v%s: holdout %s %.4f on %d rows", model, version, spec.metric, value, rows)
        return score

    def _recorded(self, model: str, spec: DatasetSpec, version: int,
                  digest: str) -> HoldoutScore | None:
        """A version's holdout score from its tags, when it is of this file and metric."""
        tags = self.registry.get_version(model, version).tags
        tag = TAG_PREFIX + "holdout_"
        value = tags.get(tag + spec.metric)
        if value is None or tags.get(tag + "hash") != digest:
            return None
        score = HoldoutScore(version, spec.metric, float(value), int(tags.get(tag + "rows", 0)),
                             digest)
        self.gauge.labels(model=model, version=str(version)).set(score.value)
        return score

    def _compare(self, model: str, spec: DatasetSpec, mine: HoldoutScore,
                 theirs: HoldoutScore, now: datetime) -> None:
        """Worse than the previous champion by more than the tolerance: the action, once
        per champion version (the trigger's dedup key)."""
        assert spec.holdout is not None
        settings = spec.holdout
        tolerance = settings.tolerance if settings.tolerance is not None \
            else spec.drift.performance_tolerance
        drop = worse_by(mine.value, theirs.value, lower_is_better=spec.lower_is_better)
        if drop <= tolerance:
            return
        reason = (f"holdout {spec.metric} of champion v{mine.version} {mine.value:.4f} is "
                  f"worse than previous champion v{theirs.version}'s {theirs.value:.4f} by "
                  f"{drop:.4f} (> tolerance {tolerance:g}) on {mine.rows} rows: "
                  f"{settings.action}")
        key = f"{SOURCE}:{model}:{mine.version}"
        if settings.action == "none":
            log.warning("%s: %s", model, reason)
            return
        added = self.store.add_trigger(
            model=model, source=SOURCE, action=settings.action, reason=reason, now=now,
            dedup_key=key, version=mine.version, value=mine.value,
            status="pending" if settings.action == "retrain" else "ignored")
        if added is not None:
            log.warning("%s: %s", model, reason)
            if settings.action == "ticket":
                self.metrics.triggers.labels(source=SOURCE, outcome="ticket").inc()

    def _keep(self, model: str, versions: set[str]) -> None:
        """Export only the versions compared now (label values stay bounded)."""
        for old in self._exported.get(model, set()) - versions:
            self.gauge.remove(model, old)
        self._exported[model] = versions
