"""Prometheus rules, Alertmanager routing and the Grafana dashboard, checked by the real
tools: promtool (check + unit tests of every rule), amtool, and a real Prometheus scraping
a real serving process, against which every dashboard panel's query must return data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from driftloop.processes import free_port as _free_port
from kernel.settings import CommonSettings
from kernel.spec import DatasetSpec, spec_from_yaml
from monitoring import alerting
from monitoring.job import verdict_registry
from monitoring.verdict import Verdict
from registry import open_registry
from tests.conftest import require_binary
from training.generate import generate
from training.train import train

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted(alerting.RULES_DIR.glob("*.yml"))
TEST_FILES = sorted((alerting.PROMETHEUS_DIR / "tests").glob("*.yml"))


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule]   # recording rules: slo.yml


def test_rules_pass_promtool_check_and_every_unit_test() -> None:
    promtool = require_binary("promtool")
    _run(promtool, "check", "rules", *RULE_FILES)
    out = _run(promtool, "test", "rules", *TEST_FILES).stdout
    assert out.count("SUCCESS") == len(TEST_FILES)


def test_every_rule_is_actionable_and_unit_tested_firing_and_quiet() -> None:
    groups = {g["name"] for p in RULE_FILES for g in yaml.safe_load(p.read_text())["groups"]}
    assert groups == {"driftloop-ops", "driftloop-ml", "driftloop-slo"}
    tested: dict[str, list[bool]] = {}
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case["alert_rule_test"]:
                tested.setdefault(check["alertname"], []).append(bool(check["exp_alerts"]))
    for rule in _rules():
        name = rule["alert"]
        assert rule["for"], name
        if "severity" in rule["labels"]:
            assert rule["labels"]["severity"] in {"warning", "critical"}, name
        else:  # an SLO's alerts take it from its spec (page/ticket: critical/warning) by a join
            assert "group_left (severity, on_exhausted) driftloop_slo:" in rule["expr"], name
        assert rule["labels"]["driftloop_action"] in {"retrain", "rollback", "none"}, name
        assert "{{ $labels.model }}" in rule["annotations"]["summary"], name
        # aggregated by model (`up` has it from serving's scrape-target label)
        assert "by (model" in rule["expr"] or rule["expr"].startswith("up{"), name
        assert sorted(set(tested.get(name, []))) == [False, True], f"{name}: firing and quiet"


def test_shipped_and_rendered_configs_pass_promtool_and_amtool(tmp_path: Path) -> None:
    promtool, amtool = require_binary("promtool"), require_binary("amtool")
    _run(promtool, "check", "config", alerting.PROMETHEUS_DIR / "prometheus.yml")
    _run(amtool, "check-config", alerting.ALERTMANAGER_FILE)
    rendered = tmp_path / "prometheus.yml"
    alerting.render_prometheus_config("http://127.0.0.1:18000", "127.0.0.1:18001",
                                      "127.0.0.1:19093", 1, out=rendered, model="m1",
                                      pushgateway="127.0.0.1:19091")
    _run(promtool, "check", "config", rendered)
    config = yaml.safe_load(rendered.read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["driftloop-serving"]["static_configs"] == [
        {"targets": ["127.0.0.1:18000"], "labels": {"model": "m1"}}]
    assert jobs["driftloop-controller"]["static_configs"][0]["targets"] == ["127.0.0.1:18001"]
    assert config["global"]["scrape_interval"] == "1s"

    token = tmp_path / "token"
    token.write_text("not-in-the-config")
    am = tmp_path / "alertmanager.yml"
    alerting.render_alertmanager_config("127.0.0.1:8001", token_file=token, group_wait="1s",
                                        out=am)
    _run(amtool, "check-config", am)
    text = am.read_text()
    assert "not-in-the-config" not in text
    route = yaml.safe_load(text)["route"]["routes"][0]
    assert route["group_by"] == ["alertname", "model"] and route["group_wait"] == "1s"
    assert {"group_interval", "repeat_interval"} <= set(route)
    hook = yaml.safe_load(text)["receivers"][1]["webhook_configs"][0]
    assert hook["url"] == "http://127.0.0.1:8001/webhooks/alertmanager"
    assert hook["http_config"]["authorization"]["credentials_file"] == str(token)
    # the route takes exactly the alerts that carry driftloop_action
    for labels, receiver in (("driftloop_action=retrain model=m1", "driftloop-controller"),
                             ("driftloop_action=none", "driftloop-controller"),
                             ("severity=critical", "null"),
                             ("alertname=DriftloopSloFastBurn driftloop_action=none model=m1 "
                              "slo=auc severity=critical", "driftloop-controller")):
        out = _run(amtool, "config", "routes", "test", "--config.file", am, *labels.split())
        assert out.stdout.strip() == receiver, labels


# --- the dashboard against a real Prometheus -----------------------------------------------


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "wb") as sink:
        return subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def _wait_ready(prom_port: int, process: subprocess.Popen, log: Path) -> None:
    """Prometheus answers 503 to every API call until its TSDB is open: wait for /-/ready."""
    def ready() -> bool:
        assert process.poll() is None, log.read_text()[-2000:]
        try:
            return httpx.get(f"http://127.0.0.1:{prom_port}/-/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    _wait(ready, 60, "Prometheus ready")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def serving(unique_model_spec: DatasetSpec, settings: CommonSettings, home: Path,
            churn_file: Path) -> Iterator[tuple[str, str]]:
    """A real `driftloop serve` on a real MLflow store: a champion and a challenger."""
    spec = unique_model_spec
    registry = open_registry(settings)
    train(spec, [churn_file], registry, alias="champion")
    train(spec, [churn_file], registry, alias="challenger", seed=1)
    yield from _serve(spec, home)


@pytest.fixture
def ticket_serving(settings: CommonSettings, home: Path,
                   tmp_path: Path) -> Iterator[tuple[str, DatasetSpec]]:
    """A real `driftloop serve` of the example support-ticket model (text, multi-class)."""
    from training.generate_tickets import generate as tickets

    spec = spec_from_yaml((ROOT / "examples" / "tickets" / "spec.yaml").read_text())
    spec = spec.model_copy(update={"model_name": f"tickets-{uuid.uuid4().hex[:8]}"})
    data = tmp_path / "tickets.parquet"
    tickets(3, rows_per_day=600, seed=4).to_parquet(data, index=False)
    train(spec, [data], open_registry(settings), alias="champion")
    for url, _ in _serve(spec, home):
        yield url, spec


def _serve(spec: DatasetSpec, home: Path) -> Iterator[tuple[str, str]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(DRIFTLOOP_HOME=str(home), DRIFTLOOP_MODEL=spec.model_name)
    process = _spawn([sys.executable, "-m", "driftloop.cli", "serve", "--port", str(port)],
                     home / "serving.log", env)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, (home / "serving.log").read_text()[-2000:]
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        _wait(ready, 120, "serving ready")
        yield url, spec.model_name
    finally:
        _stop(process)


def _records(spec: DatasetSpec, n: int, seed: int) -> list[dict[str, Any]]:
    frame = generate(1, rows_per_day=n, seed=seed)
    out = []
    for i, row in enumerate(frame.to_dict("records")):
        record = {c: float(row[c]) for c in spec.features.numerical}
        record.update({c: str(row[c]) for c in spec.features.categorical})
        if i % 5 == 0:
            record["payment_method"] = "crypto-wallet"       # unseen category
        if i % 7 == 0:
            record["monthly_charges"] = record["monthly_charges"] * 100   # out of range
        out.append(record)
    return out


#: Panels of text and multi-class models: a churn model has no data for them (a ticket model
#: fills them, test_text_panels_have_data_from_a_real_prometheus).
TEXT_PANELS = frozenset({"Text out-of-distribution rate", "Predicted class share (multi-class)",
                         "Text length (characters), median and p95",
                         "Out-of-vocabulary share per text, mean"})


def _panel_queries(model: str) -> list[tuple[str, str]]:
    dashboard = json.loads(alerting.DASHBOARD_FILE.read_text())
    return [(panel["title"], target["expr"].replace("$model", model))
            for panel in dashboard["panels"] for target in panel["targets"]]


def test_text_panels_are_on_the_dashboard() -> None:
    assert {title for title, _ in _panel_queries("m")} >= TEXT_PANELS


def test_text_panels_have_data_from_a_real_prometheus(
        ticket_serving: tuple[str, DatasetSpec], tmp_path: Path) -> None:
    """The ticket model's requests (slang among them) reach every text panel, and the OOD
    panel counts the out-of-distribution texts it was sent."""
    from training.generate import Scenario
    from training.generate_tickets import generate as tickets

    prometheus = require_binary("prometheus")
    url, spec = ticket_serving
    model = spec.model_name
    frame = tickets(2, rows_per_day=100, seed=9, scenario=Scenario("slang", 0))
    records = [{c: row[c] for c in spec.features.all} for row in frame.to_dict("records")]
    prom_port = _free_port()
    config = tmp_path / "prometheus.yml"
    alerting.render_prometheus_config(url, None, None, 1, out=config, model=model)
    process = _spawn([prometheus, f"--config.file={config}",
                      f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                      f"--web.listen-address=127.0.0.1:{prom_port}"], tmp_path / "prom.log")
    api = f"http://127.0.0.1:{prom_port}/api/v1"
    queries = [(t, e) for t, e in _panel_queries(model) if t in TEXT_PANELS]
    try:
        _wait_ready(prom_port, process, tmp_path / "prom.log")
        pending = dict(queries)

        def all_panels_have_data() -> bool:
            assert process.poll() is None, (tmp_path / "prom.log").read_text()[-2000:]
            with httpx.Client(base_url=url, timeout=10) as client:
                for record in records[:40]:
                    answer = client.post("/predict", json=record)
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["prediction"] in spec.listed_classes
            for title, expr in list(pending.items()):
                try:
                    answer = httpx.get(f"{api}/query", params={"query": expr}, timeout=5).json()
                except httpx.TransportError:
                    return False
                assert answer["status"] == "success", (title, answer)
                if answer["data"]["result"]:
                    del pending[title]
            return not pending

        _wait(all_panels_have_data, 90, f"data in every text panel (still empty: {pending})")
        total = f'sum(driftloop_text_ood_total{{model="{model}"}})'
        ood = httpx.get(f"{api}/query", params={"query": total}).json()
        assert float(ood["data"]["result"][0]["value"][1]) > 0   # slang is out of distribution
    finally:
        _stop(process)


def test_every_dashboard_panel_has_data_from_a_real_prometheus(
        serving: tuple[str, str], unique_model_spec: DatasetSpec, tmp_path: Path) -> None:
    prometheus = require_binary("prometheus")
    url, model = serving
    # The controller's and the Pushgateway's series: the real metric definitions
    # (controller/metrics.py, the verdict gauges drift-check pushes), served by
    # prometheus_client stand-ins rather than whole processes.
    from controller.metrics import ControllerMetrics

    controller_registry = CollectorRegistry()
    metrics = ControllerMetrics.create(controller_registry)
    metrics.set_phase(model, "shadow")
    metrics.set_verdict(model, "drift", 0.43)
    metrics.last_decision.labels(model=model).set(time.time() - 3600)
    metrics.set_slo(model, "auc-7d", info={"metric": "roc_auc", "fast_burn": "page",
                                           "slow_burn": "ticket", "on_exhausted": "retrain"},
                    objective=0.91, budget=0.995, met=False, value=0.87, source="realised",
                    remaining=0.25, evaluated_at=time.time())
    from controller.holdout import instruments as holdout_instruments

    holdout_metric, holdout_errors = holdout_instruments(controller_registry)
    holdout_metric.labels(model=model, version="1").set(0.83)
    holdout_errors.labels(model=model).inc()
    now = datetime.now(UTC)
    verdict = Verdict(model=model, version=1, window_start=now, window_end=now, created_at=now,
                      rows=1000, labelled_rows=0, status="drift", drift_share=0.43,
                      drift_share_threshold=0.3)
    servers = [start_http_server(0, "127.0.0.1", registry=r)
               for r in (controller_registry, verdict_registry(verdict))]
    (controller_port, push_port) = (s.server_port for s, _ in servers)
    prom_port = _free_port()
    config = tmp_path / "prometheus.yml"
    alerting.render_prometheus_config(url, f"127.0.0.1:{controller_port}", None, 1, out=config,
                                      model=model, pushgateway=f"127.0.0.1:{push_port}")
    process = _spawn([prometheus, f"--config.file={config}",
                      f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                      f"--web.listen-address=127.0.0.1:{prom_port}"], tmp_path / "prom.log")
    api = f"http://127.0.0.1:{prom_port}/api/v1"
    try:
        _wait_ready(prom_port, process, tmp_path / "prom.log")

        def targets_up() -> bool:
            assert process.poll() is None, (tmp_path / "prom.log").read_text()[-2000:]
            try:
                active = httpx.get(f"{api}/targets", timeout=2).json()["data"]["activeTargets"]
            except (httpx.TransportError, ValueError, KeyError):
                return False
            return len(active) == 3 and all(t["health"] == "up" for t in active)

        _wait(targets_up, 60, "all three targets up")
        records = _records(unique_model_spec, 200, seed=3)
        pending = {t: e for t, e in _panel_queries(model) if t not in TEXT_PANELS}

        def all_panels_have_data() -> bool:
            with httpx.Client(base_url=url, timeout=10) as client:
                for i in range(0, len(records), 20):
                    assert client.post("/predict", json=records[i]).status_code == 200
                    batch = client.post("/predict/batch", json={"records": records[i:i + 20]})
                    assert batch.status_code == 200
            for title, expr in list(pending.items()):
                answer = httpx.get(f"{api}/query", params={"query": expr}, timeout=5).json()
                assert answer["status"] == "success", (title, answer)
                if answer["data"]["result"]:
                    del pending[title]
            return not pending

        _wait(all_panels_have_data, 90, f"data in every panel (still empty: {pending})")
        # the values are the ones served, not just any data
        queries = dict(_panel_queries(model))
        champion = httpx.get(f"{api}/query", params={"query": queries["Live champion version"]})
        assert champion.json()["data"]["result"][0]["metric"]["version"] == "1"
        drift = httpx.get(f"{api}/query", params={"query": queries["Drift share (last verdict)"]})
        assert float(drift.json()["data"]["result"][0]["value"][1]) == pytest.approx(0.43)
        budget = httpx.get(f"{api}/query",
                           params={"query": queries["SLO error budget remaining"]}).json()
        assert budget["data"]["result"][0]["metric"]["slo"] == "auc-7d"
        assert float(budget["data"]["result"][0]["value"][1]) == pytest.approx(0.25)
        holdout = httpx.get(f"{api}/query", params={
            "query": queries["Static holdout metric, champion and previous"]}).json()
        assert holdout["data"]["result"][0]["metric"]["version"] == "1"
        assert float(holdout["data"]["result"][0]["value"][1]) == pytest.approx(0.83)
    finally:
        _stop(process)
        for server, _ in servers:
            server.shutdown()
            server.server_close()
