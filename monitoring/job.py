"""``driftloop drift-check`` as a function: the I/O shell around ``check_frames``.

Resolve the version (champion by default), fetch its bundle into a cache, read the
window of the prediction log for that version only (or a ``--current`` file), judge,
write the verdict JSON and Evidently's HTML report under ``<home>/reports/<model>/``,
log both as a run in the ``driftloop-monitoring`` experiment, POST the verdict to the
controller and push its gauges to a Pushgateway when asked.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel.errors import DataError, DriftloopError, UsageError
from kernel.frames import none_for_missing
from monitoring.settings import MonitoringSettings
from monitoring.verdict import Verdict
from registry import TAG_PREFIX, ModelRegistry
from registry.port import ALIAS_CHAMPION, MONITORING_EXPERIMENT

# pandas, scipy, pyarrow, httpx and prometheus_client are imported where used: the
# report's child process is started first, so evidently's import begins at once.
if TYPE_CHECKING:
    import httpx
    import pandas as pd
    from prometheus_client import CollectorRegistry

    from monitoring.check import Reference
    from monitoring.drift import ReportRenderer
    from registry.bundle import Bundle

log = logging.getLogger(__name__)

PUSH_JOB = "driftloop-drift-check"
STATUSES = ("ok", "drift", "degraded", "estimated_degraded", "insufficient_data")
DRIFT_LEVELS = ("none", "ticket", "retrain")


@dataclass
class CheckOutcome:
    verdict: Verdict
    json_path: Path
    report_path: Path | None
    errors: list[str] = field(default_factory=list)   # publishing steps that failed
    posted: str | None = None                          # the controller's answer to --post-to


class _Progress:
    """Each step's duration, logged at INFO (``DRIFTLOOP_LOG_LEVEL=INFO`` shows them)."""

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def __call__(self, message: str, *args: object) -> None:
        now = time.perf_counter()
        log.info(message + " in %.1f s", *args, now - self._last)
        self._last = now


def resolve_version(registry: ModelRegistry, model: str, version: int | None) -> int:
    if version is not None:
        return registry.get_version(model, version).version
    champion = registry.get_alias(model, ALIAS_CHAMPION)
    if champion is None:
        raise UsageError(f"{model} has no @{ALIAS_CHAMPION}; pass --version or train one "
                         "with `driftloop train --alias champion`")
    return champion.version


def fetch_bundle(registry: ModelRegistry, model: str, version: int, cache: Path) -> Bundle:
    """The version's bundle, downloaded once into ``cache`` (atomically, by rename)."""
    from registry.bundle import Bundle

    target = cache / f"{model}-v{version}"
    bundle = Bundle(target)
    if bundle.is_complete():
        return bundle
    staging = cache / f".{model}-v{version}-{uuid.uuid4().hex[:8]}"
    registry.download(model, version, staging)
    try:
        staging.rename(target)
    except OSError:  # someone else finished first
        shutil.rmtree(staging, ignore_errors=True)
    return Bundle(target)


def read_current_file(path: Path, reference: Reference, *, since: datetime | None,
                      until: datetime | None, now: datetime) -> pd.DataFrame:
    """A CSV/Parquet of production rows; the spec's target, when present, becomes ``label``."""
    import pandas as pd

    from kernel.tables import conform, read_table
    from monitoring.check import LABEL_COLUMN

    spec = reference.spec
    frame = read_table(path)
    if spec.timestamp_column not in frame.columns:
        frame[spec.timestamp_column] = now
    frame = conform(frame, spec, require_target=False, name=str(path))
    ts = frame[spec.timestamp_column]
    keep = pd.Series(True, index=frame.index)
    if since is not None:
        keep &= ts >= pd.Timestamp(since)
    if until is not None:
        keep &= ts < pd.Timestamp(until)
    frame = frame[keep].reset_index(drop=True)
    if LABEL_COLUMN not in frame.columns and spec.target in frame.columns:
        frame[LABEL_COLUMN] = none_for_missing(frame[spec.target])
    return frame


