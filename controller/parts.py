"""The controller's assembled pieces: ``build_controller(settings)`` wires the registry, the
state store, the prediction log, the launcher, the notifier and the metrics into one
``Controller``; the app (``controller.app``) serves it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from controller.evidence import Evaluator, ModelCache
from controller.launch_argo import ArgoLauncher
from controller.launch_webhook import WebhookLauncher, check_template
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

LAUNCHERS = ("local", "github", "kubernetes", "argo", "webhook")
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def make_launcher(settings: ControllerSettings, client: httpx.Client) -> Launcher:
    """The launcher ``DRIFTLOOP_CONTROLLER_LAUNCHER`` names; incomplete settings are a
    one-line UsageError (start-up checks this before binding its port)."""
    kind = settings.controller_launcher
    if kind == "github":
        if not settings.controller_github_repo or not settings.controller_github_token:
            raise UsageError("the github launcher needs DRIFTLOOP_CONTROLLER_GITHUB_REPO and "
                             "DRIFTLOOP_CONTROLLER_GITHUB_TOKEN (or GITHUB_TOKEN)")
        return GitHubActionsLauncher(client, settings.controller_github_repo,
                                     settings.controller_github_workflow,
                                     settings.controller_github_token,
                                     ref=settings.controller_github_ref,
                                     api=settings.controller_github_api,
                                     data_uri=settings.controller_github_data_uri)
    if kind == "kubernetes":
        return _kubernetes_launcher(settings)
    if kind == "argo":
        if not settings.controller_argo_server:
            raise UsageError("the argo launcher needs DRIFTLOOP_CONTROLLER_ARGO_SERVER")
        return ArgoLauncher(client, settings.controller_argo_server,
                            settings.controller_argo_token, settings.controller_argo_namespace,
                            settings.controller_argo_template,
                            data_uri=settings.controller_launch_data_uri)
    if kind == "webhook":
        return _webhook_launcher(settings, client)
    if kind != "local":
        raise UsageError(f"DRIFTLOOP_CONTROLLER_LAUNCHER: unknown {kind!r} "
                         f"({', '.join(LAUNCHERS)})")
    return LocalProcessLauncher(settings.home_dir / "logs")


def _kubernetes_launcher(settings: ControllerSettings) -> Launcher:
    from controller.launch_kubernetes import (
        JobOverrides,
        KubernetesJobLauncher,
        api_client,
        load_template,
    )

    s = settings
    source = s.controller_kubernetes_job_template
    cronjob = source.removeprefix("cronjob/") if source and source.startswith("cronjob/") \
        else None
    template = None if cronjob else load_template(Path(source) if source else None)
    pod = template["spec"]["template"]["spec"] if template else {"containers": [{}]}
    if not s.controller_kubernetes_image and not cronjob \
            and not any(c.get("image") for c in pod["containers"]):
        raise UsageError("the kubernetes launcher needs DRIFTLOOP_CONTROLLER_KUBERNETES_IMAGE "
                         "or an image in DRIFTLOOP_CONTROLLER_KUBERNETES_JOB_TEMPLATE")
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    namespace = s.controller_kubernetes_namespace
    if namespace is None:
        namespace = (IN_CLUSTER_NAMESPACE.read_text().strip()
                     if in_cluster and IN_CLUSTER_NAMESPACE.is_file() else "default")
    overrides = JobOverrides(
        image=s.controller_kubernetes_image, service_account=s.controller_kubernetes_service_account,
        resources=s.controller_kubernetes_resources,
        node_selector=s.controller_kubernetes_node_selector,
        tolerations=s.controller_kubernetes_tolerations,
        ttl_seconds=s.controller_kubernetes_ttl_seconds,
        deadline_seconds=s.controller_kubernetes_deadline_seconds,
        backoff_limit=s.controller_kubernetes_backoff_limit)
    return KubernetesJobLauncher(api_client(s.controller_kubernetes_kubeconfig,
                                            in_cluster=in_cluster),
                                 namespace, template, overrides,
                                 data_uri=s.controller_launch_data_uri, cronjob=cronjob)


def _webhook_launcher(settings: ControllerSettings, client: httpx.Client) -> Launcher:
    s = settings
    if not s.controller_webhook_url:
        raise UsageError("the webhook launcher needs DRIFTLOOP_CONTROLLER_WEBHOOK_URL")
    check_template(s.controller_webhook_url, "DRIFTLOOP_CONTROLLER_WEBHOOK_URL")
    check_template(s.controller_webhook_body, "DRIFTLOOP_CONTROLLER_WEBHOOK_BODY")
    for name, value in s.controller_webhook_headers.items():
        check_template(value, f"DRIFTLOOP_CONTROLLER_WEBHOOK_HEADERS[{name}]")
    if (s.controller_webhook_user is None) != (s.controller_webhook_password is None):
        raise UsageError("the webhook launcher's basic auth needs both "
                         "DRIFTLOOP_CONTROLLER_WEBHOOK_USER and _PASSWORD")
    auth = (s.controller_webhook_user, s.controller_webhook_password) \
        if s.controller_webhook_user is not None and s.controller_webhook_password is not None \
        else None
    return WebhookLauncher(client, s.controller_webhook_url,
                           method=s.controller_webhook_method.upper(),
                           headers=dict(s.controller_webhook_headers),
                           body=s.controller_webhook_body,
                           content_type=s.controller_webhook_content_type,
                           token=s.controller_webhook_token, auth=auth,
                           crumb_url=s.controller_webhook_crumb_url,
                           data_uri=s.controller_launch_data_uri)


def load_models(settings: ControllerSettings) -> dict[str, Managed]:
    models: dict[str, Managed] = {}
    for path in settings.spec_paths():
        spec = load_spec(path)
        # absolute, not resolved: a ConfigMap-mounted spec is a symlink into a timestamped
        # folder that a training Job's own mount names differently
        models[spec.model_name] = Managed(spec, Path(os.path.abspath(path)))
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
                     clock: Callable[[], datetime] | None = None) -> Parts:
    """``clock``: the controller's clock; default the settings' (the wall clock, or the
    simulated one of DRIFTLOOP_SIMULATED_CLOCK_FILE)."""
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
        clock=clock or settings.clock().now, crash_at=os.environ.get(CRASH_ENV))
    return Parts(controller, store, metrics, client)
