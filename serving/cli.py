"""``driftloop serve``: the monitored serving app under uvicorn."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kernel.cliutil import check_port_free, echo

if TYPE_CHECKING:
    from serving.settings import ServingSettings


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def prepare_multiprocess_dir(path: Path) -> Path:
    """Empty (or create) the PROMETHEUS_MULTIPROC_DIR: stale files from a previous run
    would be added to this run's counters."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _warn_without_champion(settings: ServingSettings) -> None:
    """Serving waits for its model (a service may start before the first training), but says
    at once, on stderr, why /readyz will answer 503 until then."""
    from registry import ALIAS_CHAMPION, open_registry

    try:
        aliases = open_registry(settings).aliases(settings.model or "")
    except Exception as exc:
        typer.echo(f"warning: registry unreachable: {' '.join(str(exc).split())}; serving "
                   f"retries every {settings.serving_retry_interval:g} s", err=True)
        return
    if ALIAS_CHAMPION not in aliases:
        typer.echo(f"warning: no model {settings.model}@{ALIAS_CHAMPION} in the registry yet: "
                   f"/readyz answers 503 until one exists (train one with `driftloop train "
                   f"--alias {ALIAS_CHAMPION}`); serving retries every "
                   f"{settings.serving_retry_interval:g} s", err=True)


def serve(
    model: Annotated[str | None, typer.Option(help="Registered model name (DRIFTLOOP_MODEL).")]
    = None,
    host: Annotated[str | None, typer.Option(help="Address (DRIFTLOOP_SERVING_HOST, "
                                             "default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (DRIFTLOOP_SERVING_PORT, "
                                             "default 8000).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes "
                                                "(DRIFTLOOP_SERVING_WORKERS, default 1).")] = None,
    access_log: Annotated[bool, typer.Option(help="uvicorn access log lines.")] = False,
) -> None:
    """Serve models:/NAME@champion over HTTP, shadow @challenger, log every prediction and
    export Prometheus metrics (docs/serving.md)."""
    import uvicorn

    from kernel.errors import UsageError
    from kernel.httpserver import HTTP_PROTOCOL
    from serving.settings import ServingSettings

    # Options become environment variables: every worker builds the same settings from them.
    for env, option in (("DRIFTLOOP_MODEL", model), ("DRIFTLOOP_SERVING_HOST", host),
                        ("DRIFTLOOP_SERVING_PORT", port), ("DRIFTLOOP_SERVING_WORKERS", workers)):
        if option is not None:
            os.environ[env] = str(option)
    settings = ServingSettings()
    if not settings.model:
        raise UsageError("no model to serve: pass --model NAME or set DRIFTLOOP_MODEL")
    # Workers are spawned with this environment, so they see the same home and store.
    os.environ["DRIFTLOOP_HOME"] = str(settings.home_dir)
    if settings.serving_workers > 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        target = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR")
                      or settings.home_dir / "prometheus-multiproc" / str(settings.serving_port))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prepare_multiprocess_dir(target))
    check_port_free(settings.serving_host, settings.serving_port, option="--port")
    echo(f"serving {settings.model}@champion on http://{settings.serving_host}:"
         f"{settings.serving_port} ({settings.serving_workers} worker(s); registry "
         f"{settings.resolved_tracking_uri}; log {settings.resolved_log_uri})")
    _warn_without_champion(settings)
    uvicorn.run("serving.app:app_from_env", factory=True, host=settings.serving_host,
                http=HTTP_PROTOCOL,
                port=settings.serving_port, workers=settings.serving_workers,
                access_log=access_log, log_level=os.environ.get("DRIFTLOOP_LOG_LEVEL",
                                                                "warning").lower())
