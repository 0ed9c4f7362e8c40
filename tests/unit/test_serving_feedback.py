"""/feedback's door: the bearer token before the body, labels through the spec's codec,
hostile input refused with 4xx naming the field (never a 500), and /openapi.json
documenting every body and status."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from kernel.spec import DatasetSpec
from monitoring.predlog import LogStore, PredictionLogWriter
from registry.memory import InMemoryRegistry
from serving.app import create_app
from tests.unit.test_serving_app import FEEDBACK, FEEDBACK_TOKEN, make_settings, running, sample_record
from training.train import train

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class RecordingWriter(PredictionLogWriter):
    """The real writer, keeping a copy of every label it was handed."""

    received: list[tuple[str, Any, str]] = field(default_factory=list)

    def append_label(self, request_id: str, label: Any, *, model: str,
                     received_at: datetime | None = None) -> None:
        self.received.append((request_id, label, model))
        super().append_label(request_id, label, model=model, received_at=received_at)


@pytest.fixture
def registry(unique_model_spec: DatasetSpec, churn_file: Path) -> InMemoryRegistry:
    fake = InMemoryRegistry()
    train(unique_model_spec, [churn_file], fake, alias="champion")
    return fake


def app_with(home: Path, spec: DatasetSpec, registry: InMemoryRegistry,
             **extra: Any) -> tuple[Any, RecordingWriter]:
    writer = RecordingWriter(LogStore(home / "log"))
    settings = make_settings(home, spec, **({"serving_max_body_bytes": 2048} | extra))
    return create_app(settings, registry=registry, log_writer=writer), writer


ONE = {"request_id": "r1", "label": 1}


async def test_token_unset_disables_feedback(home: Path, unique_model_spec: DatasetSpec,
                                             registry: InMemoryRegistry) -> None:
    app, writer = app_with(home, unique_model_spec, registry, feedback_token=None)
    async with running(app) as client:
        r = await client.post("/feedback", json=ONE, headers=FEEDBACK)
    assert r.status_code == 401
    assert r.json()["detail"] == "feedback is disabled: set DRIFTLOOP_FEEDBACK_TOKEN"
    assert writer.received == []


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": FEEDBACK_TOKEN},
                                     {"Authorization": f"Basic {FEEDBACK_TOKEN}"}])
async def test_wrong_or_missing_token_is_401_before_the_body(
        home: Path, unique_model_spec: DatasetSpec, registry: InMemoryRegistry,
        headers: dict[str, str]) -> None:
    app, writer = app_with(home, unique_model_spec, registry)
    raw = headers | {"content-type": "application/json"}
    async with running(app) as client:
        good = await client.post("/feedback", json=ONE, headers=headers)
        oversized = await client.post("/feedback", content=b'{"x": "' + b"y" * 4096 + b'"}',
                                      headers=raw)
        malformed = await client.post("/feedback", content=b"{", headers=raw)
    for r in (good, oversized, malformed):  # the body is not read: no 413, no 400
        assert r.status_code == 401 and r.json()["detail"] == "missing or wrong bearer token"
    assert writer.received == []


async def test_no_champion_is_503(home: Path, unique_model_spec: DatasetSpec) -> None:
    app, writer = app_with(home, unique_model_spec, InMemoryRegistry())
    async with running(app) as client:
        r = await client.post("/feedback", json=ONE, headers=FEEDBACK)
        assert r.status_code == 503 and "no model loaded" in r.json()["detail"]
        assert (await client.post("/feedback", json=ONE)).status_code == 401
    assert writer.received == []


async def test_labels_decoded_by_the_spec_and_stored_canonical(
        home: Path, unique_model_spec: DatasetSpec, registry: InMemoryRegistry) -> None:
    app, writer = app_with(home, unique_model_spec, registry)
    name = unique_model_spec.model_name
    sent = [("a", 1), ("b", 1.0), ("c", "1"), ("d", True), ("e", "true"), ("f", 0),
            ("g", "0.0"), ("h", False)]
    async with running(app) as client:
        r = await client.post("/feedback", headers=FEEDBACK, json={"labels": [
            {"request_id": rid, "label": label} for rid, label in sent]})
        assert r.status_code == 202 and r.json() == {"accepted": len(sent)}
        r = await client.post("/feedback", json={"request_id": "x", "label": "yes"},
                              headers=FEEDBACK)
        assert r.status_code == 422
        assert r.json()["errors"] == {
            "label": "label 'yes' is not one of the spec's labels (positive 1, negative 0)"}
        r = await client.post("/feedback", headers=FEEDBACK, json={"labels": [
            {"request_id": "y", "label": 1}, {"request_id": "z", "label": 2}]})
        assert r.status_code == 422 and set(r.json()["errors"]) == {"labels[1].label"}
        assert "2" in r.json()["errors"]["labels[1].label"]
    assert writer.received == [(rid, "1" if i < 5 else "0", name)
                               for i, (rid, _) in enumerate(sent)]


SURROGATE = "\\ud800"  # as it appears in JSON text


@pytest.mark.parametrize("body,field", [
    ('{"request_id": "a\\ud800", "label": 1}', "request_id"),
    ('{"request_id": "a", "label": "\\udfff"}', "label"),
    ('{"labels": [{"request_id": "\\ud800", "label": 1}]}', "labels[0].request_id"),
    ('{"request_id": "a", "label": 1' + "0" * 400 + "}", "label"),
])
async def test_hostile_feedback_is_422_naming_the_field(
        home: Path, unique_model_spec: DatasetSpec, registry: InMemoryRegistry,
        body: str, field: str) -> None:
    app, writer = app_with(home, unique_model_spec, registry)
    async with running(app) as client:
        r = await client.post("/feedback", content=body.encode(),
                              headers=FEEDBACK | {"content-type": "application/json"})
    assert r.status_code == 422 and field in r.json()["errors"], r.text
    assert writer.received == []


async def test_hostile_records_are_4xx_never_500(home: Path, unique_model_spec: DatasetSpec,
                                                 registry: InMemoryRegistry,
                                                 churn_frame: Any) -> None:
    spec = unique_model_spec
    app, _ = app_with(home, spec, registry, serving_max_body_bytes=400_000)
    good = json.dumps(sample_record(churn_frame, spec))
    raw = FEEDBACK | {"content-type": "application/json"}
    huge = good.replace(f'"tenure_months": {json.loads(good)["tenure_months"]}',
                        '"tenure_months": 1' + "0" * 400)
    cases = [
        ("/predict", huge, 422, "tenure_months"),
        ("/predict", good.replace('"contract_type": "', f'"contract_type": "{SURROGATE}'),
         422, "contract_type"),
        ("/predict", good[:-1] + f', "request_id": "{SURROGATE}"}}', 422, "request_id"),
        ("/predict", good[:-1] + f', "k{SURROGATE}": 1}}', 422, "k\\ud800"),
        ("/predict/batch", '{"records": [' + huge + "]}", 422, "records[0].tenure_months"),
    ]
    async with running(app) as client:
        for path, body, status, name in cases:
            r = await client.post(path, content=body.encode(), headers=raw)
            assert r.status_code == status and name in r.json()["errors"], (path, r.text)
        for path in ("/predict", "/predict/batch", "/feedback"):
            r = await client.post(path, content=b"[" * 100_000, headers=raw)
            assert r.status_code == 400 and "malformed JSON" in r.json()["detail"], path
            r = await client.post(path, content=b"[" * 200 + b"]" * 200, headers=raw)
            assert r.status_code == 422, path


async def test_openapi_documents_bodies_and_statuses(home: Path,
                                                     unique_model_spec: DatasetSpec,
                                                     registry: InMemoryRegistry) -> None:
    app, _ = app_with(home, unique_model_spec, registry)
    async with running(app) as client:
        schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    expected = {"/predict": {"200", "400", "408", "413", "422", "503"},
                "/predict/batch": {"200", "400", "408", "413", "422", "503"},
                "/feedback": {"202", "400", "401", "408", "413", "422", "503"},
                "/admin/reload": {"200", "401", "409", "503"}}
    for path, statuses in expected.items():
        op = paths[path]["post"]
        assert set(op["responses"]) == statuses, path
        if path != "/admin/reload":
            body = op["requestBody"]["content"]["application/json"]["schema"]
            assert "$defs" not in json.dumps(body), path  # stands alone
    assert paths["/feedback"]["post"]["security"] == [{"HTTPBearer": []}]
    predict = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert predict["additionalProperties"] == {
        "anyOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}]}
    assert "Problem" in schema["components"]["schemas"]
