"""``driftloop drift-check`` and ``driftloop log compact|expire``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from kernel.cliutil import echo, parse_time

if TYPE_CHECKING:
    from datetime import datetime

    from monitoring.settings import MonitoringSettings
    from registry import ModelRegistry

T = TypeVar("T")


def register(app: typer.Typer) -> None:
    app.command("drift-check")(drift_check)
    log_app = typer.Typer(help="Maintain the prediction and label log: compact flush files, "
                          "expire old partitions.", no_args_is_help=True)
    log_app.command("compact")(log_compact)
    log_app.command("expire")(log_expire)
    app.add_typer(log_app, name="log")


def _duration(value: str, *, option: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``2h`` or ``1d``."""
    from kernel.errors import UsageError

    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    text = value.strip().lower()
    scale = units.get(text[-1:])
    number = text[:-1] if scale else text
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise UsageError(f"{option}: not a duration such as 90s, 10m, 2h or 1d: {value!r}") from None
    if seconds < 0:
        raise UsageError(f"{option}: must not be negative")
    return seconds


def log_compact(
    model: Annotated[str | None, typer.Option(help="Only this model's partitions (default: "
                                              "every model and the legacy label partitions).")]
    = None,
    older_than: Annotated[str | None, typer.Option(
        help="Merge only flush files written longer ago than this (90s, 10m, 2h, 1d; default "
        "$DRIFTLOOP_LOG_COMPACT_AFTER_SECONDS, 600 s).")] = None,
) -> None:
    """Merge each partition's small flush files into one file per hour, safely while
    writers write and readers read. Exit 0 done, 1 some partitions failed, 2 error."""
    from datetime import timedelta

    from monitoring.predlog.compact import Compactor
    from monitoring.predlog.store import LogStore
    from monitoring.settings import MonitoringSettings

    settings = MonitoringSettings()
    seconds = (settings.log_compact_after_seconds if older_than is None
               else _duration(older_than, option="--older-than"))
    store = _open_store(settings.resolved_log_uri, LogStore)
    report = _run_on_store(lambda: Compactor(store, older_than=timedelta(seconds=seconds),
                                             progress=echo).run(model=model), store.uri)
    echo(f"compacted {report.files_in} files into {report.files_out} "
         f"({report.bytes_in / 2**20:.1f} -> {report.bytes_out / 2**20:.1f} MiB, "
         f"{report.rows} rows); finished {report.finished} left by an earlier run; "
         f"{report.unreadable} unreadable left in place")
    for error in report.errors:
        echo(f"  - failed: {error}")
    raise typer.Exit(1 if report.errors else 0)


def log_expire(
    days: Annotated[int | None, typer.Option(min=1, help="Delete partitions dated more than N "
                                             "days ago (default $DRIFTLOOP_LOG_RETENTION_DAYS).")]
    = None,
    model: Annotated[str | None, typer.Option(help="Only this model's partitions.")] = None,
    dry_run: Annotated[bool, typer.Option(help="List what would go; delete nothing.")] = False,
) -> None:
    """Delete log partitions (predictions and labels) older than the retention. Exit 0 done,
    2 error (no retention set, log unreachable)."""
    from kernel.errors import UsageError
    from monitoring.predlog.compact import expire
    from monitoring.predlog.store import LogStore
    from monitoring.settings import MonitoringSettings

    settings = MonitoringSettings()
    keep = days if days is not None else settings.log_retention_days
    if keep is None:
        raise UsageError("no retention: pass --days or set DRIFTLOOP_LOG_RETENTION_DAYS")
    store = _open_store(settings.resolved_log_uri, LogStore)
    report = _run_on_store(lambda: expire(store, days=keep, model=model, dry_run=dry_run,
                                          progress=echo), store.uri)
    echo(f"{'would delete' if dry_run else 'deleted'} {len(report.partitions)} partitions "
         f"older than {keep} days")


def _open_store(uri: str, factory: Callable[[str], T]) -> T:
    from kernel.errors import DriftloopError

    try:
        return factory(uri)
    except (OSError, ValueError) as exc:
        raise DriftloopError(f"cannot open the log at {uri}: {exc}") from None


def _run_on_store(work: Callable[[], T], uri: str) -> T:
    import pyarrow as pa

    from kernel.errors import DriftloopError

    try:
        return work()
    except (OSError, pa.ArrowException) as exc:
        raise DriftloopError(f"log at {uri}: {exc}") from None


