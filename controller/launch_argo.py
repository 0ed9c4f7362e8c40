"""Retraining as an Argo Workflow (``DRIFTLOOP_CONTROLLER_LAUNCHER=argo``).

Submits a ``WorkflowTemplate`` through the Argo Server's REST API,
``POST /api/v1/workflows/{namespace}/submit`` with a ``WorkflowSubmitRequest``
(``namespace``, ``resourceKind``, ``resourceName``, ``submitOptions``: ``SubmitOpts`` with
``name``, ``labels`` as ``k=v,k=v`` and ``parameters`` as ``name=value`` strings). Idempotent
by cycle and attempt: the workflow is looked up first with
``GET /api/v1/workflows/{namespace}?listOptions.labelSelector=...`` and reused when found; its
name is fixed by the cycle and attempt (the same as the Kubernetes Job's), so a submit that
raced another replica is refused by the server (409) rather than run twice.

:meth:`ArgoLauncher.status` follows ``status.phase``: Pending and Running are ``running``,
Succeeded ``exited`` 0, Failed and Error ``exited`` with the failed pod node's exit code when
the workflow recorded one (2 is permanent in the cycle), else ``gone`` (retried). The
outcome is still the registry's version tagged with the cycle id. Parameters the template
receives: model, reason, cycle_id, attempt, data (the recent rows' URI or empty), since, until.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from controller.launch_names import LABEL_ATTEMPT, LABEL_CYCLE, job_name, selector
from controller.launcher import (
    LaunchError,
    LaunchRequest,
    LaunchStatus,
    LaunchUnavailable,
    upload_recent,
)

log = logging.getLogger(__name__)


@dataclass
class ArgoLauncher:
    client: httpx.Client
    server: str                     # https://argo-server.argo:2746
    token: str | None
    namespace: str
    template: str                   # WorkflowTemplate name
    data_uri: str | None = None

    def launch(self, request: LaunchRequest) -> str:
        found = self._find(request.cycle_id, request.attempt)
        if found is not None:
            return f"workflow {self.namespace}/{found['metadata']['name']} exists already " \
                   f"({(found.get('status') or {}).get('phase') or 'Pending'})"
        data = upload_recent(request, self.data_uri, "DRIFTLOOP_CONTROLLER_LAUNCH_DATA_URI")
        name = job_name(request.cycle_id, request.attempt)
        labels = selector(request.cycle_id, request.attempt)
        parameters = argo_parameters(request, data)
        body = {"namespace": self.namespace, "resourceKind": "WorkflowTemplate",
                "resourceName": self.template,
                "submitOptions": {"name": name, "labels": labels,
                                  "parameters": [f"{k}={v}" for k, v in parameters.items()]}}
        response = self._call("POST", f"/api/v1/workflows/{self.namespace}/submit", json=body)
        if response.status_code == 409:
            return f"workflow {self.namespace}/{name} exists already (submitted concurrently)"
        self._check(response, "submit")
        log.info("submitted %s as workflow %s/%s for %s", self.template, self.namespace, name,
                 request.cycle_id)
        return f"submitted WorkflowTemplate {self.template} as {self.namespace}/{name}"

    def status(self, cycle_id: str, attempt: int) -> LaunchStatus:
        found = self._find(cycle_id, attempt)
        if found is None:
            return LaunchStatus("gone", None, f"no workflow labelled {selector(cycle_id, attempt)}"
                                f" in {self.namespace} (deleted, or archived)")
        name = found["metadata"]["name"]
        status = found.get("status") or {}
        phase = status.get("phase") or "Pending"
        if phase in ("Pending", "Running"):
            return LaunchStatus("running", detail=f"workflow {name}: {phase}")
        if phase == "Succeeded":
            return LaunchStatus("exited", 0, f"workflow {name} succeeded")
        detail = f"workflow {name} {phase}: {status.get('message') or ''}".rstrip(": ")
        code = _failed_exit_code(status)
        return LaunchStatus("exited", code, detail) if code is not None \
            else LaunchStatus("gone", None, detail)

    def _find(self, cycle_id: str, attempt: int) -> dict[str, Any] | None:
        response = self._call("GET", f"/api/v1/workflows/{self.namespace}",
                              params={"listOptions.labelSelector": selector(cycle_id, attempt)})
        self._check(response, "list")
        items = response.json().get("items") or []   # null when there are none
        wanted = {LABEL_CYCLE, LABEL_ATTEMPT}
        mine = [w for w in items if wanted <= set((w.get("metadata") or {}).get("labels") or {})]
        return mine[0] if mine else None

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            return self.client.request(method, f"{self.server.rstrip('/')}{path}",
                                       headers=headers, timeout=30, **kw)
        except httpx.HTTPError as exc:
            raise LaunchUnavailable(f"Argo Server unreachable: {exc}") from exc

    @staticmethod
    def _check(response: httpx.Response, doing: str) -> None:
        if response.is_success:
            return
        text = f"Argo Server answered {response.status_code} to the {doing}: {response.text[:300]}"
        if response.status_code == 429 or response.status_code >= 500:
            raise LaunchUnavailable(text)
        raise LaunchError(text)


def argo_parameters(request: LaunchRequest, data: str | None) -> dict[str, str]:
    """The workflow parameters of a launch, in the order the example WorkflowTemplate
    declares them (deploy/kubernetes/examples/argo-workflowtemplate.yaml)."""
    return {"model": request.model, "reason": request.reason[:1000],
            "cycle_id": request.cycle_id, "attempt": str(request.attempt), "data": data or "",
            "since": request.since.isoformat() if request.since else "",
            "until": request.until.isoformat() if request.until else ""}


def _failed_exit_code(status: dict[str, Any]) -> int | None:
    """The exit code of a failed pod node (``status.nodes[*].outputs.exitCode``), if any."""
    for node in (status.get("nodes") or {}).values():
        code = (node.get("outputs") or {}).get("exitCode")
        if node.get("type") == "Pod" and node.get("phase") in ("Failed", "Error") and code:
            try:
                return int(code)
            except ValueError:
                return None
    return None