def verdict_registry(verdict: Verdict) -> CollectorRegistry:
    """The verdict as the gauges the contract names (one registry per push)."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    share = Gauge("driftloop_drift_share", "Share of drifted feature columns in the last verdict.",
                  ["model"], registry=registry)
    status = Gauge("driftloop_verdict_status", "1 for the last verdict's status, 0 for others.",
                   ["model", "status"], registry=registry)
    stamp = Gauge("driftloop_verdict_timestamp_seconds", "When the last verdict was made.",
                  ["model"], registry=registry)
    share.labels(verdict.model).set(verdict.drift_share or 0.0)
    for name in STATUSES:
        status.labels(verdict.model, name).set(1 if verdict.status == name else 0)
    stamp.labels(verdict.model).set(verdict.created_at.timestamp())
    if verdict.drift_level is not None:
        level = Gauge("driftloop_verdict_drift_level",
                      "1 for the drift level the last verdict reached (none, ticket, retrain).",
                      ["model", "level"], registry=registry)
        for name in DRIFT_LEVELS:
            level.labels(verdict.model, name).set(1 if verdict.drift_level == name else 0)
    est = verdict.estimated
    if est is not None and est.value is not None:
        Gauge("driftloop_verdict_estimated_metric",
              "The label-free (CBPE) estimate of the last verdict's metric; band in the "
              "verdict JSON.", ["model", "metric"],
              registry=registry).labels(verdict.model, est.metric).set(est.value)
    if verdict.labels_unmatched is not None:
        Gauge("driftloop_drift_labels_unmatched",
              "Labels of the last verdict's window whose request id matches no prediction "
              "(made in the window or DRIFTLOOP_LABEL_MATCH_DAYS before).",
              ["model"], registry=registry).labels(verdict.model).set(verdict.labels_unmatched)
    return registry


def push_gauges(verdict: Verdict, url: str, *, timeout: float = 10.0) -> None:
    from prometheus_client import push_to_gateway

    push_to_gateway(url, job=PUSH_JOB, registry=verdict_registry(verdict),
                    grouping_key={"model": verdict.model}, timeout=timeout)


def post_verdict(verdict: Verdict, url: str, token: str, client: httpx.Client) -> str:
    """POST the verdict to ``<url>/verdicts`` (the controller) with the bearer token; returns
    the controller's answer in one line (status and body)."""
    import httpx

    target = url.rstrip("/") + "/verdicts"
    try:
        response = client.post(target, json=verdict.model_dump(mode="json"),
                               headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise DriftloopError(f"cannot post the verdict to {target}: {exc}") from None
    if response.status_code >= 300:
        raise DriftloopError(f"{target} answered {response.status_code}: {response.text[:200]}")
    return f"{target} answered {response.status_code}: {' '.join(response.text.split())[:200]}"


def _mlflow_metrics(verdict: Verdict) -> dict[str, float]:
    out = {"rows": float(verdict.rows), "labelled_rows": float(verdict.labelled_rows),
           "drifted_columns": float(len(verdict.drifted_columns)),
           "quality_flagged_columns": float(sum(q.flagged for q in verdict.data_quality))}
    if verdict.drift_share is not None:
        out["drift_share"] = verdict.drift_share
    if verdict.labels_unmatched is not None:
        out["labels_unmatched"] = float(verdict.labels_unmatched)
    if verdict.prediction_drift is not None:
        out["prediction_drift_score"] = verdict.prediction_drift.score
    if verdict.performance is not None and verdict.performance.value is not None:
        out[f"realised_{verdict.performance.metric}"] = verdict.performance.value
        out[f"baseline_{verdict.performance.metric}"] = verdict.performance.baseline
    est = verdict.estimated
    if est is not None and est.value is not None:
        out[f"estimated_{est.metric}"] = est.value
        if est.lower is not None and est.upper is not None:
            out[f"estimated_{est.metric}_lower"] = est.lower
            out[f"estimated_{est.metric}_upper"] = est.upper
    for col in verdict.columns:
        out[f"drift_score.{col.column}"] = col.score
    return out


def run_drift_check(settings: MonitoringSettings, registry: ModelRegistry, *, model: str,
                    version: int | None = None, since: datetime | None = None,
                    until: datetime | None = None, current_file: Path | None = None,
                    out_dir: Path | None = None, post_to: str | None = None,
                    report: bool = True, client: httpx.Client | None = None,
                    now: datetime | None = None,
                    renderer: ReportRenderer | None = None) -> CheckOutcome:
    """One verdict, written, logged and published. Publishing failures are collected in
    ``errors`` (the verdict is on disk by then); the caller decides the exit code.

    ``renderer``: a ``monitoring.drift.ReportRenderer`` the caller started earlier (say
    before opening the registry, which imports MLflow), so evidently's import in the
    child starts sooner; used only when ``report`` is true, closed here either way."""
    now = now or settings.clock().now()
    token = settings.controller_token.get_secret_value() if settings.controller_token else None
    if post_to and not token:
        raise UsageError("--post-to needs DRIFTLOOP_CONTROLLER_TOKEN (the controller's token)")
    if settings.drift_engine != "exact" and current_file is None:
        report = False  # the summary engine never holds the rows a report samples
    if renderer is not None and not report:
        renderer.close()
        renderer = None
    if report and renderer is None:
        from monitoring.drift import ReportRenderer

        # A child process imports evidently on the other core while this one reads and
        # checks the window; it renders the report as soon as the window is read.
        renderer = ReportRenderer()
    progress = _Progress()
    from monitoring.check import SCORE_COLUMN, Reference, check_frames

    try:
        number = resolve_version(registry, model, version)
        bundle = fetch_bundle(registry, model, number, settings.home_dir / "cache" / "bundles")
        reference = Reference.from_bundle(bundle)
        progress("%s v%s: reference loaded", model, number)
        if until is None:
            until = now
        if since is None and current_file is None:
            since = until - timedelta(hours=settings.window_hours)
        if settings.drift_engine != "exact" and current_file is None:
            verdict = _summary_verdict(settings, reference, model, number, since, until, now)
            progress("verdict %s from summaries (%s)", verdict.status, settings.drift_engine)
            directory = out_dir or settings.reports_dir / model
            stem = f"verdict-{model}-v{number}-{now.strftime('%Y%m%dT%H%M%SZ')}"
            report_path: Path | None = None
            directory.mkdir(parents=True, exist_ok=True)
        else:
            if current_file is not None:
                current = read_current_file(current_file, reference, since=since, until=until,
                                            now=now)
                source = str(current_file)
                if SCORE_COLUMN not in current.columns and len(current):
                    score_file(current, reference, registry.load_model(bundle.root))
            else:
                current = _read_window(settings, reference, model, number, since, until)
                source = "prediction_log"
            progress("read %d rows from %s", len(current), current_file or "the prediction log")
            unmatched: int | None = None
            if current_file is None:
                assert since is not None
                unmatched = _count_unmatched(settings, model, since, until)
                progress("counted %d labels that match no prediction", unmatched)
            if current_file is None and not len(current):
                log.warning("no logged predictions for %s v%s in [%s, %s)", model, number, since,
                            until)
            directory = out_dir or settings.reports_dir / model
            stem = f"verdict-{model}-v{number}-{now.strftime('%Y%m%dT%H%M%SZ')}"
            report_file = directory / f"{stem}.html"
            report_path = None  # set once the report is written
            sampled, submitted = None, False
            if renderer is not None and len(current) >= reference.spec.drift.min_rows:
                try:  # the report needs only the frames: render it while the verdict is made
                    sampled = _submit_report(renderer, reference, current, report_file,
                                             settings.report_max_rows)
                    submitted = True
                except KeyError:
                    pass  # a missing column: check_frames says which
                progress("sampled %s rows for the report", settings.report_max_rows)
            try:
                verdict = check_frames(reference, current, model=model, version=number,
                                       window_start=since or _first_ts(current, now),
                                       window_end=until, now=now, source=source)
            except KeyError as exc:
                raise DataError(f"current data lacks column {exc}") from None
            verdict = verdict.model_copy(update={"labels_unmatched": unmatched})
            progress("verdict %s", verdict.status)
            directory.mkdir(parents=True, exist_ok=True)
            if renderer is not None and verdict.status != "insufficient_data":
                if not submitted:
                    sampled = _submit_report(renderer, reference, current, report_file,
                                             settings.report_max_rows)
                renderer.wait()
                progress("waited for the report")
                from monitoring.report_page import prepend_verdict

                prepend_verdict(report_file, verdict)  # the verdict first, then Evidently's
                report_path = report_file
                verdict = verdict.model_copy(update={"report_path": str(report_path),
                                                     "report_sampled_rows": sampled})
    finally:
        if renderer is not None:
            renderer.close()
    json_path = directory / f"{stem}.json"
    json_path.write_text(verdict.model_dump_json(indent=2))
    outcome = CheckOutcome(verdict, json_path, report_path)
    _publish(outcome, settings, registry, post_to=post_to, token=token, client=client)
    progress("published")
    return outcome


def score_file(current: pd.DataFrame, reference: Reference, model: Any) -> None:
    """Score a --current file's rows with the version (it has no score column): the
    positive-class probability, or for a multi-class version the top probability, the
    predicted class and every class's probability (in the version's class order)."""
    from kernel.frames import fill_missing_text
    from monitoring.check import PREDICTION_COLUMN, PROBABILITIES_COLUMN, SCORE_COLUMN

    spec = reference.spec
    proba = model.predict_proba(fill_missing_text(current[spec.features.all],
                                                  spec.features.text))
    if reference.classes is None:
        current[SCORE_COLUMN] = proba[:, 1]
        return
    current[SCORE_COLUMN] = proba.max(axis=1)
    current[PREDICTION_COLUMN] = [reference.classes[i] for i in proba.argmax(axis=1)]
    current[PROBABILITIES_COLUMN] = list(proba)


def _read_window(settings: MonitoringSettings, reference: Reference, model: str, version: int,
                 since: datetime | None, until: datetime) -> pd.DataFrame:
    """The version's rows of the window with labels joined, restricted to the columns a
    check reads (features, score, time): the log's other columns are never decoded."""
    import pyarrow as pa

    from monitoring.check import PREDICTION_COLUMN, PROBABILITIES_COLUMN, SCORE_COLUMN
    from monitoring.predlog import open_log
    from monitoring.predlog.reader import LogReadError

    assert since is not None
    features = reference.spec.features
    uri = settings.resolved_log_uri
    try:  # unreadable data is an error (exit 2), never "drift" (exit 1)
        _, reader = open_log(uri)
        return reader.window(model, since, until, version=version,
                             columns=[*features.all, SCORE_COLUMN, *(
                                 [PREDICTION_COLUMN, PROBABILITIES_COLUMN]
                                 if reference.classes is not None else [])],
                             categorical=features.categorical)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise LogReadError(f"cannot read the prediction log at {uri}: {exc}") from None


def _summary_verdict(settings: MonitoringSettings, reference: Reference, model: str,
                     version: int, since: datetime | None, until: datetime,
                     now: datetime) -> Verdict:
    """DRIFTLOOP_DRIFT_ENGINE=summary or spark: the window as merged partition summaries
    (monitoring/summary/engine.py, spark.py), stored summaries reused."""
    import pyarrow as pa

    from monitoring.predlog.reader import LogReadError
    from monitoring.summary.engine import summary_check

    assert since is not None
    spec = reference.spec
    if spec.features.text or spec.is_multiclass:
        raise UsageError(f"DRIFTLOOP_DRIFT_ENGINE={settings.drift_engine} checks binary "
                         "tabular models; a spec with text features or classes: needs "
                         "DRIFTLOOP_DRIFT_ENGINE=exact")
    asked = [name for name in ("segments", "calibrated_thresholds", "prediction_drift")
             if getattr(spec.drift, name) is not None]
    if asked:
        raise UsageError(f"DRIFTLOOP_DRIFT_ENGINE={settings.drift_engine} does not take "
                         f"{', '.join('drift.' + a for a in asked)}; use "
                         "DRIFTLOOP_DRIFT_ENGINE=exact")
    uri = settings.resolved_log_uri
    try:
        verdict = summary_check(uri, reference, model=model, version=version, since=since,
                                until=until, now=now, memory_mib=settings.summary_memory_mib,
                                engine_name=settings.drift_engine)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise LogReadError(f"cannot read the prediction log at {uri}: {exc}") from None
    unmatched = _count_unmatched(settings, model, since, until)
    return verdict.model_copy(update={"labels_unmatched": unmatched})


def _count_unmatched(settings: MonitoringSettings, model: str, since: datetime,
                     until: datetime) -> int:
    """The window's labels whose request id matches no prediction of ``model`` made in the
    window or ``label_match_days`` before it (``PredictionLogReader.unmatched_labels``)."""
    import pyarrow as pa

    from monitoring.predlog import open_log
    from monitoring.predlog.reader import LogReadError

    uri = settings.resolved_log_uri
    try:
        _, reader = open_log(uri)
        return reader.unmatched_labels(model, since, until,
                                       lookback=timedelta(days=settings.label_match_days))
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise LogReadError(f"cannot read the label log at {uri}: {exc}") from None


def _submit_report(renderer: ReportRenderer, reference: Reference, current: pd.DataFrame,
                   path: Path, max_rows: int) -> int | None:
    from monitoring.check import SCORE_COLUMN

    spec = reference.spec
    per_column = spec.drift.per_column
    return renderer.submit(
        reference.features, current, path, numerical=spec.features.numerical,
        categorical=spec.features.categorical, drift_share=spec.drift.drift_share,
        per_column_method={c: o.method for c, o in per_column.items() if o.method},
        per_column_threshold={c: o.threshold for c, o in per_column.items()
                              if o.threshold is not None},
        reference_scores=reference.validation_scores,
        current_scores=(current[SCORE_COLUMN].to_numpy(dtype=float)
                        if SCORE_COLUMN in current else None),
        max_rows=max_rows)


def _first_ts(frame: pd.DataFrame, now: datetime) -> datetime:
    import pandas as pd

    if "ts" in frame.columns and len(frame):
        return pd.Timestamp(frame["ts"].min()).to_pydatetime(warn=False)
    return now


def _publish(outcome: CheckOutcome, settings: MonitoringSettings, registry: ModelRegistry, *,
             post_to: str | None, token: str | None, client: httpx.Client | None) -> None:
    import httpx
    import numpy as np

    verdict = outcome.verdict
    files = [outcome.json_path] + ([outcome.report_path] if outcome.report_path else [])
    try:
        run_id = registry.log_run(
            MONITORING_EXPERIMENT, f"drift-check {verdict.model} v{verdict.version}",
            params={"window_start": verdict.window_start.isoformat(),
                    "window_end": verdict.window_end.isoformat(), "source": verdict.source,
                    "drift_share_threshold": verdict.drift_share_threshold},
            metrics={k: v for k, v in _mlflow_metrics(verdict).items() if np.isfinite(v)},
            tags={TAG_PREFIX + "model": verdict.model, TAG_PREFIX + "version": str(verdict.version),
                  TAG_PREFIX + "status": verdict.status, TAG_PREFIX + "kind": "drift-check"},
            files=files)
        outcome.verdict = verdict = verdict.model_copy(update={"run_id": run_id})
        outcome.json_path.write_text(verdict.model_dump_json(indent=2))
    except DriftloopError as exc:
        outcome.errors.append(f"logging the verdict to MLflow failed: {exc}")
    if post_to:
        own = client is None
        http = client or httpx.Client(timeout=settings.http_timeout)
        try:
            outcome.posted = post_verdict(verdict, post_to, token or "", http)
        except DriftloopError as exc:
            outcome.errors.append(str(exc))
        finally:
            if own:
                http.close()
    if settings.pushgateway_url:
        try:
            push_gauges(verdict, settings.pushgateway_url, timeout=settings.http_timeout)
        except OSError as exc:
            outcome.errors.append(f"push to {settings.pushgateway_url} failed: {exc}")
