"""Retraining as a Kubernetes Job (``DRIFTLOOP_CONTROLLER_LAUNCHER=kubernetes``).

One Job per (cycle, attempt), named from both (:func:`job_name`), so the launch is
idempotent: the Job is read first, created on 404, and a 409 AlreadyExists (another replica,
or a restarted controller, got there first) counts as found. Never a second Job.

The Job starts from a template (a Job or a CronJob's ``jobTemplate`` in a YAML file: the
volumes, the ``envFrom`` Secrets with the MLflow and object-store credentials, the security
context) and the settings override the image, service account, resources, node selector,
tolerations, ``ttlSecondsAfterFinished``, ``activeDeadlineSeconds`` and ``backoffLimit``. Its
``train`` container runs ``driftloop train`` with :func:`controller.launcher.train_args`; the
cycle's recent labelled rows go through the object store (:func:`upload_recent`) and an init
container fetches them (``python -m controller.launch_fetch``). No variable of the
controller's environment is copied into the Job.

:meth:`KubernetesJobLauncher.status` reads the Job and its pods. The outcome itself is the
registry's (the version tagged ``driftloop.cycle_id``); a Job that ends without one is
reported as the local launcher's process would be: ``exited`` with the container's exit code
(2, bad input, is permanent in the cycle; any other code is retried up to the attempt limit)
or ``gone`` (retried). A pod that cannot start (image pull, a missing Secret or ConfigMap)
raises :class:`LaunchError` (permanent: a new attempt would pull the same image) after the
Job is deleted; an unreachable API raises :class:`LaunchUnavailable`.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from controller.launch_names import (
    ANNOTATION_CYCLE_ID,
    LABEL_ATTEMPT,
    LABEL_CYCLE,
    cycle_label,
    job_name,
    selector,
)
from controller.launcher import (
    LaunchError,
    LaunchRequest,
    LaunchStatus,
    LaunchUnavailable,
    train_args,
    upload_recent,
)
from kernel.errors import UsageError

log = logging.getLogger(__name__)

CONTAINER = "train"
RECENT_DIR = "/var/run/driftloop/recent"
# Waiting reasons of a container that will not start however long the Job waits.
CANNOT_START = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                          "ErrImageNeverPull", "CreateContainerConfigError"})
TIMEOUT = 30  # seconds per API request


def job_of(doc: Any, where: str) -> dict[str, Any]:
    """The Job a template document describes: a Job as is, a CronJob's jobTemplate."""
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if kind == "CronJob":
        doc = {"apiVersion": "batch/v1", "kind": "Job", **doc["spec"]["jobTemplate"]}
    elif kind != "Job":
        raise UsageError(f"DRIFTLOOP_CONTROLLER_KUBERNETES_JOB_TEMPLATE: {where} holds a "
                         f"{kind or 'non-object'}, not a Job or CronJob")
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    if not pod.get("containers"):
        raise UsageError(f"DRIFTLOOP_CONTROLLER_KUBERNETES_JOB_TEMPLATE: {where}: the pod "
                         "template has no container")
    return doc


def load_template(path: Path | None) -> dict[str, Any]:
    """The Job a training Job starts from: the file's Job, or its CronJob's jobTemplate; with
    no file, a Job with one ``train`` container (the image from the settings)."""
    if path is None:
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {},
                "spec": {"template": {"spec": {"containers": [{"name": CONTAINER}]}}}}
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"DRIFTLOOP_CONTROLLER_KUBERNETES_JOB_TEMPLATE: cannot read {path}: "
                         f"{exc}".splitlines()[0]) from None
    return job_of(doc, str(path))


def api_client(kubeconfig: Path | None, *, in_cluster: bool) -> k8s.ApiClient:
    """An API client from ``kubeconfig``, else the in-cluster service account, else the
    default kubeconfig. A missing or broken configuration is a one-line UsageError."""
    configuration = k8s.Configuration()
    try:
        if kubeconfig is None and in_cluster:
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            k8s_config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None,
                                        client_configuration=configuration)
    except (k8s_config.ConfigException, OSError, TypeError) as exc:
        raise UsageError(f"the kubernetes launcher cannot configure its API client: "
                         f"{exc}".splitlines()[0]) from None
    configuration.retries = 0   # the reconcile loop retries; a request must not hang it
    return k8s.ApiClient(configuration)


@dataclass
class JobOverrides:
    """What the settings put over the template (None: the template's, else the default)."""

    image: str | None = None
    service_account: str | None = None
    resources: dict[str, dict[str, str]] | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    ttl_seconds: int | None = None
    deadline_seconds: int | None = None
    backoff_limit: int | None = None


def _train_container(pod: dict[str, Any]) -> dict[str, Any]:
    containers = pod["containers"]
    return next((c for c in containers if c.get("name") == CONTAINER), containers[0])


