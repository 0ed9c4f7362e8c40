"""A gradient-boosted version served by the app: `GET /model` says the trees path is live,
and `/predict` answers what scikit-learn answers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kernel.spec import DatasetSpec
from registry.memory import InMemoryRegistry
from serving.app import create_app
from serving.model import frame_of
from serving.schema import RecordSchema
from tests.unit.test_serving_app import make_settings, running, sample_record
from training.train import train

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_tree_version_is_served_on_its_fast_path(home: Path, churn_file: Path,
                                                         unique_model_spec: DatasetSpec,
                                                         churn_frame: pd.DataFrame) -> None:
    estimator = unique_model_spec.estimator.model_copy(
        update={"kind": "hist_gradient_boosting", "params": {"max_iter": 30}})
    spec = unique_model_spec.model_copy(update={"estimator": estimator})
    fake = InMemoryRegistry()
    trained = train(spec, [churn_file], fake, alias="champion")
    app = create_app(make_settings(home, spec), registry=fake)
    record = sample_record(churn_frame, spec, 5)
    record["tenure_months"] = None
    record["payment_method"] = "crypto-wallet"
    async with running(app) as client:
        described = (await client.get("/model")).json()["champion"]
        score = (await client.post("/predict", json=record)).json()["score"]
    assert described["fast_path"] == "trees"
    assert "matches predict_proba" in described["fast_path_reason"]
    bundle = fake.download(spec.model_name, trained.version.version, home / "check")
    pipeline = fake.load_model(bundle)
    schema = RecordSchema.from_spec(spec, churn_frame)
    assert score == pytest.approx(pipeline.predict_proba(frame_of([record], schema))[0, 1],
                                  abs=1e-9)
