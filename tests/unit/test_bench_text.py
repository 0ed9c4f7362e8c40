"""The pure parts of the text benchmarks (bench/bench_text_serving.py, bench_text_drift.py):
the record both servers take, reading every class's probability from each server's answer
and the largest disagreement, the scored window as the prediction log has it, and the
column-by-column comparison with Evidently. No timing."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_serving import MLFLOW, ON
from bench.bench_text_drift import LABELLED_EVERY, compare, scored_window
from bench.bench_text_serving import largest_difference, probabilities, record_of
from tests.textmodels import CLASSES, ticket_frame, ticket_pipeline


def test_record_of_gives_json_types_in_the_spec_order() -> None:
    row = {"body": "wifi down", "account_age_days": np.int64(12), "channel": "app",
           "label": "network"}
    record = record_of(row, ["body"], ["account_age_days"], ["channel"])
    assert record == {"body": "wifi down", "account_age_days": 12.0, "channel": "app"}
    assert type(record["account_age_days"]) is float and list(record) == [
        "body", "account_age_days", "channel"]


def test_probabilities_read_each_servers_answer_in_the_class_order() -> None:
    classes = ["network", "billing", "other"]
    ours = {"prediction": "billing", "score": 0.7,
            "probabilities": {"other": 0.1, "network": 0.2, "billing": 0.7}}
    theirs = {"predictions": [[0.2, 0.7, 0.1]]}
    assert probabilities(ON, ours, classes) == [0.2, 0.7, 0.1]
    assert probabilities(MLFLOW, theirs, classes) == [0.2, 0.7, 0.1]
    with pytest.raises(ValueError, match="classes"):
        probabilities(ON, {"probabilities": {"network": 1.0}}, classes)
    with pytest.raises(ValueError, match="2 probabilities for 3 classes"):
        probabilities(MLFLOW, {"predictions": [[0.5, 0.5]]}, classes)


def test_largest_difference_is_the_worst_class_of_the_worst_record() -> None:
    answers = {ON: [[0.2, 0.8], [0.5, 0.5]], MLFLOW: [[0.2, 0.8], [0.5 + 3e-7, 0.5 - 3e-7]]}
    assert largest_difference(answers) == pytest.approx(3e-7, rel=1e-6)
    assert largest_difference({ON: [[0.2, 0.8]], MLFLOW: [[0.2, 0.8]]}) == 0.0
    assert largest_difference({ON: [[1.0]]}) == 0.0
    with pytest.raises(ValueError, match="numbers of records"):
        largest_difference({ON: [[0.2, 0.8]], MLFLOW: []})
    with pytest.raises(ValueError, match="numbers of classes"):
        largest_difference({ON: [[0.2, 0.8]], MLFLOW: [[1.0]]})


def test_scored_window_is_the_models_probabilities_and_a_label_in_ten() -> None:
    frame = ticket_frame(300, seed=5)
    model = ticket_pipeline(frame)
    features = ["body", "account_age_days", "plan"]
    out = scored_window(model, frame, features, CLASSES, "label", chunk=70)  # several chunks
    expected = model.predict_proba(frame[features])
    assert out.shape == (300, frame.shape[1] + 3)
    assert np.allclose(np.vstack(out["probabilities"]), expected, atol=1e-12)
    assert np.allclose(out["score"], expected.max(axis=1), atol=1e-12)
    assert out["prediction"].tolist() == [CLASSES[i] for i in expected.argmax(axis=1)]
    kept = out["label"].notna()
    assert kept.to_numpy().nonzero()[0].tolist() == list(range(0, 300, LABELLED_EVERY))
    assert out.loc[kept, "label"].tolist() == frame["label"][::LABELLED_EVERY].tolist()
    assert frame["label"].notna().all()  # the caller's frame is left alone


def test_compare_pairs_columns_both_sides_compute() -> None:
    ours = [["age", "wasserstein", 0.03, 0.1, False], ["body:length", "wasserstein", 0.4, 0.1,
                                                       True],
            ["body", "abs_text_content_drift", 0.588, 0.55, True]]
    theirs = [["age", "wasserstein", 0.03, 0.1, False],
              ["body", "abs_text_content_drift", 0.595, 0.55, True],
              ["channel", "jensenshannon", 0.2, 0.1, True]]
    rows = compare(ours, theirs)
    assert [r["column"] for r in rows] == ["age", "body"]      # descriptors: ours only
    assert all(r["same"] for r in rows)
    assert rows[1]["score"] == 0.588 and rows[1]["peer_score"] == 0.595
    flipped = compare(ours, [["body", "abs_text_content_drift", 0.54, 0.55, False]])
    assert not flipped[0]["same"]
    other = compare(ours, [["age", "ks", 0.03, 0.1, False]])
    assert not other[0]["same"]