def _apply(job: dict[str, Any], o: JobOverrides) -> None:
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    container = _train_container(pod)
    value: Any
    for key, value in (("image", o.image), ("resources", o.resources)):
        if value is not None:
            container[key] = value
    for key, value in (("serviceAccountName", o.service_account),
                       ("nodeSelector", o.node_selector), ("tolerations", o.tolerations)):
        if value is not None:
            pod[key] = value
    for key, value, default in (("ttlSecondsAfterFinished", o.ttl_seconds, 86400),
                                ("activeDeadlineSeconds", o.deadline_seconds, None),
                                ("backoffLimit", o.backoff_limit, 0)):
        if value is not None:
            spec[key] = value
        elif key not in spec and default is not None:
            spec[key] = default
    pod["restartPolicy"] = "Never"   # a failed try is a new pod, counted by backoffLimit


def build_job(template: dict[str, Any], overrides: JobOverrides, request: LaunchRequest,
              name: str, data_uri: str | None) -> dict[str, Any]:
    """The Job for ``request``: the template, the overrides, the cycle's name and labels, the
    train container's args and, with recent rows in the object store, the init container
    that fetches them into an emptyDir."""
    job = copy.deepcopy(template)
    labels = {LABEL_CYCLE: cycle_label(request.cycle_id), LABEL_ATTEMPT: str(request.attempt),
              "app.kubernetes.io/name": "driftloop", "app.kubernetes.io/component": "train"}
    annotations = {ANNOTATION_CYCLE_ID: request.cycle_id, "driftloop.io/model": request.model}
    meta = job.setdefault("metadata", {})
    meta.pop("generateName", None)
    meta.update(name=name)
    for part in (meta, job["spec"]["template"].setdefault("metadata", {})):
        part.setdefault("labels", {}).update(labels)
        part.setdefault("annotations", {}).update(annotations)
    _apply(job, overrides)
    pod = job["spec"]["template"]["spec"]
    container = _train_container(pod)
    if data_uri is not None and request.recent_path is not None:
        local = f"{RECENT_DIR}/{request.recent_path.name}"
        request = replace(request, recent_path=Path(local), data_paths=tuple(
            Path(local) if p == request.recent_path else p for p in request.data_paths))
        pod.setdefault("volumes", []).append({"name": "recent", "emptyDir": {}})
        mount = {"name": "recent", "mountPath": RECENT_DIR}
        container.setdefault("volumeMounts", []).append(mount)
        fetch = {k: v for k, v in container.items()
                 if k in ("image", "envFrom", "env", "securityContext", "volumeMounts")}
        pod.setdefault("initContainers", []).append(
            {**fetch, "name": "fetch-rows", "command": ["python", "-m", "controller.launch_fetch"],
             "args": [data_uri, local]})
    container["args"] = train_args(request)
    container.pop("command", None)   # the image's entrypoint is driftloop
    return job


