"""The real controller process on a real MLflow sqlite store with the local launcher (a real
``driftloop train`` subprocess on small data): a storm of identical notifications starts one
retrain, a better challenger is promoted, a worse one never is, and a controller killed with
SIGKILL at each state resumes to exactly one decision and a consistent registry."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from driftloop.processes import free_port
from kernel.settings import CommonSettings
from kernel.spec import DatasetSpec
from monitoring.predlog import LogStore, PredictionLogWriter
from registry import TAG_PREFIX
from registry.mlflow_registry import MlflowRegistry
from training.generate import Scenario, generate
from training.train import train

TOKEN = "test-token"


@dataclass
class World:
    home: Path
    spec_path: Path
    model: str
    registry: MlflowRegistry
    champion: int


def build_world(tmp_path: Path, spec: DatasetSpec, *, champion_world: str,
                controller_features: list[str] | None = None) -> World:
    """Old-world history for retrains, a champion, and 2,000 labelled concept-drifted rows in
    the prediction log scored by that champion."""
    home = tmp_path / "home"
    settings = CommonSettings(home=home)
    now = datetime.now(UTC)
    model = f"ctl-{uuid.uuid4().hex[:8]}"
    history = generate(4, rows_per_day=750, seed=1, start=now - timedelta(days=10))
    history_path = tmp_path / "history.parquet"
    history.to_parquet(history_path, index=False)
    base = spec.model_copy(update={"model_name": model})
    registry = MlflowRegistry.from_settings(settings)
    if champion_world == "old":
        champion_data = history_path
    else:
        frame = generate(3, scenario=Scenario("concept", 0), rows_per_day=1000, seed=3,
                         start=now - timedelta(days=20))
        champion_data = tmp_path / "champion.parquet"
        frame.to_parquet(champion_data, index=False)
    result = train(base, [champion_data], registry, alias="champion")
    recent = generate(2, scenario=Scenario("concept", 0), rows_per_day=1000, seed=2,
                      start=now - timedelta(days=2, hours=1))
    bundle = registry.download(model, result.version.version, tmp_path / "champion-bundle")
    fitted = registry.load_model(bundle)
    scores = fitted.predict_proba(recent[base.features.all])[:, 1]
    writer = PredictionLogWriter(LogStore(settings.resolved_log_uri))
    for row, score in zip(recent.to_dict("records"), scores, strict=True):
        writer.append({"ts": row["ts"].floor("us").to_pydatetime(), "request_id": row["customer_id"],
                       "model_name": model, "model_version": result.version.version,
                       "score": float(score), "prediction": int(score >= 0.5),
                       "shadow_version": None, "shadow_score": None, "latency_ms": 1.0,
                       **{c: row[c] for c in base.features.all}})
        writer.append_label(row["customer_id"], row["churned"], model=model)
    writer.close()
    data = base.model_dump(mode="json", exclude_none=True)
    data["history"] = [str(history_path)]
    if controller_features is not None:
        data["features"] = {"numerical": controller_features, "categorical": []}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    return World(home, spec_path, model, registry, result.version.version)


class ControllerProcess:
    def __init__(self, world: World, tmp_path: Path, *, crash_at: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "DRIFTLOOP_HOME": str(world.home),
               "DRIFTLOOP_CONTROLLER_TOKEN": TOKEN,
               "DRIFTLOOP_CONTROLLER_SPECS": str(world.spec_path),
               "DRIFTLOOP_CONTROLLER_TICK_SECONDS": "0.5",
               "DRIFTLOOP_CONTROLLER_LEASE_SECONDS": "2",
               "DRIFTLOOP_CONTROLLER_EVALUATE_EVERY_SECONDS": "0.5",
               "DRIFTLOOP_CONTROLLER_RECENT_DAYS": "3",
               "DRIFTLOOP_CONTROLLER_RETRAIN_WINDOW_DAYS": "3",
               "DRIFTLOOP_CONTROLLER_BOOTSTRAP": "400",
               "DRIFTLOOP_LOG_LEVEL": "INFO"}
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("DRIFTLOOP_CONTROLLER_CRASH_AT", None)
        if crash_at:
            env["DRIFTLOOP_CONTROLLER_CRASH_AT"] = crash_at
        self.log = tmp_path / f"controller-{crash_at or 'final'}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "driftloop.cli", "controller", "--port", str(self.port)],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and crash_at:
                return  # the crash hook may fire before the first request is served
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("controller did not come up: " + self.log.read_text()[-3000:])

    def status(self, model: str) -> dict:
        return httpx.get(self.url + "/status", timeout=10).json()[model]

    def wait_done(self, model: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.status(model)
            if info["state"] in ("cooldown", "failed"):
                return info
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.5)
        raise AssertionError(f"no decision in {timeout}s: {info}\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def notification(model: str, fingerprint: str = "f00d", action: str = "retrain") -> dict:
    starts = "2026-03-01T10:00:00Z"
    alert = {"status": "firing", "labels": {"alertname": "DriftlootDrift", "model": model,
                                            "driftloop_action": action, "severity": "page"},
             "annotations": {"summary": "drift share 0.6"}, "startsAt": starts,
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph",
             "fingerprint": fingerprint}
    return {"receiver": "driftloop", "status": "firing", "alerts": [alert],
            "groupLabels": {"alertname": "DriftlootDrift"}, "commonLabels": alert["labels"],
            "commonAnnotations": alert["annotations"], "externalURL": "http://am",
            "version": "4", "groupKey": "{}:{alertname=\"DriftlootDrift\"}",
            "truncatedAlerts": 0}


async def storm(url: str, body: dict, copies: int) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    # keep-alive shorter than uvicorn's 5 s: never reuse a connection the server is closing
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=1)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        return await asyncio.gather(*(client.post(url + "/webhooks/alertmanager", json=body,
                                                  headers=headers) for _ in range(copies)))


def decisions_of(world: World) -> list:
    return world.registry.list_decisions(world.model)


def test_storm_starts_one_retrain_and_a_better_challenger_is_promoted(
        tmp_path: Path, churn_spec: DatasetSpec) -> None:
    world = build_world(tmp_path, churn_spec, champion_world="old")
    ctl = ControllerProcess(world, tmp_path)
    try:
        unauthorised = httpx.post(ctl.url + "/webhooks/alertmanager", json=notification(world.model))
        assert unauthorised.status_code == 401
        responses = asyncio.run(storm(ctl.url, notification(world.model), 500))
        assert {r.status_code for r in responses} == {200}
        answers = [r.json() for r in responses]
        assert sum(a["accepted"] for a in answers) == 1
        assert sum(a["duplicates"] for a in answers) == 499
        info = ctl.wait_done(world.model)
        metrics = httpx.get(ctl.url + "/metrics").text
    finally:
        ctl.stop()
    assert info["state"] == "cooldown", info
    aliases = world.registry.aliases(world.model)
    trained = world.registry.find_versions(world.model, {TAG_PREFIX + "cycle_id": info["cycle"]["id"]})
    assert len(trained) == 1                          # exactly one retrain
    new = trained[0].version
    assert aliases == {"champion": new, "previous": world.champion}
    decisions = decisions_of(world)
    assert len(decisions) == 1
    d = decisions[0]
    assert (d.kind, d.outcome, d.evidence) == ("gate", "promoted", "offline_replay")
    assert d.n >= 200 and d.ci_low >= -d.margin and d.challenger_metric > d.champion_metric
    assert d.champion_version == world.champion and d.new_champion_version == new
    tags = world.registry.get_version(world.model, new).tags
    assert tags[TAG_PREFIX + "decision"] == "promoted"
    assert float(tags[TAG_PREFIX + "gate_ci_low"]) == pytest.approx(d.ci_low, abs=1e-6)
    old_tags = world.registry.get_version(world.model, world.champion).tags
    assert old_tags[TAG_PREFIX + "replaced_by"] == str(new)
    assert 'driftloop_controller_triggers_total{outcome="duplicate",source="alertmanager"} 499.0' \
        in metrics
    assert 'driftloop_controller_triggers_total{outcome="started",source="alertmanager"} 1.0' \
        in metrics
    assert f'driftloop_controller_cycles_total{{model="{world.model}",outcome="promoted"}} 1.0' \
        in metrics


def test_a_challenger_without_the_champions_features_is_never_promoted(
        tmp_path: Path, churn_spec: DatasetSpec) -> None:
    # The champion knows the new world with every feature; the retrain sees one of them
    # (tenure: better than chance, so not refused as useless, but clearly worse). Serving
    # would refuse every request carrying the others (unknown fields): the gate rejects it
    # for its schema before counting any pairs (controller/compat.py).
    world = build_world(tmp_path, churn_spec, champion_world="concept",
                        controller_features=["tenure_months"])
    ctl = ControllerProcess(world, tmp_path)
    try:
        answer = httpx.post(ctl.url + "/retrain", json={"reason": "try it", "actor": "test"},
                            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert answer.status_code in (200, 202), answer.text
        info = ctl.wait_done(world.model)
    finally:
        ctl.stop()
    assert info["state"] == "cooldown"
    aliases = world.registry.aliases(world.model)
    assert aliases == {"champion": world.champion}    # untouched, challenger cleared
    (d,) = decisions_of(world)
    assert (d.outcome, d.evidence, d.n) == ("rejected", "offline_replay", 0)
    assert any("would refuse requests champion" in r and "'support_tickets' dropped" in r
               and "allow_schema_change=" in r for r in d.reasons), d.reasons
    assert d.triggers == ("manual: try it",)
    rejected = world.registry.get_version(world.model, d.challenger_version).tags
    assert rejected[TAG_PREFIX + "decision"] == "rejected"


def test_killed_at_each_state_resumes_to_one_decision(tmp_path: Path,
                                                      churn_spec: DatasetSpec) -> None:
    world = build_world(tmp_path, churn_spec, champion_world="old")
    points = ["launched", "shadow", "deciding", "promoting", "recorded"]
    for i, point in enumerate(points):
        ctl = ControllerProcess(world, tmp_path, crash_at=point)
        if i == 0:
            assert ctl.proc.poll() is None
            response = httpx.post(ctl.url + "/webhooks/alertmanager",
                                  json=notification(world.model),
                                  headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.json()["accepted"] == 1
        code = ctl.proc.wait(timeout=120)
        assert code == -signal.SIGKILL, f"{point}: {ctl.log.read_text()[-2000:]}"
        assert f"crash hook {point}" in ctl.log.read_text()
    ctl = ControllerProcess(world, tmp_path)
    try:
        # the notification delivered again after all that acts no more
        again = httpx.post(ctl.url + "/webhooks/alertmanager", json=notification(world.model),
                           headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert again["duplicates"] == 1
        info = ctl.wait_done(world.model)
    finally:
        ctl.stop()
    cycle_id = info["cycle"]["id"]
    trained = world.registry.find_versions(world.model, {TAG_PREFIX + "cycle_id": cycle_id})
    assert len(trained) == 1                            # no second retrain
    decisions = decisions_of(world)
    assert [(d.cycle_id, d.outcome) for d in decisions] == [(cycle_id, "promoted")]
    assert world.registry.aliases(world.model) == {"champion": trained[0].version,
                                                    "previous": world.champion}
    assert info["last_decisions"][0]["cycle_id"] == cycle_id
    logs = sorted((world.home / "logs").glob(f"train-{cycle_id}-*.log"))
    assert len(logs) == 1 and "registered" in logs[0].read_text()
    assert json.loads(json.dumps(info))["state"] == "cooldown"
    assert isinstance(pd.Timestamp(info["since"]), pd.Timestamp)
