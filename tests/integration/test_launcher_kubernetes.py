"""The Kubernetes Job launcher with the real ``kubernetes`` client against a stand-in of the
Kubernetes API on loopback (no cluster can be reached here): the stand-in serves the batch/v1
Job and core/v1 Pod paths the API documents and records every request, so the tests check
the exact paths, verbs, bodies and label selectors the client sends. The client is configured
the way an operator configures it, from a kubeconfig file.

Cases: the Job a launch creates; a restarted controller (a new launcher instance) finds its
Job and never POSTs a second; a 409 from a concurrent create counts as found; a failed Job
(BackoffLimitExceeded) retried by the controller core up to the attempt limit, then the cycle
fails with the reason; an OOMKilled pod reported as such; an image that cannot be pulled is
permanent; an unreachable API is retryable.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from controller.launch_fetch import main as fetch_main
from controller.launch_kubernetes import KubernetesJobLauncher, api_client
from controller.launch_names import job_name, selector
from controller.launcher import LaunchError, LaunchRequest, LaunchUnavailable, train_args
from controller.parts import make_launcher
from controller.settings import ControllerSettings
from kernel.errors import UsageError
from kernel.spec import DatasetSpec
from tests.integration.standin import Answer, Seen, StandIn, serve
from tests.unit.controller_harness import make_world

pytestmark = pytest.mark.integration

NS = "ml"
TOKEN = "stand-in-sa-token"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
PODS = f"/api/v1/namespaces/{NS}/pods"
CRONJOBS = f"/apis/batch/v1/namespaces/{NS}/cronjobs"


def _status(code: int, reason: str, message: str) -> Answer:
    """A metav1.Status, as the API answers errors."""
    return Answer(code, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                         "status": "Failure", "message": message, "reason": reason,
                         "code": code})


@dataclass
class Cluster:
    """The API's state: Jobs by name and the pods of each; the tests move them along."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    hide_next_get: bool = False       # a GET that misses a Job another replica just made
    fail_with: int | None = None      # answer every request with this code
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, req: Seen) -> Answer:
        if req.headers.get("authorization") != f"Bearer {TOKEN}":
            return _status(401, "Unauthorized", "no token")
        if self.fail_with is not None:
            return _status(self.fail_with, "Forbidden" if self.fail_with == 403
                           else "InternalError", "stand-in refusal")
        with self.lock:
            return self._route(req)

    def _route(self, req: Seen) -> Answer:
        if req.method == "POST" and req.path == JOBS:
            job = req.json()
            name = job["metadata"]["name"]
            if name in self.jobs:
                return _status(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
            job["metadata"]["namespace"] = NS
            job["status"] = {}
            self.jobs[name] = job
            return Answer(201, job)
        if req.path.startswith(JOBS + "/"):
            name = req.path.removeprefix(JOBS + "/")
            if req.method == "GET":
                if self.hide_next_get:
                    self.hide_next_get = False
                    return _status(404, "NotFound", f'jobs.batch "{name}" not found')
                if name in self.jobs:
                    return Answer(200, self.jobs[name])
                return _status(404, "NotFound", f'jobs.batch "{name}" not found')
            if req.method == "DELETE" and self.jobs.pop(name, None) is not None:
                return Answer(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
        if req.method == "GET" and req.path == f"{CRONJOBS}/driftloop-train":
            return Answer(200, TEMPLATE)
        if req.method == "GET" and req.path == PODS:
            wanted = dict(kv.split("=", 1) for kv in req.query["labelSelector"][0].split(","))
            items = [p for pods in self.pods.values() for p in pods
                     if wanted.items() <= p["metadata"]["labels"].items()]
            return Answer(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                "items": items})
        return _status(404, "NotFound", f"the stand-in does not serve {req.method} {req.path}")

    def pod(self, name: str, *, terminated: dict[str, Any] | None = None,
            waiting: dict[str, Any] | None = None) -> None:
        """A pod of Job ``name`` (the pod template's labels) with its train container's state."""
        job = self.jobs[name]
        state = {"terminated": terminated} if terminated else {"waiting": waiting} \
            if waiting else {"running": {}}
        pod = {"metadata": {"name": f"{name}-{len(self.pods.get(name, []))}",
                            "namespace": NS,
                            "labels": {**job["spec"]["template"]["metadata"]["labels"],
                                       "job-name": name}},
               "status": {"phase": "Failed" if terminated else "Pending",
                          "containerStatuses": [{"name": "train", "image": "driftloop:test",
                                                 "imageID": "", "ready": False,
                                                 "restartCount": 0, "state": state}]}}
        self.pods.setdefault(name, []).append(pod)

    def finish(self, name: str, kind: str, reason: str, message: str) -> None:
        job = self.jobs[name]
        job["status"] = {"conditions": [{"type": kind, "status": "True", "reason": reason,
                                         "message": message}],
                         "failed" if kind == "Failed" else "succeeded": 1}


@pytest.fixture
def cluster() -> Iterator[tuple[Cluster, StandIn]]:
    state = Cluster()
    with serve(state.handle) as api:
        yield state, api


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "clusters": [{"name": "standin", "cluster": {"server": server}}],
        "users": [{"name": "driftloop", "user": {"token": TOKEN}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin",
                                                     "user": "driftloop", "namespace": NS}}]}))
    return path


