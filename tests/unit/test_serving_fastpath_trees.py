"""The gradient-boosted trees fast path equals scikit-learn; a disagreeing one is not served."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from kernel.spec import DatasetSpec
from registry.bundle import Bundle
from serving import model as serving_model
from serving.fastpath import FastPath, NotCompilable, compile_pipeline, records_of, verify
from serving.fastpath.check import UNSEEN, with_probes
from serving.fastpath.trees import fitted_trees, flatten
from serving.model import build, frame_of
from serving.schema import RecordSchema
from training.data import labels_of
from training.pipeline import build_pipeline


def fitted(spec: DatasetSpec, frame: pd.DataFrame, **params: Any) -> Pipeline:
    estimator = spec.estimator.model_copy(update={"kind": "hist_gradient_boosting",
                                                  "params": {"max_iter": 40, **params}})
    spec = spec.model_copy(update={"estimator": estimator})
    return build_pipeline(spec).fit(frame[spec.features.all], labels_of(frame, spec))


def rebalanced(frame: pd.DataFrame, spec: DatasetSpec, positives: float) -> pd.DataFrame:
    """``frame`` with positives subsampled (or negatives) so about ``positives`` are 1."""
    labels = labels_of(frame, spec)
    pos, neg = frame[labels == 1], frame[labels == 0]
    if positives * len(neg) < (1 - positives) * len(pos):
        pos = pos.sample(max(5, int(positives / (1 - positives) * len(neg))), random_state=0)
    else:
        neg = neg.sample(max(5, int((1 - positives) / positives * len(pos))), random_state=0)
    return pd.concat([pos, neg]).sample(frac=1.0, random_state=1)


def odd_records(frame: pd.DataFrame, spec: DatasetSpec, seed: int) -> list[dict[str, Any]]:
    """Random, missing-value and unseen-category records as a JSON request carries them."""
    rng = np.random.default_rng(seed)
    records = records_of(frame.sample(60, random_state=seed), spec.features.all)
    for record in records:
        for name in spec.features.numerical:
            roll = rng.random()
            if roll < 0.25:
                record[name] = None
            elif roll < 0.5:
                record[name] = float(rng.normal(0, 1e3))  # far outside the training range
        for name in spec.features.categorical:
            roll = rng.random()
            record[name] = None if roll < 0.25 else UNSEEN if roll < 0.5 else record[name]
    return records


@pytest.mark.parametrize("params", [{"max_depth": 1}, {"max_depth": 3}, {"max_leaf_nodes": 4},
                                    {"max_leaf_nodes": 63, "max_depth": None},
                                    {"max_leaf_nodes": 31, "min_samples_leaf": 2}])
@pytest.mark.parametrize("positives", [0.5, 0.2, 0.03])
def test_tree_fast_path_equals_predict_proba(churn_spec: DatasetSpec, churn_frame: pd.DataFrame,
                                             params: dict[str, Any], positives: float) -> None:
    frame = rebalanced(churn_frame, churn_spec, positives)
    pipeline = fitted(churn_spec, frame, **params)
    fast = compile_pipeline(pipeline)
    assert fast.kind == "trees"
    columns = churn_spec.features.all
    assert verify(fast, pipeline, frame.head(300), columns, churn_spec.features.categorical) <= 1e-9
    schema = RecordSchema.from_spec(churn_spec, frame)
    for seed in range(3):
        records = odd_records(frame, churn_spec, seed)
        expected = pipeline.predict_proba(frame_of(records, schema))[:, 1]
        got = np.array([fast.score(r) for r in records])
        assert np.max(np.abs(got - expected)) <= 1e-9


@pytest.mark.parametrize("max_leaf_nodes", [3, 15, 63])
def test_the_walk_sends_missing_values_where_the_trees_learnt(max_leaf_nodes: int) -> None:
    """The pipeline imputes before the trees; on raw arrays NaN reaches them and must go
    where each split's ``missing_go_to_left`` says."""
    rng = np.random.default_rng(max_leaf_nodes)
    X = rng.normal(size=(2000, 4))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    X[rng.random(X.shape) < 0.2] = np.nan
    y[np.isnan(X[:, 3])] = 1  # missingness carries signal, so splits learn a side for it
    model = HistGradientBoostingClassifier(max_iter=30, max_leaf_nodes=max_leaf_nodes,
                                           random_state=0).fit(X, y)
    forest = flatten(fitted_trees(model))
    rows = np.vstack([X[:300], np.full((1, 4), np.nan)])
    expected = model.decision_function(rows)
    start = float(expected[-1]) - forest.raw([float("nan")] * 4, 0.0)
    got = np.array([forest.raw(row, start) for row in rows.tolist()])
    assert np.max(np.abs(got - expected)) <= 1e-9


def test_categorical_splits_are_not_compiled(churn_spec: DatasetSpec,
                                             churn_frame: pd.DataFrame) -> None:
    pipeline = fitted(churn_spec, churn_frame, categorical_features=[0])
    with pytest.raises(NotCompilable, match="categorical"):
        compile_pipeline(pipeline)


def test_probes_hold_missing_values_and_unseen_categories(churn_spec: DatasetSpec,
                                                          churn_frame: pd.DataFrame) -> None:
    sample = churn_frame.head(100)
    columns, categorical = churn_spec.features.all, churn_spec.features.categorical
    rows = with_probes(sample, columns, categorical)
    assert len(rows) == 100 + 3 * 50
    probes = rows.iloc[100:]
    for name in columns:
        assert probes[name].isna().any()
    for name in categorical:
        assert (probes[name] == UNSEEN).any()


def test_numeric_categories_get_an_unseen_number() -> None:
    sample = pd.DataFrame({"x": [1.0, 2.0, 3.0] * 20, "code": [3, 7, 7] * 20})
    rows = with_probes(sample, ["x", "code"], ["code"])
    probes = rows.iloc[60:]
    assert (probes["code"] == 8).any() and probes["code"].isna().any()
    assert not (probes["code"] == UNSEEN).any()


@dataclass
class ReferenceBundle:
    spec: DatasetSpec
    reference: pd.DataFrame
    classes: tuple[str, ...] | None = None            # a binary version records none
    text_profiles: dict[str, Any] = field(default_factory=dict)


def test_a_disagreeing_tree_path_is_served_on_sklearn(churn_spec: DatasetSpec,
                                                      churn_frame: pd.DataFrame,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = fitted(churn_spec, churn_frame, max_depth=3)
    bundle = cast(Bundle, ReferenceBundle(churn_spec, churn_frame.head(400)))
    exact = build("churn", 1, "champion", pipeline, bundle, source="cache")
    assert exact.fast_path == "trees"
    assert exact.describe()["fast_path"] == "trees"
    assert "matches predict_proba" in exact.describe()["fast_path_reason"]

    def off_by_a_little(pipeline: Any) -> FastPath:
        real = compile_pipeline(pipeline)
        return FastPath(real.kind, lambda record: real.score(record) + 1e-4)

    monkeypatch.setattr(serving_model, "compile_pipeline", off_by_a_little)
    served = build("churn", 2, "champion", pipeline, bundle, source="cache")
    described = served.describe()
    assert served.fast is None
    assert described["fast_path"] == "sklearn"
    assert "differs from predict_proba by 0.0001" in described["fast_path_reason"]
    record = records_of(churn_frame.head(1), churn_spec.features.all)[0]
    assert served.score_one(record) == pytest.approx(exact.score_one(record), abs=1e-9)
