"""The controller app with fakes: auth, Alertmanager intake, dedup, verdicts, manual commands.

In-memory SQLite state store, InMemoryRegistry, a launcher that only records
(tests/unit/controller_harness.py); the reconcile loop is stepped by hand.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kernel.spec import DatasetSpec
from tests.unit.controller_harness import AUTH, TOKEN, SyncClient, make_world


@pytest.fixture
def world(tmp_path: Path, churn_spec: DatasetSpec) -> dict:
    w = make_world(tmp_path, churn_spec)
    client = SyncClient(w.app())
    try:
        yield {"client": client, "store": w.store, "controller": w.controller,
               "launcher": w.launcher, "metrics": w.metrics}
    finally:
        client.close()
        w.store.close()


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


MALFORMED = [b"{not json", b"[" * 60_000, b'{"reason": "\xff\xfe"}', b"1" * 5000,
             b'{"version": ' + b"9" * 400 + b"}", b'{"reason": "\\ud800"}',
             b'{"reason": NaN}', b"", b"\x00"]


@pytest.mark.parametrize(("path", "body"), MUTATING)
@pytest.mark.parametrize("raw", [b"{not json", b"[" * 100_000])
def test_the_token_is_checked_before_the_body_is_read(world: dict, path: str, body: dict,
                                                      raw: bytes) -> None:
    assert world["client"].post(path, content=raw).status_code == 401
    huge = {"Authorization": "Bearer nope", "Content-Length": str(300 * 2**20)}
    assert world["client"].post(path, content=b"{}", headers=huge).status_code == 401


@pytest.mark.parametrize(("path", "body"), MUTATING)
@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_bodies_are_4xx_with_a_reason(world: dict, path: str, body: dict,
                                                raw: bytes) -> None:
    response = world["client"].post(path, content=raw, headers=AUTH)
    assert response.status_code in (400, 422), response.text
    assert response.json()["detail"]
    assert world["store"].triggers_of() == []


@pytest.mark.parametrize("path", ["/retrain", "/promote", "/rollback"])
def test_manual_bodies_keep_fastapis_422_shape(world: dict, path: str) -> None:
    response = world["client"].post(path, json={"reason": ""}, headers=AUTH)
    assert response.status_code == 422
    (first, *_) = response.json()["detail"]
    assert first["loc"][:2] == ["body", "reason"] and first["type"] == "string_too_short"
    huge = world["client"].post(path, content=b"{}", headers={**AUTH, "Content-Length": "64001"})
    assert huge.status_code == 413


def test_openapi_describes_every_body_and_answer(world: dict) -> None:
    from openapi_spec_validator import validate

    document = world["client"].get("/openapi.json").json()
    validate(document)
    paths = document["paths"]
    bodies = {"/webhooks/alertmanager": "AlertmanagerPayload", "/verdicts": "Verdict",
              "/retrain": "RetrainRequest", "/promote": "PromoteRequest",
              "/rollback": "RollbackRequest"}
    for path, model in bodies.items():
        operation = paths[path]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{model}"}
        assert {"200", "401", "413"} <= set(operation["responses"])
        assert model in document["components"]["schemas"]
    assert {"404", "409", "503"} <= set(paths["/promote"]["post"]["responses"])
    assert "$defs" not in json.dumps(document)
