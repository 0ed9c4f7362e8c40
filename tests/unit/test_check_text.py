"""The drift check on a multi-class text model: descriptors and content drift per text
column, OOD shares by the version's profile, class drift on the predicted classes, realised
macro-F1 from the logged class probabilities (held to scikit-learn)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from kernel.spec import DatasetSpec
from kernel.text import TextProfile
from monitoring.check import Reference, check_frames
from tests.textmodels import CLASSES, ticket_frame, ticket_pipeline, ticket_spec

SLANG = ["wifi kaput", "5g gone", "rip net", "net ded fr", "no bars lol", "bruh router ded"]


def _scored(model: Any, frame: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    out = frame[features].copy()
    proba = model.predict_proba(frame[features])
    out["score"] = proba.max(axis=1)
    out["prediction"] = np.asarray(CLASSES, dtype=object)[proba.argmax(axis=1)]
    out["probabilities"] = list(proba)
    out["label"] = frame["label"].to_numpy()
    return out


@pytest.fixture(scope="module")
def world() -> tuple[DatasetSpec, Reference, Any]:
    spec = ticket_spec("tickets")
    spec = spec.model_copy(update={"drift": spec.drift.model_copy(update={
        "min_rows": 50, "min_labelled_rows": 50})})
    train = ticket_frame(2400, seed=1)
    model = ticket_pipeline(train[:1200])   # validated on rows it did not see
    features = spec.features.all
    profile = TextProfile.fit("body", train["body"][:1200], train["body"][1200:])
    validation = _scored(model, train[1200:], features)
    macro = f1_score(validation["label"], validation["prediction"], average="macro")
    reference = Reference(spec, train[features][:1200].reset_index(drop=True),
                          validation["score"].to_numpy(), {"macro_f1": macro}, None,
                          CLASSES, validation["prediction"].reset_index(drop=True),
                          {"body": profile})
    return spec, reference, model


def test_a_window_like_the_reference_is_ok(world):
    spec, reference, model = world
    current = _scored(model, ticket_frame(800, seed=9), spec.features.all)
    verdict = check_frames(reference, current)
    assert verdict.status == "ok", verdict.reasons
    names = [c.column for c in verdict.columns]
    assert names == ["account_age_days", "plan", "body:length", "body:words",
                     "body:oov_share", "body:non_letter_share"]
    (text,) = verdict.text_columns
    assert text.column == "body" and not text.drifted
    assert text.ood_share is not None and text.ood_share < 0.05
    assert verdict.prediction_drift is not None and verdict.prediction_drift.column == "prediction"
    assert not verdict.prediction_drift.drifted
    assert verdict.estimated is not None and "binary" in (verdict.estimated.note or "")


def test_new_slang_is_content_drift_out_of_vocabulary_and_out_of_distribution(world):
    spec, reference, model = world
    frame = ticket_frame(800, seed=9)
    rng = np.random.default_rng(4)
    network = frame["label"] == "network"
    frame.loc[network, "body"] = [str(rng.choice(SLANG)) for _ in range(int(network.sum()))]
    verdict = check_frames(reference, _scored(model, frame, spec.features.all))
    (text,) = verdict.text_columns
    assert text.drifted and text.auc > text.threshold
    assert text.ood_share > 0.15 > text.reference_ood_share
    assert text.oov_share > text.reference_oov_share
    assert "body" in verdict.drifted_columns and "body:oov_share" in verdict.drifted_columns
    assert any(r.startswith("text content drift on body") for r in verdict.reasons)
    assert any("out of distribution" in r for r in verdict.reasons)
    assert verdict.status in ("drift", "degraded")


def test_realised_macro_f1_is_scikit_learns_on_the_logged_probabilities(world):
    spec, reference, model = world
    current = _scored(model, ticket_frame(800, seed=11), spec.features.all)
    current.loc[:3, "label"] = "printer"            # no class: left out
    current.loc[4:6, "probabilities"] = None         # no probabilities: left out
    verdict = check_frames(reference, current)
    keep = np.ones(len(current), dtype=bool)
    keep[:7] = False
    expected = f1_score(current["label"][keep], current["prediction"][keep],
                        labels=sorted(set(current["label"][keep])), average="macro")
    assert verdict.performance is not None
    assert verdict.performance.value == pytest.approx(expected)
    assert verdict.performance.metric == "macro_f1"


def test_a_shift_of_predicted_classes_is_class_drift(world):
    spec, reference, model = world
    frame = ticket_frame(1500, seed=12)
    billing = frame[frame["label"] == "billing"]
    frame = pd.concat([frame.head(300), billing], ignore_index=True)   # mostly billing now
    verdict = check_frames(reference, _scored(model, frame, spec.features.all))
    assert verdict.prediction_drift is not None and verdict.prediction_drift.drifted
    assert any(r.startswith("prediction drift") for r in verdict.reasons)
