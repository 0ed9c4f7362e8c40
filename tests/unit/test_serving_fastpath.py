"""The compiled fast path equals the pipeline's predict_proba; anything else falls back."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from kernel.spec import DatasetSpec
from serving.fastpath import NotCompilable, compile_pipeline, records_of, verify
from serving.model import VersionRejected, check, frame_of
from serving.schema import RecordSchema
from training.data import labels_of
from training.pipeline import build_pipeline


def fitted(spec: DatasetSpec, frame: pd.DataFrame, kind: str) -> Pipeline:
    params: dict[str, Any] = {"max_iter": 50} if kind == "hist_gradient_boosting" else {}
    estimator = spec.estimator.model_copy(update={"kind": kind, "params": params})
    spec = spec.model_copy(update={"estimator": estimator})
    return build_pipeline(spec).fit(frame[spec.features.all], labels_of(frame, spec))


@pytest.mark.parametrize("kind,compiled", [("logistic_regression", "linear"),
                                           ("hist_gradient_boosting", "trees")])
def test_fast_path_matches_predict_proba(churn_spec: DatasetSpec, churn_frame: pd.DataFrame,
                                         kind: str, compiled: str) -> None:
    pipeline = fitted(churn_spec, churn_frame, kind)
    fast = compile_pipeline(pipeline)
    assert fast.kind == compiled
    sample = churn_frame.head(300)
    assert verify(fast, pipeline, sample, churn_spec.features.all) <= 1e-9
    # missing values and unseen categories, as serving passes them (missing as NaN)
    schema = RecordSchema.from_spec(churn_spec, churn_frame)
    odd = records_of(sample.head(20), churn_spec.features.all)
    for i, record in enumerate(odd):
        record["tenure_months" if i % 2 else "total_charges"] = None
        record["payment_method"] = None if i % 3 == 0 else "crypto-wallet"
        record["contract_type"] = None if i % 5 == 0 else record["contract_type"]
    expected = pipeline.predict_proba(frame_of(odd, schema))[:, 1]
    got = np.array([fast.score(r) for r in odd])
    assert np.max(np.abs(got - expected)) <= 1e-9


def test_unknown_pipeline_shapes_are_not_compiled(churn_spec: DatasetSpec,
                                                  churn_frame: pd.DataFrame) -> None:
    numerical = churn_spec.features.numerical
    odd = Pipeline([("pre", ColumnTransformer([("num", MinMaxScaler(), numerical)])),
                    ("model", LogisticRegression())])
    odd.fit(churn_frame[numerical], labels_of(churn_frame, churn_spec))
    with pytest.raises(NotCompilable):
        compile_pipeline(odd)
    with pytest.raises(NotCompilable):
        compile_pipeline(LogisticRegression())


class Scores:
    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.values[: len(X)]


@pytest.mark.parametrize("values,reason", [
    (np.full((10, 2), np.nan), "non-finite"),
    (np.full((10, 3), 0.3), "shape"),
    (np.full((10, 2), 1.5), "outside"),
])
def test_check_refuses_broken_scores(values: np.ndarray, reason: str) -> None:
    sample = pd.DataFrame({"x": np.arange(10.0)})
    with pytest.raises(VersionRejected, match=reason):
        check(Scores(values), sample, ["x"])
    check(Scores(np.full((10, 2), 0.5)), sample, ["x"])
