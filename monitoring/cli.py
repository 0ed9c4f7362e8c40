"""``driftloop drift-check``."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kernel.cliutil import echo, parse_time

if TYPE_CHECKING:
    from datetime import datetime

    from monitoring.settings import MonitoringSettings
    from registry import ModelRegistry


def register(app: typer.Typer) -> None:
    app.command("drift-check")(drift_check)


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
    echo(f"{verdict.model} v{verdict.version}: {verdict.status} ({verdict.rows} rows, "
         f"{verdict.labelled_rows} labelled, drift share {share})")
    for reason in verdict.reasons:
        echo(f"  - {reason}")
    echo(f"verdict: {outcome.json_path}")
    if outcome.report_path:
        sampled = (f" (sampled to {verdict.report_sampled_rows} rows)"
                   if verdict.report_sampled_rows else "")
        echo(f"report:  {outcome.report_path}{sampled}")
    if verdict.run_id:
        echo(f"mlflow run: {verdict.run_id}")
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
