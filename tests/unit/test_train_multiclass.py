"""Training a multi-class text model: classes in predict_proba order, text profiles and
per-class metrics recorded with the version (held to scikit-learn), the version loads in
serving on its compiled path; refusals named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss

from kernel.errors import DataError
from kernel.metrics import multiclass_metrics, multiclass_value
from kernel.spec import DatasetSpec, parse_spec
from kernel.text import TextProfile
from registry.bundle import Bundle
from registry.memory import InMemoryRegistry
from serving.model import build
from tests.textmodels import CLASSES, ticket_frame
from training.pipeline import build_pipeline
from training.train import evaluate, fit, model_input, split, train


def _spec(**extra: Any) -> DatasetSpec:
    data: dict[str, Any] = {
        "model_name": "tickets", "target": "label", "timestamp_column": "ts",
        "classes": list(CLASSES), "features": {
            "text": ["body"], "numerical": ["account_age_days"], "categorical": ["plan"]}}
    data.update(extra)
    return parse_spec(data)


def _rows(rows: int = 600, seed: int = 3) -> pd.DataFrame:
    frame = ticket_frame(rows, seed)
    frame["ts"] = pd.date_range("2026-01-01", periods=rows, freq="h", tz="UTC")
    frame.loc[::17, "body"] = None       # missing texts are trained on as the empty text
    return frame


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tickets") / "rows.parquet"
    _rows().to_parquet(path, index=False)
    return path


def test_multiclass_metrics_equal_scikit_learns() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=300)
    y = rng.integers(0, 3, size=300)           # class 3 is never a label
    assert multiclass_value("accuracy", y, p) == pytest.approx(accuracy_score(y, p.argmax(1)))
    assert multiclass_value("log_loss", y, p) == pytest.approx(log_loss(y, p, labels=range(4)))
    present = np.unique(y)
    assert multiclass_value("macro_f1", y, p) == pytest.approx(
        f1_score(y, p.argmax(1), labels=present, average="macro", zero_division=0))
    out = multiclass_metrics(y, p, ("a", "b", "c", "d"), primary="macro_f1")
    per_class = f1_score(y, p.argmax(1), labels=range(4), average=None, zero_division=0)
    assert [out[f"f1.{c}"] for c in "abcd"] == pytest.approx(list(per_class))
    assert np.isnan(multiclass_value("accuracy", y[:0], p[:0]))


def test_a_version_records_classes_profiles_and_per_class_metrics(data: Path,
                                                                  tmp_path: Path) -> None:
    spec, registry = _spec(), InMemoryRegistry()
    result = train(spec, [data], registry)
    assert result.details["useless"] is None
    info = registry.get_version("tickets", result.version.version)
    assert info.tags["driftloop.classes"] == '["account", "billing", "hardware", "network"]'
    bundle = Bundle(registry.download("tickets", result.version.version, tmp_path / "v"))
    assert bundle.classes == list(CLASSES)
    profile = bundle.text_profiles["body"]
    assert isinstance(profile, TextProfile) and "wifi" in profile.vocabulary
    assert profile.threshold_source == "validation"
    model = registry.load_model(bundle.root)
    served = model.predict_proba(model_input(bundle.validation, spec)).max(axis=1)
    assert np.allclose(bundle.validation["score"], served)   # the served model's top probability
    for cls in CLASSES:
        assert 0.0 <= result.metrics[f"f1.{cls}"] <= 1.0
    assert result.metrics["macro_f1"] > 0.7      # the words decide the class
    assert set(bundle.validation["prediction"]) <= set(CLASSES)
    loaded = build("tickets", result.version.version, "champion", model, bundle,
                   source="registry")
    assert loaded.fast_path == "text-linear", loaded.fast_path_reason
    record = {"body": None, "account_age_days": 3.0, "plan": "pro"}
    assert np.allclose(loaded.proba_one(record),
                       model.predict_proba(model_input(pd.DataFrame([record]), spec))[0])


def test_validation_metric_is_the_first_fits_on_unseen_rows(data: Path) -> None:
    spec = _spec()
    spec = spec.model_copy(update={"retrain": spec.retrain.model_copy(update={"refit": False})})
    frame = pd.read_parquet(data)
    parts = split(frame, spec)
    fitted = fit(parts, spec)
    evaluation = evaluate(fitted, parts, spec)
    pred = fitted.model.predict(model_input(parts.validation, spec))
    truth = parts.y_validation.astype(str)
    assert evaluation.metrics["macro_f1"] == pytest.approx(
        f1_score(truth, pred, average="macro", labels=np.unique(truth)))
    assert evaluation.metrics["accuracy"] == pytest.approx(accuracy_score(truth, pred))
    assert evaluation.prior_log_loss is not None
    assert evaluation.metrics["log_loss"] < evaluation.prior_log_loss


def test_inferred_classes_are_the_sorted_label_texts(data: Path) -> None:
    parts = split(pd.read_parquet(data), _spec(classes="infer"))
    assert parts.classes == tuple(sorted(CLASSES))


def test_labels_outside_the_listed_classes_are_refused_by_name(data: Path) -> None:
    frame = pd.read_parquet(data)
    frame.loc[5, "label"] = "printer"
    with pytest.raises(DataError, match="'printer'"):
        split(frame, _spec())


def test_a_listed_class_without_rows_is_refused(data: Path) -> None:
    with pytest.raises(DataError, match="'refunds': 0"):
        split(pd.read_parquet(data), _spec(classes=[*CLASSES, "refunds"]))


def test_texts_without_a_learnable_word_are_useless(tmp_path: Path) -> None:
    frame = _rows()
    frame["body"] = "the same text"
    frame["account_age_days"] = 1.0
    frame["plan"] = "basic"
    path = tmp_path / "flat.parquet"
    frame.to_parquet(path, index=False)
    result = train(_spec(), [path], InMemoryRegistry())
    assert "no better than predicting the training class shares" in result.details["useless"]


def test_text_analyzers_follow_the_spec() -> None:
    names = {spec: [n for n, *_ in build_pipeline(_spec(text={"analyzer": spec})).steps[0][1]
                    .transformers] for spec in ("word", "char_wb", "word+char")}
    assert names["word"][-1:] == ["text_word:body"]
    assert names["char_wb"][-1:] == ["text_char:body"]
    assert names["word+char"][-2:] == ["text_word:body", "text_char:body"]
