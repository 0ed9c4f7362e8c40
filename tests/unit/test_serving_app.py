"""The serving app in process: InMemoryRegistry, httpx.ASGITransport, an injected registry of
metrics, the real prediction log on a temporary directory."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from kernel.spec import DatasetSpec
from monitoring.predlog import LogStore, PredictionLogReader, PredictionLogWriter
from registry.memory import InMemoryRegistry
from serving.app import create_app
from serving.settings import ServingSettings
from training.train import train

pytestmark = pytest.mark.anyio
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FEEDBACK_TOKEN = "labels-in"
FEEDBACK = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class NaNModel:
    """A 'model' that passes for a classifier but scores NaN: must be refused."""

    classes_ = np.array([0, 1])

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.full((len(X), 2), np.nan)


@pytest.fixture
def fake() -> InMemoryRegistry:
    return InMemoryRegistry()


def make_settings(home: Path, spec: DatasetSpec, **extra: Any) -> ServingSettings:
    extra.setdefault("feedback_token", FEEDBACK_TOKEN)
    return ServingSettings(home=home, model=spec.model_name, admin_token=TOKEN,
                           serving_poll_interval=3600, serving_retry_interval=3600, **extra)


def sample_record(frame: Any, spec: DatasetSpec, i: int = 0) -> dict[str, Any]:
    row = frame.iloc[i]
    out: dict[str, Any] = {c: float(row[c]) for c in spec.features.numerical}
    out.update({c: str(row[c]) for c in spec.features.categorical})
    return out


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            yield client


def value(reg: CollectorRegistry, name: str, **labels: str) -> float:
    got = reg.get_sample_value(name, labels)
    return 0.0 if got is None else got


@pytest.fixture
def champion(fake: InMemoryRegistry, unique_model_spec: DatasetSpec, churn_file: Path) -> int:
    return train(unique_model_spec, [churn_file], fake, alias="champion").version.version


async def test_not_ready_without_champion_then_reload(home: Path, fake: InMemoryRegistry,
                                                       unique_model_spec: DatasetSpec,
                                                       churn_file: Path,
                                                       churn_frame: Any) -> None:
    app = create_app(make_settings(home, unique_model_spec), registry=fake)
    async with running(app) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "no @champion" in ready.json()["reason"]
        r = await client.post("/predict", json=sample_record(churn_frame, unique_model_spec))
        assert r.status_code == 503 and "no model loaded" in r.json()["detail"]
        train(unique_model_spec, [churn_file], fake, alias="champion")
        assert (await client.post("/admin/reload")).status_code == 401
        assert (await client.post("/admin/reload", headers={"Authorization": "Bearer no"})
                ).status_code == 401
        reload = await client.post("/admin/reload", headers=AUTH)
        assert reload.status_code == 200 and reload.json()["outcome"] == "loaded"
        assert (await client.get("/readyz")).json()["version"] == 1


async def test_predict_logs_counts_and_feedback(home: Path, fake: InMemoryRegistry,
                                                unique_model_spec: DatasetSpec, champion: int,
                                                churn_frame: Any) -> None:
    spec = unique_model_spec
    metrics = CollectorRegistry()
    store = LogStore(home / "log")
    writer = PredictionLogWriter(store, flush_interval=0.2)
    app = create_app(make_settings(home, spec), registry=fake, log_writer=writer,
                     metrics_registry=metrics)
    async with running(app) as client:
        model = (await client.get("/model")).json()
        assert model["champion"]["version"] == champion
        assert model["champion"]["fast_path"] == "linear"
        answered, ids = 0, set()
        for i in range(20):
            r = await client.post("/predict", json=sample_record(churn_frame, spec, i))
            assert r.status_code == 200
            body = r.json()
            assert set(body) == {"request_id", "prediction", "score", "model_version"}
            assert len(body["request_id"]) == 32 and int(body["request_id"], 16) >= 0
            ids.add(body["request_id"])
            assert 0 <= body["score"] <= 1 and body["prediction"] in (0, 1)
            answered += 1
        assert len(ids) == answered  # server-made ids never repeat
        odd = sample_record(churn_frame, spec) | {"payment_method": "crypto-wallet",
                                                   "monthly_charges": 1e6, "tenure_months": None,
                                                   "request_id": "client-42"}
        r = await client.post("/predict", json=odd)
        assert r.status_code == 200 and r.json()["request_id"] == "client-42"
        answered += 1
        batch = [sample_record(churn_frame, spec, i) for i in range(30, 40)]
        r = await client.post("/predict/batch", json={"records": batch})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 10
        answered += 10
        fb = await client.post("/feedback", json={"request_id": "client-42", "label": 1},
                               headers=FEEDBACK)
        assert fb.status_code == 202
        fb = await client.post("/feedback", json={"labels": [
            {"request_id": "client-42", "label": 0}, {"request_id": "other", "label": "1"}]},
            headers=FEEDBACK)
        assert fb.status_code == 202 and fb.json() == {"accepted": 2}
        name = spec.model_name
        assert value(metrics, "driftloop_unseen_category_total", model=name,
                     feature="payment_method") == 1
        assert value(metrics, "driftloop_out_of_range_total", model=name,
                     feature="monthly_charges") == 1
        assert value(metrics, "driftloop_missing_values_total", model=name,
                     feature="tenure_months") == 1
        total = sum(value(metrics, "driftloop_predictions_total", model=name,
                          version=str(champion), predicted_class=c) for c in ("0", "1"))
        assert total == answered
        assert value(metrics, "driftloop_http_requests_total", route="/predict", method="POST",
                     status="200") == 21
        assert value(metrics, "driftloop_model_ready", model=name) == 1
        assert value(metrics, "driftloop_model_info", model=name, version=str(champion),
                     alias="champion") == 1
        exposed = (await client.get("/metrics")).text
        for metric in ("driftloop_http_request_duration_seconds_bucket",
                       "driftloop_prediction_score_bucket", "driftloop_model_reloads_total",
                       "driftloop_log_rows_written_total", "driftloop_log_flush_lag_seconds"):
            assert metric in exposed
    reader = PredictionLogReader(store)
    from datetime import UTC, datetime, timedelta
    now = datetime.now(UTC)
    rows = reader.window(name, now - timedelta(hours=1), now + timedelta(hours=1))
    assert len(rows) == answered
    labelled = rows[rows["request_id"] == "client-42"].iloc[0]
    assert labelled["label"] == "0"  # the last label wins
    assert np.isnan(labelled["tenure_months"])
    assert value(metrics, "driftloop_log_rows_written_total") == answered


BAD = [
    ("malformed JSON", b'{"tenure_months": 3,', 400, "malformed JSON"),
    ("not an object", b"[1, 2]", 422, "expected a JSON object"),
    ("empty", b"", 400, "empty request body"),
    ("NaN", None, 422, "NaN"),
]


async def test_bad_requests_get_4xx_with_reasons(home: Path, fake: InMemoryRegistry,
                                                 unique_model_spec: DatasetSpec, champion: int,
                                                 churn_frame: Any) -> None:
    spec = unique_model_spec
    metrics = CollectorRegistry()
    app = create_app(make_settings(home, spec, serving_batch_limit=5,
                                   serving_max_body_bytes=2048),
                     registry=fake, metrics_registry=metrics)
    good = sample_record(churn_frame, spec)
    headers = {"content-type": "application/json"}
    async with running(app) as client:
        async def post(path: str, content: bytes) -> httpx.Response:
            return await client.post(path, content=content, headers=headers)

        r = await post("/predict", b'{"tenure_months": 3,')
        assert r.status_code == 400 and "malformed JSON" in r.json()["detail"]
        r = await post("/predict", b"[1, 2]")
        assert r.status_code == 422 and "expected a JSON object" in r.json()["detail"]
        r = await post("/predict", b"")
        assert r.status_code == 400
        r = await post("/predict", b"[" * 1000 + b"]" * 1000)
        assert r.status_code in (400, 422)
        r = await post("/predict", json.dumps(good).replace(
            str(good["tenure_months"]), "NaN").encode())
        assert r.status_code == 422 and "tenure_months" in r.json()["errors"]
        r = await client.post("/predict", json={k: v for k, v in good.items()
                                                if k != "contract_type"})
        assert r.status_code == 422 and "contract_type" in r.json()["errors"]
        r = await client.post("/predict", json=good | {"tenure_months": "12",
                                                       "internet_service": 3})
        errors = r.json()["errors"]
        assert r.status_code == 422 and set(errors) == {"tenure_months", "internet_service"}
        r = await client.post("/predict", json=good | {"tenure_monhts": 3})
        assert r.status_code == 422 and r.json()["errors"] == {"tenure_monhts": "unknown field"}
        r = await client.post("/predict", json=good | {"support_tickets": True})
        assert r.status_code == 422
        r = await post("/predict", json.dumps(good | {"pad": "x" * 4096}).encode())
        assert r.status_code == 413 and "limit" in r.json()["detail"]
        r = await client.post("/predict/batch", json={"records": []})
        assert r.status_code == 422 and "empty batch" in r.json()["detail"]
        r = await client.post("/predict/batch", json={"records": [good] * 6})
        assert r.status_code == 413
        r = await client.post("/predict/batch", json={"records": [good, {"x": 1}]})
        assert r.status_code == 422 and "records[1].tenure_months" in r.json()["errors"]
        r = await client.post("/predict/batch", json=[good])
        assert r.status_code == 422
        r = await client.post("/feedback", json={"request_id": "x"}, headers=FEEDBACK)
        assert r.status_code == 422 and "label" in r.json()["errors"]
        r = await client.post("/feedback", json={"labels": []}, headers=FEEDBACK)
        assert r.status_code == 422
        r = await client.get("/nope")
        assert r.status_code == 404
        statuses = [s.labels.get("status") for m in metrics.collect() for s in m.samples
                    if s.name == "driftloop_http_requests_total"]
        assert statuses and all(not s.startswith("5") for s in statuses)
        assert value(metrics, "driftloop_validation_errors_total", route="/predict") >= 10
        assert value(metrics, "driftloop_http_requests_total", route="other", method="GET",
                     status="404") == 1


async def test_swap_refuse_broken_and_outage(home: Path, fake: InMemoryRegistry,
                                             unique_model_spec: DatasetSpec, churn_file: Path,
                                             champion: int, churn_frame: Any) -> None:
    spec = unique_model_spec
    metrics = CollectorRegistry()
    app = create_app(make_settings(home, spec), registry=fake, metrics_registry=metrics)
    record = sample_record(churn_frame, spec)
    name = spec.model_name
    async with running(app) as client:
        v2 = train(spec, [churn_file], fake, seed=1).version.version
        fake.set_alias(name, "champion", v2)
        r = await client.post("/admin/reload", headers=AUTH)
        assert r.json()["outcome"] == "loaded"
        assert (await client.post("/predict", json=record)).json()["model_version"] == v2
        assert value(metrics, "driftloop_model_info", model=name, version=str(v2),
                     alias="champion") == 1
        assert metrics.get_sample_value("driftloop_model_info", {
            "model": name, "version": str(champion), "alias": "champion"}) is None
        # a broken version: registered like any other, refused at load
        good = fake._payload[(name, v2)]
        broken = fake.register(replace(good, model=NaNModel())).version
        fake.set_alias(name, "champion", broken)
        r = await client.post("/admin/reload", headers=AUTH)
        assert r.status_code == 409 and "non-finite" in r.json()["detail"]
        assert (await client.post("/predict", json=record)).json()["model_version"] == v2
        described = (await client.get("/model")).json()
        assert str(broken) in described["rejected"]
        assert value(metrics, "driftloop_model_reloads_total", model=name,
                     outcome="rejected") == 1
        # polling the same broken alias again is not a new rejection
        assert (await client.post("/admin/reload", headers=AUTH)).json()["outcome"] == "unchanged"
        # an outage: still serving, the failed check is counted
        fake.down = True
        r = await client.post("/admin/reload", headers=AUTH)
        assert r.status_code == 503 and r.json()["outcome"] == "error"
        assert (await client.post("/predict", json=record)).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert value(metrics, "driftloop_model_reloads_total", model=name, outcome="error") == 1


async def test_restart_during_outage_serves_cached_champion(home: Path, fake: InMemoryRegistry,
                                                            unique_model_spec: DatasetSpec,
                                                            champion: int,
                                                            churn_frame: Any) -> None:
    settings = make_settings(home, unique_model_spec)
    async with running(create_app(settings, registry=fake)) as client:
        assert (await client.get("/readyz")).status_code == 200
    fake.down = True
    async with running(create_app(settings, registry=fake)) as client:
        assert (await client.get("/readyz")).status_code == 200
        described = (await client.get("/model")).json()
        assert described["champion"]["source"] == "cache"
        assert described["registry_reachable"] is False
        r = await client.post("/predict", json=sample_record(churn_frame, unique_model_spec))
        assert r.status_code == 200 and r.json()["model_version"] == champion
    empty = make_settings(home / "elsewhere", unique_model_spec)
    async with running(create_app(empty, registry=fake)) as client:
        r = await client.get("/readyz")
        assert r.status_code == 503 and "registry unavailable" in r.json()["reason"]


async def test_shadow_scores_challenger_into_the_log(home: Path, fake: InMemoryRegistry,
                                                     unique_model_spec: DatasetSpec,
                                                     churn_file: Path, champion: int,
                                                     churn_frame: Any) -> None:
    spec = unique_model_spec
    challenger = train(spec, [churn_file], fake, alias="challenger", seed=3).version.version
    metrics = CollectorRegistry()
    store = LogStore(home / "log")
    app = create_app(make_settings(home, spec), registry=fake,
                     log_writer=PredictionLogWriter(store), metrics_registry=metrics)
    async with running(app) as client:
        assert (await client.get("/model")).json()["challenger"]["version"] == challenger
        for i in range(15):
            r = await client.post("/predict", json=sample_record(churn_frame, spec, i))
            assert r.status_code == 200
        r = await client.post("/predict/batch",
                              json={"records": [sample_record(churn_frame, spec, 50)] * 3})
        assert r.status_code == 200
    from datetime import UTC, datetime, timedelta
    now = datetime.now(UTC)
    rows = PredictionLogReader(store).predictions(spec.model_name, now - timedelta(hours=1),
                                                  now + timedelta(hours=1))
    assert len(rows) == 18
    assert (rows["shadow_version"] == challenger).all()
    assert rows["shadow_score"].between(0, 1).all()
    assert (rows["model_version"] == champion).all()
    name = spec.model_name
    assert value(metrics, "driftloop_shadow_scored_total", model=name) == 18
    assert 0 < value(metrics, "driftloop_shadow_agreed_total", model=name) <= 18


async def test_sklearn_fallback_is_reported_and_serves(home: Path, fake: InMemoryRegistry,
                                                       unique_model_spec: DatasetSpec,
                                                       champion: int, churn_frame: Any) -> None:
    app = create_app(make_settings(home, unique_model_spec, serving_fast_path=False),
                     registry=fake)
    fast = create_app(make_settings(home, unique_model_spec), registry=fake)
    record = sample_record(churn_frame, unique_model_spec, 3)
    async with running(app) as client, running(fast) as fast_client:
        described = (await client.get("/model")).json()["champion"]
        assert described["fast_path"] == "sklearn"
        slow = (await client.post("/predict", json=record)).json()["score"]
        quick = (await fast_client.post("/predict", json=record)).json()["score"]
        assert abs(slow - quick) < 1e-9
