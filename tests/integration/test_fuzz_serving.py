"""Schema-driven fuzzing of the serving app: schemathesis reads the app's own /openapi.json
and sends every operation bodies generated from it (valid and invalid), with and without
the bearer tokens, to the app under uvicorn on 127.0.0.1 with a trained champion on a real
MLflow sqlite store. No answer may be a 5xx, and every answer must be one the schema
documents: its status code, its content type and its body's schema."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from driftloop.processes import free_port
from kernel.settings import CommonSettings
from kernel.spec import DatasetSpec, load_spec
from registry import open_registry
from serving.app import create_app
from serving.settings import ServingSettings
from training.generate import generate
from training.train import train

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ADMIN, FEEDBACK = "fuzz-admin", "fuzz-feedback"


@dataclass(frozen=True)
class Served:
    url: str
    spec: DatasetSpec


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The app serving a trained champion under uvicorn in a thread."""
    home = tmp_path_factory.mktemp("fuzz-serving") / "home"
    spec = load_spec(ROOT / "examples" / "churn" / "spec.yaml")
    spec = spec.model_copy(update={"model_name": f"churn-{uuid.uuid4().hex[:8]}"})
    data = home.parent / "churn.parquet"
    generate(3, rows_per_day=300, seed=7).to_parquet(data, index=False)
    registry = open_registry(CommonSettings(home=home))
    train(spec, [data], registry, alias="champion", seed=0)
    app = create_app(ServingSettings(home=home, model=spec.model_name, admin_token=ADMIN,
                                     feedback_token=FEEDBACK, serving_poll_interval=3600,
                                     serving_max_body_bytes=64_000, serving_batch_limit=20),
                     registry=registry)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on",
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="fuzz-uvicorn", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=5) as client:
            for _ in range(300):  # until the lifespan has loaded the champion
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                thread.join(0.1)
            else:
                raise AssertionError("the fuzzed app never became ready")
        yield Served(url, spec)
    finally:
        server.should_exit = True
        thread.join(30)


def credentials(path: str) -> dict[str, str]:
    token = ADMIN if path.startswith("/admin/") else FEEDBACK
    return {"Authorization": f"Bearer {token}"}


# schemathesis' own pytest loaders (``schemathesis.pytest.from_fixture``) read a private
# attribute pytest 9 no longer has, so the operations are driven with hypothesis directly.
@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_every_operation_answers_as_documented(served: Served, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/predict", "/predict/batch", "/feedback",
                                              "/admin/reload", "/readyz", "/metrics"}
    calls: Counter[tuple[str, int]] = Counter()

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not operation.get_request_payload_content_types():
            continue  # nothing to make invalid (GET /healthz has no input)

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=30, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            for headers in (credentials(case.path), {}):
                response = case.call_and_validate(base_url=served.url, headers=headers,
                                                  checks=CHECKS, timeout=30)
                calls[(case.path, response.status_code)] += 1

        fuzz()
    assert not any(status >= 500 for _, status in calls), calls
    assert {path for path, _ in calls} >= {"/predict", "/predict/batch", "/feedback"}


# NaN and infinity are left out: they are not JSON, and the client refuses to send them.
SCALAR = (st.none() | st.booleans() | st.integers()
          | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))


def records(spec: DatasetSpec) -> st.SearchStrategy[dict[str, Any]]:
    """Records with every feature of the spec, mostly of the right type, sometimes not,
    sometimes with a request id or an extra field: most reach the model."""
    number = st.none() | st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**6,
                                                                                       10**6)
    text = st.none() | st.text(max_size=12)
    fields = {name: st.one_of(number, SCALAR) if i % 3 == 0 else number
              for i, name in enumerate(spec.features.numerical)}
    fields |= {name: st.one_of(text, SCALAR) if i % 3 == 0 else text
               for i, name in enumerate(spec.features.categorical)}
    optional = {"request_id": st.text(min_size=1, max_size=20), "extra": SCALAR}
    return st.fixed_dictionaries(fields, optional=optional)


def test_fuzzed_records_and_labels_answer_as_documented(served: Served) -> None:
    """Bodies built from the served spec's features, so most get past validation to the
    model and the label codec, which the schema's generic bodies rarely do."""
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    ops = {op.path: op for op in (result.ok() for result in schema.get_all_operations())}
    statuses: Counter[tuple[str, int]] = Counter()
    feedback = st.fixed_dictionaries({"request_id": st.text(min_size=1, max_size=20),
                                      "label": st.sampled_from([0, 1, "1", True]) | SCALAR})
    bodies = st.one_of(
        st.tuples(st.just("/predict"), records(served.spec)),
        st.tuples(st.just("/predict/batch"),
                  st.lists(records(served.spec), min_size=1, max_size=5).map(
                      lambda rs: {"records": rs})),
        st.tuples(st.just("/feedback"), st.lists(feedback, min_size=1, max_size=5).map(
            lambda ls: {"labels": ls})))

    @given(sent=bodies)
    @settings(max_examples=90, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def fuzz(sent: tuple[str, Any]) -> None:
        path, body = sent
        case = ops[path].Case(body=body, media_type="application/json")
        response = case.call_and_validate(base_url=served.url, headers=credentials(path),
                                          checks=CHECKS, timeout=30)
        statuses[(path, response.status_code)] += 1

    fuzz()
    assert not any(status >= 500 for _, status in statuses), statuses
    assert statuses[("/predict", 200)] and statuses[("/predict/batch", 200)], statuses
    assert statuses[("/feedback", 202)], statuses
