"""The drift-check shell: bundle, prediction-log window, verdict JSON, HTML report,
MLflow run, POST to the controller and a push to a Pushgateway stand-in."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from kernel.spec import DatasetSpec
from monitoring.job import run_drift_check
from monitoring.predlog import LogStore, PredictionLogWriter
from monitoring.settings import MonitoringSettings
from registry.memory import InMemoryRegistry
from training.generate import DEFAULT_START, Scenario, generate
from training.train import train

DAY = DEFAULT_START + timedelta(days=6)


def log_day(store: LogStore, spec: DatasetSpec, model, rows: pd.DataFrame, version: int,
            label_share: float = 1.0) -> None:
    """Write ``rows`` to the prediction log as serving would, with labels for a share."""
    writer = PredictionLogWriter(store)
    scores = model.predict_proba(rows[spec.features.all])[:, 1]
    for i, (record, score) in enumerate(zip(rows.to_dict("records"), scores, strict=True)):
        rid = f"v{version}-{record['customer_id']}"
        writer.append({"ts": record["ts"].to_pydatetime(warn=False), "request_id": rid,
                       "model_name": spec.model_name, "model_version": version,
                       "score": float(score), "prediction": int(score >= 0.5),
                       "shadow_version": None, "shadow_score": None, "latency_ms": 1.0,
                       **{c: record[c] for c in spec.features.all}})
        if i < label_share * len(rows):
            writer.append_label(rid, record["churned"], model=spec.model_name)
    writer.close()


@pytest.fixture
def world(unique_model_spec: DatasetSpec, tmp_path: Path, home: Path):
    spec = unique_model_spec
    data = generate(7, scenario=Scenario("unit_bug", 6), rows_per_day=600, seed=9)
    path = tmp_path / "data.parquet"
    data.to_parquet(path, index=False)
    registry = InMemoryRegistry()
    v1 = train(spec, [path], registry, until=DAY, alias="champion").version.version
    v2 = train(spec, [path], registry, until=DAY - timedelta(days=1)).version.version
    model = registry.load_model(registry.download(spec.model_name, v1, tmp_path / "m"))
    day = data[data.ts >= pd.Timestamp(DAY)]
    clean = generate(7, rows_per_day=600, seed=9)
    clean_day = clean[clean.ts >= pd.Timestamp(DAY)]
    settings = MonitoringSettings(home=home, controller_token="s3cret", report_max_rows=500)
    store = LogStore(settings.resolved_log_uri)
    log_day(store, spec, model, clean_day, v1)          # the champion saw clean traffic
    log_day(store, spec, model, day, v2, label_share=0.0)  # another version saw the bug
    return spec, registry, settings, v1, v2


class _Gateway(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_PUT(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(("PUT", self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def pushgateway() -> Iterator[str]:
    _Gateway.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_check_publishes_everywhere_and_never_mixes_versions(world, pushgateway: str) -> None:
    spec, registry, settings, v1, v2 = world
    posted: list[httpx.Request] = []

    def controller(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        return httpx.Response(202, json={"accepted": True})

    settings = settings.model_copy(update={"pushgateway_url": pushgateway})
    client = httpx.Client(transport=httpx.MockTransport(controller))
    outcome = run_drift_check(settings, registry, model=spec.model_name, since=DAY,
                              until=DAY + timedelta(days=1), post_to="http://controller:8001/",
                              client=client)
    verdict = outcome.verdict
    assert outcome.errors == []
    assert (verdict.version, verdict.rows, verdict.labelled_rows) == (v1, 600, 600)
    assert verdict.status == "ok", verdict.reasons
    assert verdict.performance is not None and verdict.performance.value is not None
    # the JSON on disk is the verdict, with the MLflow run id
    saved = json.loads(outcome.json_path.read_text())
    assert outcome.json_path.parent == settings.reports_dir / spec.model_name
    assert saved["status"] == "ok" and saved["run_id"] == verdict.run_id
    assert Path(saved["report_path"]).is_file() and saved["report_sampled_rows"] == 500
    run = registry.runs[-1]
    assert run["experiment"] == "driftloop-monitoring"
    assert run["tags"]["driftloop.model"] == spec.model_name
    assert run["tags"]["driftloop.version"] == str(v1) and run["tags"]["driftloop.status"] == "ok"
    assert run["metrics"]["rows"] == 600 and any(f.endswith(".html") for f in run["files"])
    # posted to the controller with the token
    (request,) = posted
    assert str(request.url) == "http://controller:8001/verdicts"
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert json.loads(request.content)["model"] == spec.model_name
    # pushed to the gateway under the job and model
    ((method, path, body),) = _Gateway.received
    assert path == f"/metrics/job/driftloop-drift-check/model/{spec.model_name}"
    text = body.decode()
    assert f'driftloop_verdict_status{{model="{spec.model_name}",status="ok"}} 1.0' in text
    assert f'driftloop_drift_share{{model="{spec.model_name}"}}' in text
    # the other version's window is its own, and it is broken
    other = run_drift_check(settings.model_copy(update={"pushgateway_url": None}), registry,
                            model=spec.model_name, version=v2, since=DAY,
                            until=DAY + timedelta(days=1), report=False)
    assert other.verdict.version == v2 and other.verdict.rows == 600
    assert other.verdict.labelled_rows == 0 and other.verdict.status == "drift"
    assert "monthly_charges" in other.verdict.drifted_columns


def test_current_file_is_scored_by_the_version_and_labelled_by_the_target(world,
                                                                         tmp_path: Path) -> None:
    spec, registry, settings, v1, _ = world
    rows = generate(2, scenario=Scenario("concept", 0), rows_per_day=400, seed=21)
    path = tmp_path / "production.csv"
    rows.to_csv(path, index=False)
    outcome = run_drift_check(settings, registry, model=spec.model_name, current_file=path,
                              out_dir=tmp_path / "out", report=False)
    verdict = outcome.verdict
    assert verdict.source == str(path) and verdict.rows == 800 and verdict.labelled_rows == 800
    assert verdict.status == "degraded" and verdict.exit_code == 1
    assert outcome.json_path.parent == tmp_path / "out"


def test_an_empty_window_is_insufficient_data(world) -> None:
    spec, registry, settings, v1, _ = world
    outcome = run_drift_check(settings, registry, model=spec.model_name,
                              since=DAY - timedelta(days=3), until=DAY - timedelta(days=2))
    assert outcome.verdict.status == "insufficient_data" and outcome.verdict.rows == 0
    assert outcome.report_path is None and outcome.verdict.exit_code == 0


def test_a_refused_post_is_reported_not_swallowed(world) -> None:
    spec, registry, settings, *_ = world
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(401)))
    outcome = run_drift_check(settings, registry, model=spec.model_name, since=DAY,
                              until=DAY + timedelta(days=1), post_to="http://c", client=client,
                              report=False)
    assert outcome.json_path.is_file()
    assert len(outcome.errors) == 1 and "401" in outcome.errors[0]


def test_scores_in_the_log_are_used_as_logged(world) -> None:
    """The check reads the score serving logged; it does not rescore the window."""
    spec, registry, settings, v1, _ = world
    outcome = run_drift_check(settings, registry, model=spec.model_name, since=DAY,
                              until=DAY + timedelta(days=1), report=False)
    assert outcome.verdict.prediction_drift is not None
    assert np.isfinite(outcome.verdict.prediction_drift.score)
