"""A real ``mlflow server`` killed while the controller records a decision, then restarted.

The controller is built as ``controller.parts.build_controller`` builds it (the real MLflow
registry over HTTP, the real store and prediction log), with a launcher that registers the
trained version at once and a gate that says promote. The server is killed (SIGKILL) between
the decision run's creation and the logging of its record, the moment that once left a model
in ``deciding`` forever. Passes while it is down fail as retryable; once it is back the cycle
finishes with exactly one complete decision run and the aliases a promotion implies, and a
``POST /retrain`` starts a new cycle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.launcher import LaunchRequest, LaunchStatus
from controller.machine import GateDecision
from controller.parts import build_controller
from controller.settings import ControllerSettings
from kernel.spec import DatasetSpec
from registry import TAG_PREFIX
from registry.mlflow_registry import MlflowRegistry
from registry.port import DECISIONS_EXPERIMENT
from tests.unit.controller_harness import AUTH, TOKEN, SyncClient
from tests.unit.test_registry_contract import new_version_factory  # noqa: F401

pytestmark = pytest.mark.slow


class Server:
    """``mlflow server`` on 127.0.0.1 over one sqlite file: start, kill -9, start again."""

    def __init__(self, tmp: Path) -> None:
        from driftloop.processes import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store = f"sqlite:///{tmp / 'mlflow.db'}"
        self.artifacts = str(tmp / "artifacts")
        self.log = tmp / "mlflow-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.store,
                 "--default-artifact-root", self.artifacts, "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the server's whole process group (it runs workers), and wait for it."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    s.start()
    try:
        yield s
    finally:
        if s.proc is not None:
            s.kill()


class RegisteringLauncher:
    """Training that registers the version tagged with the cycle id at once."""

    def __init__(self, registry: MlflowRegistry, make: Any) -> None:
        self.registry = registry
        self.make = make

    def launch(self, request: LaunchRequest) -> str:
        self.registry.register(self.make(request.model,
                                         **{TAG_PREFIX + "cycle_id": request.cycle_id}))
        return "registered"

    def status(self, cycle_id: str, attempt: int) -> LaunchStatus:
        return LaunchStatus("exited", 0)


class PromotingGate:
    def evaluate(self, spec: DatasetSpec, challenger: int, *, shadow_since: datetime,
                 holdout_from: datetime | None, now: datetime,
                 evidence: str | None = None) -> tuple[GateDecision, int | None]:
        return GateDecision("promote", ("better on n=500",), spec.metric, 500, evidence="shadow",
                            champion_metric=0.70, challenger_metric=0.75, difference=0.05,
                            ci_low=0.02, ci_high=0.08, margin=0.01), 1


def test_the_cycle_finishes_after_mlflow_dies_mid_record(
        server: Server, tmp_path: Path, unique_model_spec: DatasetSpec,
        new_version_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    name = unique_model_spec.model_name
    history = tmp_path / "history.csv"
    history.write_text("placeholder")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(unique_model_spec.model_copy(
        update={"history": [str(history)], "source": None}).to_yaml())
    settings = ControllerSettings(home=tmp_path / "home", tracking_uri=server.url,
                                  artifact_root=server.artifacts, controller_token=TOKEN,
                                  controller_specs=str(spec_path), controller_recent_days=0,
                                  controller_evaluate_every_seconds=0)
    registry = MlflowRegistry(server.url, artifact_root=server.artifacts)
    champion = registry.register(new_version_factory(name))
    registry.set_alias(name, "champion", champion.version)
    parts = build_controller(settings, registry=registry,
                             launcher=RegisteringLauncher(registry, new_version_factory))
    controller = parts.controller
    controller.evaluator = PromotingGate()  # type: ignore[assignment]

    # the server dies after the decision run is created, before its record is logged
    complete = registry._complete_decision
    killed: list[str] = []

    def die_first(run_id: str, record: Any) -> Any:
        if not killed:
            killed.append(run_id)
            server.kill()
        return complete(run_id, record)

    monkeypatch.setattr(registry, "_complete_decision", die_first)
    parts.store.add_trigger(model=name, source="manual", action="retrain", reason="go",
                            now=controller.clock())

    for _ in range(6):
        controller.reconcile_once()
        if killed:
            break
    assert killed, controller.load(name)[0]
    state = controller.load(name)[0]
    assert state.phase == "deciding" and state.cycle is not None
    cycle_id = state.cycle.id
    errors = controller.errors
    controller.reconcile_once()                 # down: retryable, the state stays
    assert controller.errors == errors + 1
    assert controller.load(name)[0].phase == "deciding"

    server.start()
    for _ in range(5):
        controller.reconcile_once()
        if controller.load(name)[0].phase == "cooldown":
            break
    state = controller.load(name)[0]
    assert state.phase == "cooldown" and state.last_outcome == "promoted", state

    from mlflow import MlflowClient

    client = MlflowClient(server.url)
    found = client.get_experiment_by_name(DECISIONS_EXPERIMENT)
    assert found is not None
    exp = found.experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.`{TAG_PREFIX}cycle_id` = '{cycle_id}'")
    assert [r.info.run_id for r in runs] == killed            # the interrupted run, completed
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert TAG_PREFIX + "record" in run.data.tags and run.data.metrics
    assert [(d.cycle_id, d.outcome) for d in registry.list_decisions(name)] == \
        [(cycle_id, "promoted")]
    assert registry.aliases(name) == {"champion": 2, "previous": 1}
    assert [d["cycle_id"] for d in parts.store.decisions_of(name)] == [cycle_id]

    # and a manual retrain afterwards starts a new cycle
    app_client = SyncClient(_app(settings, parts))
    try:
        answer = app_client.post("/retrain", json={"reason": "after the outage", "model": name},
                                 headers=AUTH)
    finally:
        app_client.close()
    assert answer.status_code in (200, 202), answer.text
    controller.reconcile_once()
    state = controller.load(name)[0]
    assert state.cycle is not None and state.cycle.id != cycle_id
    assert state.phase in ("training", "shadow", "deciding", "cooldown")
    assert len(registry.find_versions(name, {TAG_PREFIX + "cycle_id": state.cycle.id})) == 1
    parts.client.close()
    parts.store.close()


def _app(settings: ControllerSettings, parts: Any) -> Any:
    from controller.app import create_app

    return create_app(settings, parts=parts, run_loop=False, manual_wait_seconds=0.05)