@dataclass
class KubernetesJobLauncher:
    api: k8s.ApiClient
    namespace: str
    template: dict[str, Any] | None   # None: read the CronJob ``cronjob`` at each launch
    overrides: JobOverrides
    data_uri: str | None = None
    cronjob: str | None = None

    def __post_init__(self) -> None:
        self.batch = k8s.BatchV1Api(self.api)
        self.core = k8s.CoreV1Api(self.api)

    def launch(self, request: LaunchRequest) -> str:
        name = job_name(request.cycle_id, request.attempt)
        found = self._read(name)
        if found is not None:
            return f"Job {self.namespace}/{name} exists already ({_job_state(found)})"
        data = upload_recent(request, self.data_uri, "DRIFTLOOP_CONTROLLER_LAUNCH_DATA_URI")
        template = self.template if self.template is not None else self._from_cronjob()
        body = build_job(template, self.overrides, request, name, data)
        try:
            # a dict is serialised as given (the client's sanitize_for_serialization)
            self.batch.create_namespaced_job(self.namespace, cast(Any, body),
                                             _request_timeout=TIMEOUT)
        except k8s.ApiException as exc:
            if exc.status == 409:   # created meanwhile (another replica): that one is ours
                return f"Job {self.namespace}/{name} exists already (created concurrently)"
            raise _api_error(exc, f"creating Job {name}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise LaunchUnavailable(f"Kubernetes API unreachable: {exc}") from exc
        log.info("created Job %s/%s for %s attempt %d", self.namespace, name, request.cycle_id,
                 request.attempt)
        return f"created Job {self.namespace}/{name}"

    def status(self, cycle_id: str, attempt: int) -> LaunchStatus:
        name = job_name(cycle_id, attempt)
        job = self._read(name)
        if job is None:
            return LaunchStatus("gone", None, f"Job {self.namespace}/{name} not found (deleted, "
                                "or past its ttlSecondsAfterFinished)")
        conditions = {c.type: c for c in (job.status.conditions or []) if c.status == "True"}
        if "Complete" in conditions:
            return LaunchStatus("exited", 0, f"Job {name} complete")
        pods = self._pods(cycle_id, attempt)
        failed = conditions.get("Failed")
        if failed is not None:
            code, why = _termination(pods)
            detail = f"Job {name} failed: {failed.reason}: {failed.message or ''}".rstrip(": ")
            detail += f"; {why}" if why else ""
            return LaunchStatus("exited", code, detail) if code is not None \
                else LaunchStatus("gone", None, detail)
        stuck = _cannot_start(pods)
        if stuck:
            self._delete(name)
            raise LaunchError(f"Job {name} cannot start: {stuck}")
        return LaunchStatus("running", detail=f"Job {name}: {_job_state(job)}")

    def _from_cronjob(self) -> dict[str, Any]:
        """The jobTemplate of the CronJob ``cronjob`` (``kubectl create job --from=cronjob/``):
        kustomize and Helm keep its image, ConfigMap and Secret names right."""
        assert self.cronjob is not None
        try:
            found = self.batch.read_namespaced_cron_job(self.cronjob, self.namespace,
                                                        _request_timeout=TIMEOUT)
        except k8s.ApiException as exc:
            raise _api_error(exc, f"reading the template CronJob {self.cronjob}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise LaunchUnavailable(f"Kubernetes API unreachable: {exc}") from exc
        doc = self.api.sanitize_for_serialization(found)
        try:
            return job_of(doc, f"cronjob/{self.cronjob}")
        except UsageError as exc:
            raise LaunchError(str(exc)) from None

    def _read(self, name: str) -> Any:
        try:
            return self.batch.read_namespaced_job(name, self.namespace, _request_timeout=TIMEOUT)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, f"reading Job {name}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise LaunchUnavailable(f"Kubernetes API unreachable: {exc}") from exc

    def _pods(self, cycle_id: str, attempt: int) -> list[Any]:
        try:
            found = self.core.list_namespaced_pod(self.namespace,
                                                  label_selector=selector(cycle_id, attempt),
                                                  _request_timeout=TIMEOUT)
        except k8s.ApiException as exc:
            raise _api_error(exc, "listing the Job's pods") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise LaunchUnavailable(f"Kubernetes API unreachable: {exc}") from exc
        return list(found.items or [])

    def _delete(self, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, self.namespace,
                                             propagation_policy="Background",
                                             _request_timeout=TIMEOUT)
        except (k8s.ApiException, urllib3.exceptions.HTTPError) as exc:
            log.warning("could not delete Job %s: %s", name, exc)


def _api_error(exc: k8s.ApiException, doing: str) -> LaunchError:
    """429 and 5xx: retry later. Anything else (401, 403 from RBAC, 422 invalid): permanent."""
    text = f"{doing}: Kubernetes answered {exc.status} {exc.reason}: {(exc.body or '')[:300]}"
    if exc.status in (0, 429) or (exc.status or 0) >= 500:
        return LaunchUnavailable(text)
    return LaunchError(text)


def _job_state(job: Any) -> str:
    s = job.status
    return f"{s.active or 0} active, {s.succeeded or 0} succeeded, {s.failed or 0} failed"


def _termination(pods: list[Any]) -> tuple[int | None, str]:
    """The exit code and reason of the last pod's train container that terminated."""
    ended = []
    for pod in pods:
        for status in (pod.status.container_statuses or []) if pod.status else []:
            term = status.state.terminated if status.state else None
            if status.name == CONTAINER and term is not None:
                ended.append((term.finished_at or term.started_at or "", pod.metadata.name, term))
    if not ended:
        return None, ""
    _, pod_name, term = max(ended, key=lambda e: str(e[0]))
    why = f"pod {pod_name}: {term.reason or 'terminated'} (exit {term.exit_code})"
    if term.reason == "OOMKilled":
        why += ": out of memory, raise the memory limit (DRIFTLOOP_CONTROLLER_KUBERNETES_RESOURCES)"
    elif term.message:
        why += f": {term.message.strip()[-300:]}"
    return term.exit_code, why


def _cannot_start(pods: list[Any]) -> str:
    for pod in pods:
        statuses = [*(pod.status.init_container_statuses or []),
                    *(pod.status.container_statuses or [])] if pod.status else []
        for status in statuses:
            waiting = status.state.waiting if status.state else None
            if waiting is not None and waiting.reason in CANNOT_START:
                return (f"pod {pod.metadata.name}, container {status.name}: {waiting.reason}: "
                        f"{(waiting.message or '').strip()[:300]}")
    return ""
