"""The controller app with fakes: auth, Alertmanager intake, dedup, verdicts, manual commands.

In-memory SQLite state store, InMemoryRegistry, a launcher that only records; the reconcile loop
is stepped by hand.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from controller.app import Parts, create_app
from controller.evidence import Evaluator, ModelCache
from controller.launcher import LaunchRequest, LaunchStatus
from controller.metrics import ControllerMetrics
from controller.reconcile import Controller, Managed
from controller.settings import ControllerSettings
from controller.store import Store
from kernel.spec import DatasetSpec
from monitoring.predlog import open_log
from registry.memory import InMemoryRegistry

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class SyncClient:
    """The app in process over httpx.ASGITransport, lifespan included, driven synchronously."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._call(self._enter())

    async def _enter(self) -> None:
        self.lifespan = self.app.router.lifespan_context(self.app)
        await self.lifespan.__aenter__()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                        base_url="http://controller")

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self._call(self.client.post(path, **kw))

    def get(self, path: str) -> httpx.Response:
        return self._call(self.client.get(path))

    def close(self) -> None:
        self._call(self.client.aclose())
        self._call(self.lifespan.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class RecordingLauncher:
    def __init__(self) -> None:
        self.requests: list[LaunchRequest] = []

    def launch(self, request: LaunchRequest) -> str:
        self.requests.append(request)
        return "recorded"

    def status(self, cycle_id: str, attempt: int) -> LaunchStatus:
        return LaunchStatus("running")


@pytest.fixture
def world(tmp_path: Path, churn_spec: DatasetSpec) -> dict:
    history = tmp_path / "history.csv"
    history.write_text("placeholder")
    spec = churn_spec.model_copy(update={"history": [str(history)], "source": None})
    settings = ControllerSettings(home=tmp_path / "home", controller_token=TOKEN,
                                  controller_recent_days=0, controller_max_body_bytes=64_000)
    store = Store("sqlite://")
    registry = InMemoryRegistry()
    launcher = RecordingLauncher()
    _, reader = open_log(tmp_path / "log")
    metrics = ControllerMetrics.create()
    controller = Controller(settings, store=store, registry=registry, launcher=launcher,
                            reader=reader, evaluator=Evaluator(registry, reader, ModelCache(
                                registry, tmp_path / "bundles")),
                            models={"churn": Managed(spec, tmp_path / "spec.yaml")},
                            metrics=metrics)
    parts = Parts(controller, store, metrics, client=None)  # type: ignore[arg-type]
    app = create_app(settings, parts=parts, run_loop=False, manual_wait_seconds=0.05)
    client = SyncClient(app)
    try:
        yield {"client": client, "store": store, "controller": controller, "launcher": launcher,
               "metrics": metrics}
    finally:
        client.close()
        store.close()


def alert(*, status: str = "firing", fingerprint: str = "abc", action: str = "retrain",
          model: str = "churn", starts: str = "2026-03-01T10:00:00Z") -> dict:
    return {"status": status, "labels": {"alertname": "ChurnDrift", "model": model,
                                         "driftloop_action": action},
            "annotations": {"summary": "drift"}, "startsAt": starts,
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": fingerprint}


def payload(*alerts: dict, version: str = "4") -> dict:
    return {"version": version, "status": "firing", "receiver": "driftloop", "groupKey": "{}",
            "truncatedAlerts": 0, "alerts": list(alerts), "groupLabels": {},
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am"}


MUTATING = [("/webhooks/alertmanager", payload(alert())), ("/verdicts", {}),
            ("/retrain", {"reason": "x"}), ("/promote", {"reason": "x", "version": 1}),
            ("/rollback", {"reason": "x"})]


@pytest.mark.parametrize(("path", "body"), MUTATING)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_mutating_endpoints_need_the_token_and_change_nothing(world: dict, path: str, body: dict,
                                                              headers: dict) -> None:
    response = world["client"].post(path, json=body, headers=headers)
    assert response.status_code == 401
    assert world["store"].triggers_of() == []
    assert world["store"].count_notifications() == 0


@pytest.mark.parametrize(("body", "reason"), [
    (b"{not json", "malformed JSON"),
    (json.dumps(payload(alert(), version="3")).encode(), "unsupported Alertmanager payload "
                                                         "version '3'"),
    (json.dumps({**payload(alert()), "alerts": [{"status": "firing"}]}).encode(), "alerts.0"),
    (b"[]", "must be a JSON object"),
])
def test_malformed_notifications_are_400_with_a_reason(world: dict, body: bytes,
                                                      reason: str) -> None:
    response = world["client"].post("/webhooks/alertmanager", content=body, headers=AUTH)
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert world["store"].triggers_of() == []


@pytest.mark.parametrize("path", ["/webhooks/alertmanager", "/verdicts"])
def test_huge_bodies_are_413_and_change_nothing(world: dict, path: str) -> None:
    many = payload(*[alert(fingerprint=f"f{i}") for i in range(2000)])
    response = world["client"].post(path, json=many, headers=AUTH)
    assert response.status_code == 413
    assert "over the limit" in response.json()["detail"]
    assert world["store"].triggers_of() == []
    assert world["store"].count_notifications() == 0


def test_same_alert_acts_once_and_resolved_never_triggers(world: dict) -> None:
    client, store = world["client"], world["store"]
    first = client.post("/webhooks/alertmanager", json=payload(alert()), headers=AUTH).json()
    again = client.post("/webhooks/alertmanager", json=payload(alert()), headers=AUTH).json()
    assert (first["accepted"], again["accepted"], again["duplicates"]) == (1, 0, 1)
    resolved = client.post("/webhooks/alertmanager", json=payload(alert(status="resolved")),
                           headers=AUTH).json()
    assert resolved["resolved"] == 1
    other = client.post("/webhooks/alertmanager", json=payload(
        alert(fingerprint="n1", action="none"), alert(fingerprint="n2", model="unknown")),
        headers=AUTH).json()
    assert other["ignored"] == 2
    # a new firing of the same alert (new startsAt) is a new intent
    refire = client.post("/webhooks/alertmanager", json=payload(
        alert(starts="2026-03-02T10:00:00Z")), headers=AUTH).json()
    assert refire["accepted"] == 1
    assert store.count_notifications() == 5            # every raw body kept
    pending = store.pending_triggers("churn")
    assert len(pending) == 2
    state = world["controller"].step("churn")
    assert state.phase == "training"
    assert state.cycle.reasons == ("alertmanager: ChurnDrift (abc): drift",)
    (request,) = world["launcher"].requests
    assert request.cycle_id == state.cycle.id and request.attempt == 1
    rows = {r.id: r for r in store.triggers_of("churn")}
    assert rows[pending[0].id].outcome == "started"
    assert rows[pending[1].id].outcome == "ignored"    # same reason text: merged once
    metrics = client.get("/metrics").text
    assert 'driftloop_controller_triggers_total{outcome="duplicate",source="alertmanager"} 1.0' \
        in metrics
    assert 'driftloop_controller_state{model="churn",state="training"} 1.0' in metrics


def verdict(status: str = "drift", **perf: object) -> dict:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    body = {"model": "churn", "version": 3, "window_start": (now - timedelta(days=1)).isoformat(),
            "window_end": now.isoformat(), "created_at": now.isoformat(), "rows": 1000,
            "labelled_rows": 300, "status": status, "drift_share": 0.6,
            "drift_share_threshold": 0.3, "drifted_columns": ["monthly_charges"]}
    if perf:
        body["performance"] = {"metric": "roc_auc", "baseline": 0.8, "tolerance": 0.05,
                               "labelled_rows": 300, **perf}
    return body


def test_verdicts_trigger_and_export_gauges(world: dict) -> None:
    client = world["client"]
    answer = client.post("/verdicts", json=verdict(value=0.7, degraded=True), headers=AUTH)
    assert answer.status_code == 200 and answer.json()["accepted"] == 2
    metrics = client.get("/metrics").text
    assert 'driftloop_drift_share{model="churn"} 0.6' in metrics
    assert 'driftloop_verdict_status{model="churn",status="drift"} 1.0' in metrics
    assert 'driftloop_verdict_status{model="churn",status="ok"} 0.0' in metrics
    bad = client.post("/verdicts", content=b'{"model": 1}', headers=AUTH)
    assert bad.status_code == 400
    state = world["controller"].step("churn")
    assert state.phase == "training"
    assert set(state.cycle.sources) == {"performance", "verdict"}
    assert state.last_realised == (3, 0.7)


def test_manual_retrain_answers_and_status_shows_the_cycle(world: dict) -> None:
    client = world["client"]
    pending = client.post("/retrain", json={"reason": "page from on-call"}, headers=AUTH)
    assert pending.status_code == 202 and pending.json()["status"] == "pending"
    world["controller"].step("churn")
    row = world["store"].get_trigger(pending.json()["trigger_id"])
    assert (row.status, row.outcome) == ("done", "started")
    status = client.get("/status").json()["churn"]
    assert status["state"] == "training"
    assert status["cycle"]["reasons"] == ["manual: page from on-call"]
    assert client.post("/retrain", json={"reason": "x", "model": "nope"},
                       headers=AUTH).status_code == 404
    assert client.get("/healthz").json() == {"status": "ok", "models": ["churn"]}
