"""The one label decoder (kernel/labels.py), and the three readers that must agree with it:
the drift check's realised performance, the gate's label array and the retrain export."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from controller.recent import label_array, labelled_rows, write_retrain_rows
from kernel.errors import DataError
from kernel.labels import LabelCodec, LabelError
from kernel.spec import DatasetSpec, parse_spec
from monitoring.check import Reference, performance
from training.data import labels_of

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(("value", "expected"), [
    (1, 1), (1.0, 1), ("1", 1), ("1.0", 1), (True, 1), ("true", 1), ("True", 1),
    (0, 0), (0.0, 0), ("0", 0), (False, 0), ("false", 0),
])
def test_numeric_labels_accept_their_obvious_encodings(value: Any, expected: int) -> None:
    assert LabelCodec(1).decode(value) == expected


@pytest.mark.parametrize("value", [" 1", "yes", "2", 2, -1, "", None, float("nan"), "1 ", [1]])
def test_anything_else_is_refused_naming_the_value(value: Any) -> None:
    with pytest.raises(LabelError, match="is not one of the spec's labels"):
        LabelCodec(1).decode(value)


def test_text_labels_are_exact_strings() -> None:
    codec = LabelCodec("churned", "stayed")
    assert [codec.decode("churned"), codec.decode("stayed")] == [1, 0]
    for value in ("Churned", " churned", 1, True):
        with pytest.raises(LabelError):
            codec.decode(value)


def test_canonical_text_is_the_specs_own_label() -> None:
    assert [LabelCodec(1).canonical(v) for v in (1.0, "1", True, 0, "false")] == [
        "1", "1", "1", "0", "0"]
    assert LabelCodec("churned", "stayed").canonical("stayed") == "stayed"


def test_decode_many_can_mark_what_it_cannot_read() -> None:
    values = pd.Series(["1", "0", "1.0", "True", "yes", None], dtype=object)
    assert LabelCodec(1).decode_many(values, strict=False).tolist() == [1, 0, 1, 1, -1, -1]
    with pytest.raises(LabelError):
        LabelCodec(1).decode_many(values)


def _spec() -> DatasetSpec:
    return parse_spec({"model_name": "m", "target": "y", "timestamp_column": "ts",
                       "id_column": "id", "positive_label": 1,
                       "features": {"numerical": ["a"], "categorical": []},
                       "metric": "roc_auc", "drift": {"min_rows": 10, "min_labelled_rows": 10}})


class _Log:
    """A WindowReader holding one frame of logged predictions with labels as stored text."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def window(self, model: str, since: datetime, until: datetime, *,
               version: int | None = None, labels_as_of: datetime | None = None) -> pd.DataFrame:
        return self.frame.copy()


# Stored label text as older clients sent it, and what each one means for a positive label 1.
SENT = [("1", 1), ("1.0", 1), ("True", 1), ("true", 1), ("0", 0), ("0.0", 0), ("False", 0)]


def test_drift_check_gate_and_retrain_export_decode_labels_the_same(tmp_path: Path) -> None:
    spec = _spec()
    texts = [t for t, _ in SENT] * 20 + [" 1", "yes"]  # two a reader cannot decode
    expected = np.array([y for _, y in SENT] * 20)
    n = len(texts)
    frame = pd.DataFrame({
        "ts": [NOW - timedelta(minutes=n - i) for i in range(n)],
        "request_id": [f"r{i}" for i in range(n)], "a": np.arange(n, dtype=float),
        # a perfect score for the intended label: any disagreement lowers the AUC below 1
        "score": np.r_[expected.astype(float), 0.5, 0.5], "label": texts})
    log = _Log(frame)

    rows = labelled_rows(log, spec, NOW - timedelta(days=1), NOW)
    assert len(rows) == len(expected)  # the two undecodable labels are left out
    assert label_array(rows, spec).tolist() == expected.tolist()  # the gate's labels

    reference = Reference(spec, frame[["a"]], np.linspace(0, 1, 50), {"roc_auc": 0.9})
    realised = performance(reference, frame)  # the drift check's realised performance
    assert realised is not None and realised.value == pytest.approx(1.0)

    exported = write_retrain_rows(log, spec, now=NOW, days=1, holdout_fraction=0.0,
                                  dest=tmp_path / "rows.parquet")
    assert exported.path is not None
    trained_on = pd.read_parquet(exported.path)
    assert labels_of(trained_on, spec).tolist() == expected.tolist()  # the retrain's labels


def test_training_refuses_a_label_the_spec_does_not_define() -> None:
    frame = pd.DataFrame({"y": [1, 0, "yes"]})
    with pytest.raises(DataError, match="target 'y': label 'yes' is not one of"):
        labels_of(frame, _spec())
