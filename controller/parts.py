"""The controller's assembled pieces: ``build_controller(settings)`` wires the registry, the
state store, the prediction log, the launcher, the notifier and the metrics into one
``Controller``; the app (``controller.app``) serves it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from controller.evidence import Evaluator, ModelCache
from controller.launcher import GitHubActionsLauncher, Launcher, LocalProcessLauncher
from controller.metrics import ControllerMetrics
from controller.notify import Notifier, ServingReloader
from controller.reconcile import CRASH_ENV, Controller, Managed
from controller.settings import ControllerSettings
from controller.store import Store
from kernel.errors import UsageError
from kernel.spec import load_spec
from monitoring.predlog import open_log
from registry import ModelRegistry, open_registry


def make_launcher(settings: ControllerSettings, client: httpx.Client) -> Launcher:
    if settings.controller_launcher == "github":
        if not settings.controller_github_repo or not settings.controller_github_token:
            raise UsageError("the github launcher needs DRIFTLOOP_CONTROLLER_GITHUB_REPO and "
                             "DRIFTLOOP_CONTROLLER_GITHUB_TOKEN (or GITHUB_TOKEN)")
        return GitHubActionsLauncher(client, settings.controller_github_repo,
                                     settings.controller_github_workflow,
                                     settings.controller_github_token,
                                     ref=settings.controller_github_ref,
                                     api=settings.controller_github_api,
                                     data_uri=settings.controller_github_data_uri)
    if settings.controller_launcher != "local":
        raise UsageError(f"DRIFTLOOP_CONTROLLER_LAUNCHER: unknown {settings.controller_launcher!r}"
                         " (local or github)")
    return LocalProcessLauncher(settings.home_dir / "logs")


def load_models(settings: ControllerSettings) -> dict[str, Managed]:
    models: dict[str, Managed] = {}
    for path in settings.spec_paths():
        spec = load_spec(path)
        models[spec.model_name] = Managed(spec, path.resolve())
    return models


def check_startup(settings: ControllerSettings) -> None:
    """What start-up needs, checked before the service binds its port: every spec file
    readable and valid, the launcher settings complete (the schedule is checked when the
    settings are built). A bad one raises a one-line UsageError (the CLI exits 2)."""
    load_models(settings)
    with httpx.Client() as client:
        make_launcher(settings, client)


@dataclass
class Parts:
    controller: Controller
    store: Store
    metrics: ControllerMetrics
    client: httpx.Client


def build_controller(settings: ControllerSettings, *, registry: ModelRegistry | None = None,
                     launcher: Launcher | None = None, store: Store | None = None,
                     metrics: ControllerMetrics | None = None,
                     client: httpx.Client | None = None,
                     clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Parts:
    client = client or httpx.Client()
    store = store or Store(settings.database_url)
    registry = registry or open_registry(settings)
    metrics = metrics or ControllerMetrics.create()
    _, reader = open_log(settings.resolved_log_uri, incremental=True)  # opens only new files
    evaluator = Evaluator(registry, reader, ModelCache(registry, settings.home_dir / "controller"
                                                       / "bundles"), settings.gate_policy(),
                          offline_replay=settings.controller_offline_replay)
    controller = Controller(
        settings, store=store, registry=registry,
        launcher=launcher or make_launcher(settings, client), reader=reader, evaluator=evaluator,
        models=load_models(settings), metrics=metrics,
        notifier=Notifier(client, settings.controller_notify_url),
        reloader=ServingReloader(client, settings.serving_url, settings.admin_token),
        clock=clock, crash_at=os.environ.get(CRASH_ENV))
    return Parts(controller, store, metrics, client)
