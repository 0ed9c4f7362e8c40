"""Loading a multi-class text version: classes and profiles known, load-time check against
predict_proba, the compiled text path held to scikit-learn (or refused)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from registry.bundle import Bundle
from registry.memory import InMemoryRegistry
from serving.fastpath import NotCompilable, compile_pipeline, records_of, verify
from serving.fastpath.check import fill_text
from serving.model import VersionRejected, build
from tests.textmodels import CLASSES, ticket_frame, ticket_pipeline, ticket_spec, ticket_version


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return ticket_frame()


def bundle_of(tmp_path: Path, new: Any) -> Bundle:
    registry = InMemoryRegistry()
    info = registry.register(new)
    return Bundle(registry.download(new.name, info.version, tmp_path / f"v{info.version}"))


def load(tmp_path: Path, new: Any, **kw: Any) -> Any:
    bundle = bundle_of(tmp_path, new)
    return build(new.name, 1, "champion", new.model, bundle, source="registry", **kw)


def test_multiclass_version_loads_with_classes_profiles_and_text_path(
        tmp_path: Path, frame: pd.DataFrame) -> None:
    spec = ticket_spec()
    new = ticket_version(spec, frame)
    model = load(tmp_path, new)
    assert model.classes == CLASSES
    assert set(model.text_profiles) == {"body"}
    assert model.fast_path == "text-linear", model.fast_path_reason
    assert "unseen-word text" in model.fast_path_reason
    described = model.describe()
    assert described["classes"] == list(CLASSES)
    assert described["features"]["text"] == ["body"]
    assert described["text_profiles"]["body"]["vocabulary_words"] == len(
        model.text_profiles["body"].vocabulary)
    record = {"body": "wifi kaput again", "account_age_days": 12.0, "plan": "pro"}
    expected = new.model.predict_proba(pd.DataFrame([record]))[0]
    assert np.allclose(model.proba_one(record), expected, atol=1e-9)
    assert model.score_one(record) == pytest.approx(float(expected.max()))
    slow = replace(model, fast=None)
    assert np.allclose(slow.proba_one(record), expected, atol=1e-12)
    assert slow.score_many([record, record]).tolist() == pytest.approx([expected.max()] * 2)


def test_fast_path_off_serves_through_sklearn(tmp_path: Path, frame: pd.DataFrame) -> None:
    model = load(tmp_path, ticket_version(ticket_spec(), frame), fast_path=False)
    assert model.fast is None and model.fast_path == "sklearn"
    assert len(model.proba_one({"body": None, "account_age_days": None, "plan": None})) == 4


def test_classes_out_of_the_model_order_are_refused(tmp_path: Path, frame: pd.DataFrame) -> None:
    new = replace(ticket_version(ticket_spec(), frame), classes=tuple(reversed(CLASSES)))
    with pytest.raises(VersionRejected, match="recorded classes"):
        load(tmp_path, new)


def test_multiclass_spec_without_classes_is_refused(tmp_path: Path, frame: pd.DataFrame) -> None:
    new = replace(ticket_version(ticket_spec(), frame), classes=None)
    with pytest.raises(VersionRejected, match="classes.json"):
        load(tmp_path, new)


def test_binary_text_version_scores_the_positive_class(tmp_path: Path,
                                                       frame: pd.DataFrame) -> None:
    pair = ("billing", "network")
    spec = ticket_spec().model_copy(update={"classes": None, "metric": "roc_auc"})
    pipeline = ticket_pipeline(frame, classes=pair)
    model = load(tmp_path, ticket_version(spec, frame, pipeline, classes=None))
    assert model.classes is None and model.fast_path == "text-linear"
    record = {"body": "router offline", "account_age_days": 5.0, "plan": "basic"}
    expected = pipeline.predict_proba(pd.DataFrame([record]))[0, 1]
    assert model.score_one(record) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("tabular,sublinear", [(True, True), (False, True), (True, False)])
def test_text_path_equals_predict_proba_on_probes(frame: pd.DataFrame, tabular: bool,
                                                  sublinear: bool) -> None:
    pipeline = ticket_pipeline(frame, tabular=tabular, sublinear=sublinear)
    columns = ["body", "account_age_days", "plan"] if tabular else ["body"]
    fast = compile_pipeline(pipeline)
    assert fast.proba is not None
    assert verify(fast, pipeline, frame, columns, ["plan"] if tabular else [], ["body"]) <= 1e-9
    odd = pd.concat([frame[columns].head(1)] * 6, ignore_index=True)  # same tabular values
    odd["body"] = [None, "", "zzzz qqqq", "WIFI!!! 5G gone", "\u00e9t\u00e9 caf\u00e9", "a"]
    got = np.array([fast.proba(r) for r in records_of(odd, columns)])
    assert np.allclose(got, pipeline.predict_proba(fill_text(odd, ["body"])), atol=1e-9)
    # a text with no known term scores as the empty text
    assert np.allclose(got[2], got[1])


def test_unsupported_text_transformers_are_not_compiled(frame: pd.DataFrame) -> None:
    pipeline = ticket_pipeline(frame)
    vectorizer = pipeline.steps[0][1].transformers_[0][1]
    vectorizer.analyzer = lambda text: text.split()
    with pytest.raises(NotCompilable, match="callable analyzer"):
        compile_pipeline(pipeline)


def test_a_wrong_compiled_text_path_falls_back(tmp_path: Path, frame: pd.DataFrame,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.fastpath import text

    monkeypatch.setattr(text, "softmax", lambda z: json.loads(json.dumps([0.25] * len(z))))
    model = load(tmp_path, ticket_version(ticket_spec(), frame))
    assert model.fast is None and "differs from predict_proba" in model.fast_path_reason