TEMPLATE = {
    "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "driftloop-train"},
    "spec": {"schedule": "0 0 31 2 *", "suspend": True, "jobTemplate": {"spec": {"template": {
        "spec": {"serviceAccountName": "driftloop-jobs",
                 "containers": [{"name": "train", "image": "driftloop:0.1.0",
                                 "envFrom": [{"secretRef": {"name": "driftloop-object-store"}}],
                                 "volumeMounts": [{"name": "specs",
                                                   "mountPath": "/etc/driftloop/specs"}]}],
                 "volumes": [{"name": "specs", "configMap": {"name": "driftloop-specs"}}]}}}}}}


def launcher_for(tmp_path: Path, api: StandIn, **overrides: Any) -> KubernetesJobLauncher:
    """A fresh launcher, as a (re)started controller builds it: from the settings."""
    template = tmp_path / "job-template.yaml"
    template.write_text(yaml.safe_dump(TEMPLATE))
    settings = ControllerSettings(**{
        "home": tmp_path / "home", "controller_launcher": "kubernetes",
        "controller_kubernetes_job_template": str(template),
        "controller_kubernetes_kubeconfig": kubeconfig(tmp_path / "kubeconfig", api.url),
        "controller_kubernetes_namespace": NS, **overrides})
    launcher = make_launcher(settings, client=None)  # type: ignore[arg-type]
    assert isinstance(launcher, KubernetesJobLauncher)
    return launcher


def request(tmp_path: Path, *, attempt: int = 1, recent: Path | None = None) -> LaunchRequest:
    history = Path("/var/lib/driftloop/data/churn.csv")
    paths = (history, recent) if recent else (history,)
    return LaunchRequest("churn", "churn-cycle-20261202T080000-3", attempt,
                         Path("/etc/driftloop/specs/churn.yaml"), paths, reason="drift",
                         since=pd.Timestamp("2026-11-01", tz="UTC").to_pydatetime(),
                         until=pd.Timestamp("2026-12-01", tz="UTC").to_pydatetime(),
                         recent_path=recent)


