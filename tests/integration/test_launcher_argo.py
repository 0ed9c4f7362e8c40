"""The Argo Workflows launcher against a stand-in of the Argo Server's REST API on loopback (no
Argo can run here). The stand-in serves what the Argo Server documents
(``POST /api/v1/workflows/{namespace}/submit`` taking a ``WorkflowSubmitRequest``;
``GET /api/v1/workflows/{namespace}`` with ``listOptions.labelSelector`` answering a
``WorkflowList`` whose ``items`` is null when empty), checks the bearer token, and records
every request so the tests check the exact submit body and that a cycle is submitted once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.launch_argo import ArgoLauncher
from controller.launch_names import job_name
from controller.launcher import LaunchError, LaunchRequest, LaunchUnavailable
from controller.parts import make_launcher
from controller.settings import ControllerSettings
from kernel.errors import UsageError
from tests.integration.standin import Answer, Seen, StandIn, serve

pytestmark = pytest.mark.integration

NS = "argo-ml"
TOKEN = "argo-sa-token"
CYCLE = "churn-cycle-20261202T080000-3"


@dataclass
class ArgoServer:
    workflows: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_with: int | None = None

    def handle(self, req: Seen) -> Answer:
        if req.headers.get("authorization") != f"Bearer {TOKEN}":
            return Answer(401, {"code": 16, "message": "token not valid"})
        if self.fail_with is not None:
            return Answer(self.fail_with, {"code": 13, "message": "stand-in refusal"})
        if req.method == "POST" and req.path == f"/api/v1/workflows/{NS}/submit":
            return self._submit(req.json())
        if req.method == "GET" and req.path == f"/api/v1/workflows/{NS}":
            wanted = dict(kv.split("=", 1) for kv in
                          req.query["listOptions.labelSelector"][0].split(","))
            items = [w for w in self.workflows.values()
                     if wanted.items() <= w["metadata"]["labels"].items()]
            return Answer(200, {"metadata": {}, "items": items or None})
        return Answer(404, {"code": 5, "message": f"not served: {req.method} {req.path}"})

    def _submit(self, body: dict[str, Any]) -> Answer:
        options = body["submitOptions"]
        name = options["name"]
        if name in self.workflows:
            return Answer(409, {"code": 6, "message": f'workflows.argoproj.io "{name}" already '
                                "exists"})
        labels = dict(kv.split("=", 1) for kv in options["labels"].split(","))
        workflow = {"metadata": {"name": name, "namespace": NS, "labels": labels},
                    "spec": {"workflowTemplateRef": {"name": body["resourceName"]},
                             "arguments": {"parameters": [
                                 dict(zip(("name", "value"), p.split("=", 1), strict=True))
                                 for p in options["parameters"]]}},
                    "status": {}}
        self.workflows[name] = workflow
        return Answer(200, workflow)


@pytest.fixture
def argo() -> Iterator[tuple[ArgoServer, StandIn]]:
    state = ArgoServer()
    with serve(state.handle) as api:
        yield state, api


def launcher_for(api: StandIn, tmp_path: Path, **extra: Any) -> ArgoLauncher:
    settings = ControllerSettings(home=tmp_path, controller_launcher="argo",
                                  controller_argo_server=api.url, controller_argo_token=TOKEN,
                                  controller_argo_namespace=NS, **extra)
    launcher = make_launcher(settings, httpx.Client())
    assert isinstance(launcher, ArgoLauncher)
    return launcher


def request(attempt: int = 1, recent: Path | None = None) -> LaunchRequest:
    return LaunchRequest("churn", CYCLE, attempt, Path("/etc/driftloop/specs/churn.yaml"),
                         (recent,) if recent else (), reason="drift, labels",
                         since=datetime(2026, 11, 1, tzinfo=UTC),
                         until=datetime(2026, 12, 1, tzinfo=UTC), recent_path=recent)


def test_the_submit_is_the_documented_workflow_submit_request(
        argo: tuple[ArgoServer, StandIn], tmp_path: Path) -> None:
    state, api = argo
    recent = tmp_path / "recent.parquet"
    recent.write_bytes(b"PAR1")
    launcher = launcher_for(api, tmp_path, controller_launch_data_uri=str(tmp_path / "bucket"))

    assert "submitted WorkflowTemplate driftloop-train" in launcher.launch(request(1, recent))

    listing, submit = api.seen
    assert (listing.method, listing.path) == ("GET", f"/api/v1/workflows/{NS}")
    selector = f"driftloop.io/cycle={CYCLE},driftloop.io/attempt=1"
    assert listing.query == {"listOptions.labelSelector": [selector]}
    assert (submit.method, submit.path) == ("POST", f"/api/v1/workflows/{NS}/submit")
    uploaded = tmp_path / "bucket" / "churn" / "cycles" / f"{CYCLE}.parquet"
    assert submit.json() == {
        "namespace": NS, "resourceKind": "WorkflowTemplate", "resourceName": "driftloop-train",
        "submitOptions": {"name": job_name(CYCLE, 1), "labels": selector, "parameters": [
            "model=churn", "reason=drift, labels", f"cycle_id={CYCLE}", "attempt=1",
            f"data={uploaded.resolve()}", "since=2026-11-01T00:00:00+00:00",
            "until=2026-12-01T00:00:00+00:00"]}}
    assert uploaded.read_bytes() == b"PAR1"
    assert submit.headers["authorization"] == f"Bearer {TOKEN}"


def test_a_cycle_is_submitted_once_even_across_a_restart(argo: tuple[ArgoServer, StandIn],
                                                         tmp_path: Path) -> None:
    state, api = argo
    launcher_for(api, tmp_path).launch(request())
    again = launcher_for(api, tmp_path)                 # a restarted controller
    assert "exists already" in again.launch(request())
    assert len(api.calls("POST")) == 1
    assert "submitted" in again.launch(request(attempt=2))  # a new attempt is a new workflow
    assert sorted(state.workflows) == [job_name(CYCLE, 1), job_name(CYCLE, 2)]


def test_a_submit_that_lost_the_race_counts_as_found(argo: tuple[ArgoServer, StandIn],
                                                     tmp_path: Path) -> None:
    state, api = argo
    launcher = launcher_for(api, tmp_path)
    launcher.launch(request())
    state.workflows[job_name(CYCLE, 1)]["metadata"]["labels"] = {}   # not listed, still there
    assert "submitted concurrently" in launcher.launch(request())


@pytest.mark.parametrize(("phase", "nodes", "status", "code"), [
    (None, {}, "running", None),
    ("Pending", {}, "running", None),
    ("Running", {}, "running", None),
    ("Succeeded", {}, "exited", 0),
    ("Failed", {"n1": {"type": "Pod", "phase": "Failed", "outputs": {"exitCode": "2"}}},
     "exited", 2),
    ("Failed", {"n1": {"type": "Pod", "phase": "Failed", "outputs": {"exitCode": "137"}}},
     "exited", 137),
    ("Error", {}, "gone", None),
])
def test_status_follows_the_workflow_phase(argo: tuple[ArgoServer, StandIn], tmp_path: Path,
                                           phase: str | None, nodes: dict[str, Any],
                                           status: str, code: int | None) -> None:
    state, api = argo
    launcher = launcher_for(api, tmp_path)
    launcher.launch(request())
    state.workflows[job_name(CYCLE, 1)]["status"] = {"phase": phase, "nodes": nodes,
                                                     "message": "stand-in says so"}
    seen = launcher.status(CYCLE, 1)
    assert (seen.status, seen.returncode) == (status, code)
    if status != "running":
        assert job_name(CYCLE, 1) in seen.detail
    assert launcher.status(CYCLE, 9).status == "gone"      # never submitted


@pytest.mark.parametrize(("code", "error"), [(403, LaunchError), (500, LaunchUnavailable),
                                             (503, LaunchUnavailable)])
def test_refusals_are_permanent_or_retryable(argo: tuple[ArgoServer, StandIn], tmp_path: Path,
                                             code: int, error: type[Exception]) -> None:
    state, api = argo
    state.fail_with = code
    with pytest.raises(error) as raised:
        launcher_for(api, tmp_path).launch(request())
    assert (error is LaunchUnavailable) == isinstance(raised.value, LaunchUnavailable)


def test_an_unreachable_server_is_retryable_and_a_missing_one_a_usage_error(
        tmp_path: Path) -> None:
    with serve(lambda req: Answer(500)) as api:
        dead = StandIn(api.url, [])
    with pytest.raises(LaunchUnavailable, match="unreachable"):
        launcher_for(dead, tmp_path).launch(request())
    with pytest.raises(UsageError, match="ARGO_SERVER"):
        make_launcher(ControllerSettings(home=tmp_path, controller_launcher="argo"),
                      httpx.Client())
