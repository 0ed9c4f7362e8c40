"""The loop end to end, with the real alerting stack.

Prometheus scrapes the serving app, a shipped rule fires from real metrics, Alertmanager
delivers the webhook to the controller, the controller retrains with a real `driftloop
train` process, serving shadows the challenger on live traffic, labels arrive through
/feedback, the gate decides, and either the alias moves and serving follows it without a
failed request, or (a worse challenger) nothing moves.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from driftloop.processes import driftloop_command
from monitoring.predlog import LogStore, PredictionLogReader
from tests.conftest import CHURN_SPEC
from tests.e2e.stack import Stack
from training.generate import Scenario, generate

pytestmark = pytest.mark.timeout(600)


class Traffic:
    """Clients on a thread: /predict for every row, /feedback with the labels a moment later."""

    def __init__(self, serving_url: str, frame: pd.DataFrame, feedback_token: str) -> None:
        self.url = serving_url
        self.feedback = {"Authorization": f"Bearer {feedback_token}"}
        self.frame = frame
        self.features = [c for c in frame.columns if c not in ("customer_id", "ts", "churned")]
        self.failed: list[str] = []
        self.answered = 0
        self.versions: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def _run(self) -> None:
        records = self.frame[self.features].to_dict("records")
        labels = self.frame["churned"].tolist()
        pending: list[dict] = []
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                k = i % len(records)
                rid = f"e2e-{i}"
                try:
                    resp = client.post(f"{self.url}/predict", json={**records[k], "request_id": rid})
                except httpx.HTTPError as exc:
                    self.failed.append(f"{type(exc).__name__}: {exc}")
                else:
                    if resp.status_code != 200:
                        self.failed.append(f"{resp.status_code}: {resp.text[:200]}")
                    else:
                        self.answered += 1
                        self.versions[resp.json()["model_version"]] += 1
                        pending.append({"request_id": rid, "label": int(labels[k])})
                if len(pending) >= 50:
                    resp = client.post(f"{self.url}/feedback", json={"labels": pending},
                                       headers=self.feedback)
                    assert resp.status_code == 202, resp.text
                    pending = []
                i += 1
                time.sleep(0.004)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def wait_for(check, timeout: float, what: str, stack: Stack, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    status = stack.status()
    logs = "\n".join(f"--- {c.name}\n{c.tail(15)}" for c in stack.group.children)
    raise AssertionError(f"timed out waiting for {what}; controller status: {status}\n{logs}")


def train(home_env: dict[str, str], spec: Path, data: Path) -> None:
    import subprocess

    subprocess.run(driftloop_command("train", "--spec", str(spec), "--data", str(data),
                                     "--alias", "champion", "--tag", "trigger=bootstrap"),
                   env={**__import__("os").environ, **home_env}, check=True, capture_output=True)


def with_unseen_category(frame: pd.DataFrame, share: float = 0.3) -> pd.DataFrame:
    out = frame.copy()
    out.loc[out.index[:: int(1 / share)], "payment_method"] = "crypto-wallet"
    return out


def build(tmp_path: Path, *, spec_text: str, controller_env: dict[str, str]) -> tuple[Stack, Path]:
    home = tmp_path / "home"
    home.mkdir()
    history = generate(4, rows_per_day=600, seed=21)
    history_path = home / "history.parquet"
    history.to_parquet(history_path, index=False)
    first_spec = home / "first-spec.yaml"
    first_spec.write_text(CHURN_SPEC.read_text() + "history: [history.parquet]\n")
    env = {"DRIFTLOOP_HOME": str(home), "MLFLOW_TRACKING_URI": ""}
    train(env, first_spec, history_path)
    controller_spec = home / "spec.yaml"
    controller_spec.write_text(spec_text + "history: [history.parquet]\n")
    stack = Stack(tmp_path, controller_spec, controller_env={
        # retrain on the recent production rows only (the history is months old) and judge
        # the challenger on live shadow traffic: no offline holdout
        "DRIFTLOOP_CONTROLLER_RETRAIN_WINDOW_DAYS": "0.02",
        "DRIFTLOOP_CONTROLLER_HOLDOUT_FRACTION": "0",
        "DRIFTLOOP_CONTROLLER_OFFLINE_REPLAY": "false",
        **controller_env})
    stack.env.update(env)
    return stack.start(), home


def shadow_rows(home: Path, version: int) -> int:
    from datetime import UTC, datetime, timedelta

    reader = PredictionLogReader(LogStore(home / "log"))
    now = datetime.now(UTC)
    frame = reader.window("churn", now - timedelta(hours=1), now + timedelta(minutes=1))
    return int((frame["shadow_version"] == version).sum())


def test_alert_to_promotion_with_the_real_alerting_stack(tmp_path: Path):
    stack, home = build(tmp_path, spec_text=CHURN_SPEC.read_text(), controller_env={})
    try:
        # Production changed: the label process moved (concept drift) and a payment method the
        # model never saw appears. Prometheus sees the unseen categories; a retrain on the
        # recent labelled rows learns the new world.
        live = generate(6, rows_per_day=600, seed=22, scenario=Scenario("concept", 0))
        traffic = Traffic(stack.serving_url, with_unseen_category(live),
                          stack.feedback_token).start()
        try:
            alert = wait_for(lambda: [a for a in stack.prometheus_alerts()
                                      if a["labels"]["alertname"] == "DriftloopUnseenCategoryRate"
                                      and a["state"] == "firing"], 120, "the alert", stack)
            assert alert[0]["labels"]["driftloop_action"] == "retrain"
            assert alert[0]["labels"]["model"] == "churn"
            wait_for(lambda: stack.controller_metric("driftloop_controller_triggers_total",
                                                     source="alertmanager") >= 1, 60,
                     "Alertmanager's webhook at the controller", stack)
            decision = wait_for(lambda: (stack.status()["last_decisions"] or [None])[0], 400,
                                "a gate decision", stack, interval=2)
            assert decision["outcome"] == "promoted", decision
            assert decision["evidence"] == "shadow"
            assert decision["challenger_version"] == 2 and decision["champion_version"] == 1
            assert decision["n"] >= 300 and decision["ci_low"] >= -decision["margin"]
            assert any("alertmanager" in t for t in decision["triggers"]), decision["triggers"]
            wait_for(lambda: (stack.model()["champion"] or {}).get("version") == 2, 60,
                     "serving on version 2", stack)
            served_before = traffic.versions[2]
            wait_for(lambda: traffic.versions[2] > served_before + 50, 60,
                     "requests answered by version 2", stack)
        finally:
            traffic.stop()
        assert traffic.failed == [], traffic.failed[:5]
        assert traffic.versions[1] > 0 and traffic.versions[2] > 0
        assert shadow_rows(home, 2) >= decision["n"]
        status = stack.status()
        assert status["aliases"]["champion"] == 2 and status["aliases"]["previous"] == 1
        assert "challenger" not in status["aliases"]
    finally:
        stack.stop()


def test_a_challenger_without_the_champions_features_moves_nothing(tmp_path: Path):
    # The controller retrains from a spec that only knows one weak feature: its challenger
    # would refuse every request carrying the others (unknown fields), so the gate rejects
    # it for its schema before counting pairs, and clients never see a 422.
    weak = yaml.safe_load(CHURN_SPEC.read_text())
    weak["features"] = {"numerical": ["total_charges"], "categorical": []}
    stack, home = build(tmp_path, spec_text=yaml.safe_dump(weak, sort_keys=False),
                        controller_env={})
    try:
        live = generate(6, rows_per_day=600, seed=23)
        traffic = Traffic(stack.serving_url, with_unseen_category(live),
                          stack.feedback_token).start()
        try:
            decision = wait_for(lambda: (stack.status()["last_decisions"] or [None])[0], 400,
                                "a gate decision", stack, interval=2)
        finally:
            traffic.stop()
        assert decision["outcome"] == "rejected", decision
        assert decision["n"] == 0, decision
        assert any("would refuse requests champion v1 accepts" in r and
                   "allow_schema_change='dropped:tenure_months," in r
                   for r in decision["reasons"]), decision["reasons"]
        assert traffic.failed == [], traffic.failed[:5]
        assert set(traffic.versions) == {1}
        status = stack.status()
        assert status["aliases"].get("champion") == 1 and "previous" not in status["aliases"]
        assert (stack.model()["champion"] or {}).get("version") == 1
        assert shadow_rows(home, 2) >= decision["n"]
    finally:
        stack.stop()