def test_a_launch_creates_one_job_named_and_labelled_by_cycle_and_attempt(
        cluster: tuple[Cluster, StandIn], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state, api = cluster
    monkeypatch.setenv("DRIFTLOOP_CONTROLLER_TOKEN", "controller-secret")
    launcher = launcher_for(tmp_path, api, controller_kubernetes_image="registry/driftloop:9",
                            controller_kubernetes_resources={"limits": {"memory": "3Gi"}},
                            controller_kubernetes_node_selector={"pool": "train"},
                            controller_kubernetes_tolerations=[{"key": "gpu",
                                                                "operator": "Exists"}],
                            controller_kubernetes_deadline_seconds=7200)
    req = request(tmp_path)
    name = job_name(req.cycle_id, 1)

    assert "created Job" in launcher.launch(req)

    get, post = api.seen
    assert (get.method, get.path) == ("GET", f"{JOBS}/{name}")
    assert (post.method, post.path) == ("POST", JOBS)
    job = post.json()
    assert job["metadata"]["name"] == name and len(name) <= 63
    labels = {"driftloop.io/cycle": req.cycle_id, "driftloop.io/attempt": "1"}
    assert labels.items() <= job["metadata"]["labels"].items()
    assert labels.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert job["metadata"]["annotations"]["driftloop.io/cycle-id"] == req.cycle_id
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert (spec["backoffLimit"], spec["ttlSecondsAfterFinished"],
            spec["activeDeadlineSeconds"]) == (0, 86400, 7200)
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "driftloop-jobs"
    assert pod["nodeSelector"] == {"pool": "train"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    container = pod["containers"][0]
    assert container["image"] == "registry/driftloop:9"
    assert container["resources"] == {"limits": {"memory": "3Gi"}}
    assert container["args"] == train_args(req)
    # credentials from the template's Secret; nothing from the controller's own environment
    assert container["envFrom"] == [{"secretRef": {"name": "driftloop-object-store"}}]
    assert "controller-secret" not in post.body.decode() and "env" not in container


def test_the_template_may_be_a_cronjob_in_the_namespace(cluster: tuple[Cluster, StandIn],
                                                        tmp_path: Path) -> None:
    """``cronjob/<name>``: read at each launch, as ``kubectl create job --from=cronjob/``."""
    _, api = cluster
    launcher = launcher_for(tmp_path, api,
                            controller_kubernetes_job_template="cronjob/driftloop-train")
    req = request(tmp_path)
    launcher.launch(req)
    read, post = api.seen[1], api.seen[2]
    assert (read.method, read.path) == ("GET", f"{CRONJOBS}/driftloop-train")
    job = post.json()
    pod = job["spec"]["template"]["spec"]
    expected = TEMPLATE["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[index]
    assert pod["volumes"] == expected["volumes"]
    assert pod["containers"][0]["image"] == "driftloop:0.1.0"
    assert pod["containers"][0]["args"] == train_args(req)


def test_a_restarted_controller_finds_its_job_and_never_creates_a_second(
        cluster: tuple[Cluster, StandIn], tmp_path: Path) -> None:
    state, api = cluster
    req = request(tmp_path)
    launcher_for(tmp_path, api).launch(req)
    name = job_name(req.cycle_id, 1)
    state.pod(name)                                  # running

    again = launcher_for(tmp_path, api)             # a new process: nothing in memory
    assert "exists already" in again.launch(req)
    assert again.status(req.cycle_id, 1).status == "running"

    assert len(api.calls("POST")) == 1
    pods = [s for s in api.seen if s.path == PODS]
    assert pods and all(s.query["labelSelector"] == [selector(req.cycle_id, 1)] for s in pods)
    assert list(state.jobs) == [name]


def test_a_create_that_lost_the_race_counts_as_found(cluster: tuple[Cluster, StandIn],
                                                     tmp_path: Path) -> None:
    state, api = cluster
    req = request(tmp_path)
    launcher_for(tmp_path, api).launch(req)
    state.hide_next_get = True                       # the other replica's Job, not yet seen
    assert "created concurrently" in launcher_for(tmp_path, api).launch(req)
    assert [s.method for s in api.seen].count("POST") == 2 and len(state.jobs) == 1


def test_the_recent_rows_reach_the_job_through_the_object_store(
        cluster: tuple[Cluster, StandIn], tmp_path: Path) -> None:
    _, api = cluster
    recent = tmp_path / "home" / "controller" / "data" / "cycle.parquet"
    recent.parent.mkdir(parents=True)
    pd.DataFrame({"x": [1, 2]}).to_parquet(recent)
    store = tmp_path / "bucket"
    launcher = launcher_for(tmp_path, api, controller_launch_data_uri=str(store))
    req = request(tmp_path, recent=recent)

    launcher.launch(req)

    uploaded = store / "churn" / "cycles" / f"{req.cycle_id}.parquet"
    assert uploaded.is_file()
    pod = api.calls("POST")[0].json()["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    assert fetch["command"] == ["python", "-m", "controller.launch_fetch"]
    source, local = fetch["args"]
    assert source == str(uploaded.resolve())
    args = pod["containers"][0]["args"]
    assert args[args.index("--data", args.index("--data") + 1) + 1] == local  # the fetched copy
    assert str(recent) not in args
    assert fetch["envFrom"] == pod["containers"][0]["envFrom"]
    # what the init container runs, here on a local "bucket"
    dest = tmp_path / "pod" / "recent.parquet"
    assert fetch_main([source, str(dest)]) == 0
    assert pd.read_parquet(dest)["x"].tolist() == [1, 2]
    assert fetch_main([str(store / "missing.parquet"), str(dest)]) == 1


def test_an_oomkilled_pod_is_reported_as_such(cluster: tuple[Cluster, StandIn],
                                              tmp_path: Path) -> None:
    state, api = cluster
    launcher = launcher_for(tmp_path, api)
    req = request(tmp_path)
    launcher.launch(req)
    name = job_name(req.cycle_id, 1)
    state.pod(name, terminated={"exitCode": 137, "reason": "OOMKilled",
                                "finishedAt": "2026-12-02T08:10:00Z"})
    state.finish(name, "Failed", "BackoffLimitExceeded", "Job has reached the specified "
                 "backoff limit")

    status = launcher.status(req.cycle_id, 1)

    assert (status.status, status.returncode) == ("exited", 137)
    assert "OOMKilled" in status.detail and "BackoffLimitExceeded" in status.detail
    assert "memory" in status.detail


def test_a_deadline_without_an_exit_code_is_gone_and_a_complete_job_exited_0(
        cluster: tuple[Cluster, StandIn], tmp_path: Path) -> None:
    state, api = cluster
    launcher = launcher_for(tmp_path, api)
    for attempt, kind, reason in ((1, "Failed", "DeadlineExceeded"), (2, "Complete", "")):
        req = request(tmp_path, attempt=attempt)
        launcher.launch(req)
        state.finish(job_name(req.cycle_id, attempt), kind, reason, "stand-in")
    deadline = launcher.status(req.cycle_id, 1)
    assert deadline.status == "gone" and "DeadlineExceeded" in deadline.detail
    assert launcher.status(req.cycle_id, 2).status == "exited"
    assert launcher.status(req.cycle_id, 2).returncode == 0
    assert launcher.status(req.cycle_id, 3).status == "gone"   # no such Job


def test_an_image_that_cannot_be_pulled_is_permanent_and_the_job_deleted(
        cluster: tuple[Cluster, StandIn], tmp_path: Path) -> None:
    state, api = cluster
    launcher = launcher_for(tmp_path, api)
    req = request(tmp_path)
    launcher.launch(req)
    name = job_name(req.cycle_id, 1)
    state.pod(name, waiting={"reason": "ImagePullBackOff",
                             "message": 'Back-off pulling image "driftloop:0.1.0"'})

    with pytest.raises(LaunchError, match="ImagePullBackOff") as raised:
        launcher.status(req.cycle_id, 1)

    assert not isinstance(raised.value, LaunchUnavailable)
    delete = api.calls("DELETE")
    assert [d.path for d in delete] == [f"{JOBS}/{name}"]
    assert delete[0].query["propagationPolicy"] == ["Background"]  # the pods go with it
    assert name not in state.jobs


@pytest.mark.parametrize(("code", "error"), [(403, LaunchError), (500, LaunchUnavailable),
                                             (429, LaunchUnavailable)])
def test_api_refusals_are_permanent_or_retryable(cluster: tuple[Cluster, StandIn],
                                                 tmp_path: Path, code: int,
                                                 error: type[Exception]) -> None:
    state, api = cluster
    launcher = launcher_for(tmp_path, api)
    state.fail_with = code
    with pytest.raises(error) as raised:
        launcher.launch(request(tmp_path))
    assert (error is LaunchUnavailable) == isinstance(raised.value, LaunchUnavailable)
    assert str(code) in str(raised.value)


def test_an_unreachable_api_is_retryable(tmp_path: Path) -> None:
    with serve(lambda req: Answer(500)) as api:
        dead = api.url                                # closed once the block ends
    launcher = launcher_for(tmp_path, StandIn(dead, []))
    with pytest.raises(LaunchUnavailable, match="unreachable"):
        launcher.launch(request(tmp_path))
    with pytest.raises(LaunchUnavailable, match="unreachable"):
        launcher.status("churn-cycle-x-1", 1)


def test_incomplete_settings_are_one_line_usage_errors(tmp_path: Path) -> None:
    base: dict[str, Any] = {"home": tmp_path, "controller_launcher": "kubernetes"}
    config = kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")
    with pytest.raises(UsageError, match="KUBERNETES_IMAGE") as no_image:
        make_launcher(ControllerSettings(**base, controller_kubernetes_kubeconfig=config),
                      client=None)  # type: ignore[arg-type]
    missing = tmp_path / "nothing.yaml"
    with pytest.raises(UsageError, match="cannot configure") as no_config:
        api_client(missing, in_cluster=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Deployment\n")
    with pytest.raises(UsageError, match="not a Job or CronJob") as wrong_kind:
        make_launcher(ControllerSettings(**base, controller_kubernetes_job_template=str(bad)),
                      client=None)  # type: ignore[arg-type]
    for raised in (no_image, no_config, wrong_kind):
        assert "\n" not in str(raised.value)


def test_a_failed_job_is_retried_up_to_the_attempt_limit_then_the_cycle_fails(
        cluster: tuple[Cluster, StandIn], tmp_path: Path, churn_spec: DatasetSpec) -> None:
    """Through the controller core (tests/unit/controller_harness.py): each failed Job
    (BackoffLimitExceeded, the container exited 1) is a retryable failure; attempt 2 is a new
    Job; after the third the cycle ends failed with the Job's reason recorded."""
    state, api = cluster
    world = make_world(tmp_path, churn_spec, controller_training_attempts=3)
    world.controller.launcher = launcher_for(tmp_path, api)
    # reconcile writes <home>/controller/data/<cycle>.window.json without making the folder
    # when the log holds no recent rows (reported; not this launcher's)
    (world.settings.home_dir / "controller" / "data").mkdir(parents=True)
    world.store.add_trigger(model="churn", source="manual", action="retrain", reason="go",
                            now=pd.Timestamp.now(tz="UTC").to_pydatetime())
    for _ in range(6):
        world.controller.reconcile_once()
        for name, job in list(state.jobs.items()):
            if not job["status"]:
                state.pod(name, terminated={"exitCode": 1, "reason": "Error",
                                            "message": "DataError: no rows",
                                            "finishedAt": "2026-12-02T08:10:00Z"})
                state.finish(name, "Failed", "BackoffLimitExceeded",
                             "Job has reached the specified backoff limit")
        if world.controller.load("churn")[0].phase == "failed":
            break

    model, _ = world.controller.load("churn")
    assert model.phase == "failed" and model.last_outcome == "failed"
    cycle_id = model.cycle.id if model.cycle else ""
    assert sorted(state.jobs) == sorted(job_name(cycle_id, a) for a in (1, 2, 3))
    assert len(api.calls("POST")) == 3
    (decision,) = world.registry.list_decisions("churn")
    assert decision.outcome == "failed"
    text = " ".join(decision.reasons)
    assert "BackoffLimitExceeded" in text and "attempt 3 of 3" in text
    assert "exited with 1" in text and "attempt 3 of 3" in text, text


def test_the_spec_path_a_job_gets_is_the_mounted_one_not_its_symlink_target(
        tmp_path: Path) -> None:
    """A ConfigMap volume holds ``churn.yaml -> ..data/churn.yaml -> ..<timestamp>/churn.yaml``;
    the Job's own mount has another timestamp, so the launcher passes the path as mounted."""
    from controller.parts import load_models

    spec = Path(__file__).resolve().parents[2] / "examples" / "churn" / "spec.yaml"
    mounted = tmp_path / "specs"
    (mounted / "..2026_12_02_08_00_00.1").mkdir(parents=True)
    (mounted / "..2026_12_02_08_00_00.1" / "churn.yaml").write_text(spec.read_text())
    (mounted / "..data").symlink_to("..2026_12_02_08_00_00.1")
    (mounted / "churn.yaml").symlink_to("..data/churn.yaml")
    settings = ControllerSettings(home=tmp_path, controller_specs=str(mounted / "churn.yaml"))
    (managed,) = load_models(settings).values()
    assert managed.spec_path == mounted / "churn.yaml"