def drift_check(
    model: Annotated[str | None, typer.Option(help="Registered model (default $DRIFTLOOP_MODEL).")]
    = None,
    version: Annotated[int | None, typer.Option(help="Version to check (default: @champion).")]
    = None,
    since: Annotated[str | None, typer.Option(help="Window start, ISO 8601 (default: 24 h "
                                              "before --until).")] = None,
    until: Annotated[str | None, typer.Option(help="Window end, ISO 8601 (default: now).")] = None,
    current: Annotated[Path | None, typer.Option(help="Check this CSV/Parquet of production rows "
                                                 "instead of the prediction log (the spec's "
                                                 "target column, if present, gives labels).")]
    = None,
    post_to: Annotated[str | None, typer.Option(help="Controller base URL: POST the verdict to "
                                                "URL/verdicts with $DRIFTLOOP_CONTROLLER_TOKEN.")]
    = None,
    out: Annotated[Path | None, typer.Option(help="Directory for the verdict JSON and HTML report "
                                             "(default <home>/reports/<model>).")] = None,
    report: Annotated[bool, typer.Option(help="Render Evidently's HTML report.")] = True,
) -> None:
    """One drift and realised-performance verdict for a model version over a window.

    Exit 0 ok (or insufficient data), 1 drift or degraded, 2 error."""
    from monitoring.drift import ReportRenderer

    # The report's child process starts first: its evidently import is the longest step,
    # and it runs on the other core while this process opens the registry (MLflow) and
    # reads the window.
    renderer = ReportRenderer() if report else None
    try:
        settings, registry, name, window_since, window_until = _prepare(model, since, until,
                                                                         current)
    except BaseException:
        if renderer is not None:
            renderer.close()
        raise
    from kernel.errors import DriftloopError
    from monitoring.job import run_drift_check

    outcome = run_drift_check(settings, registry, model=name, version=version,
                              since=window_since, until=window_until, current_file=current,
                              out_dir=out, post_to=post_to, report=report, renderer=renderer)
    verdict = outcome.verdict
    share = "n/a" if verdict.drift_share is None else f"{verdict.drift_share:.2f}"
    unmatched = (f", {verdict.labels_unmatched} labels match no prediction"
                 if verdict.labels_unmatched else "")
    echo(f"{verdict.model} v{verdict.version}: {verdict.status} ({verdict.rows} rows, "
         f"{verdict.labelled_rows} labelled, drift share {share}{unmatched})")
    for reason in verdict.reasons:
        echo(f"  - {reason}")
    echo(f"verdict: {outcome.json_path}")
    if outcome.report_path:
        sampled = (f" (at most {verdict.report_sampled_rows} rows per side: the larger side "
                   "was sampled)"
                   if verdict.report_sampled_rows else "")
        echo(f"report:  {outcome.report_path}{sampled}")
    if verdict.run_id:
        echo(f"mlflow run: {verdict.run_id}")
    if outcome.posted:
        echo(f"posted:  {outcome.posted}")
    if outcome.errors:
        raise DriftloopError("; ".join(outcome.errors))
    raise typer.Exit(verdict.exit_code)


def _prepare(model: str | None, since: str | None, until: str | None, current: Path | None,
             ) -> tuple[MonitoringSettings, ModelRegistry, str, datetime | None, datetime | None]:
    """Settings, the opened registry, the model name and the parsed window; usage errors
    first."""
    from kernel.errors import UsageError
    from kernel.imports import gc_paused
    from monitoring.settings import MonitoringSettings

    settings = MonitoringSettings()
    name = model or settings.model
    if not name:
        raise UsageError("--model (or DRIFTLOOP_MODEL) is required")
    window_since = parse_time(since, option="--since")
    window_until = parse_time(until, option="--until")
    if window_since and window_until and window_since >= window_until:
        raise UsageError("--since must be before --until")
    if current is not None and not current.is_file():
        raise UsageError(f"--current: no such file {current}")
    started = time.perf_counter()
    with gc_paused():  # importing MLflow and the check's modules (kernel/imports.py)
        import monitoring.check
        import monitoring.predlog  # noqa: F401
        from registry import open_registry

        registry = open_registry(settings)
    logging.getLogger(__name__).info("opened the registry in %.1f s",
                                     time.perf_counter() - started)
    return settings, registry, name, window_since, window_until
