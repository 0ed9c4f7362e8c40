"""check_frames on hand-built references: statuses, performance, quality, overrides."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from kernel.labels import LabelCodec
from kernel.spec import DatasetSpec, parse_spec
from monitoring.check import Reference, check_frames

NOW = datetime(2026, 2, 1, tzinfo=UTC)


def _spec(**drift: object) -> DatasetSpec:
    return parse_spec({"model_name": "m", "target": "y", "timestamp_column": "ts",
                       "positive_label": "yes",
                       "features": {"numerical": ["a", "b"], "categorical": ["c"]},
                       "metric": "roc_auc", "drift": {"min_rows": 100, **drift}})


def _frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"a": rng.normal(shift, 1, n), "b": rng.uniform(0, 10, n),
                         "c": rng.choice(["x", "y", "z"], n)})


def _reference(spec: DatasetSpec, rng: np.random.Generator) -> Reference:
    return Reference(spec, _frame(rng, 3000), rng.uniform(0, 1, 2000), {"roc_auc": 0.8})


def _labelled(frame: pd.DataFrame, rng: np.random.Generator, informative: bool) -> pd.DataFrame:
    y = rng.random(len(frame)) < 0.4
    noise = rng.uniform(0, 1, len(frame))
    out = frame.copy()
    out["score"] = np.clip(0.25 * y + 0.75 * noise, 0, 1) if informative else noise
    out["label"] = np.where(y, "yes", "no")
    return out


def test_a_quiet_window_is_ok_with_performance_against_the_baseline() -> None:
    rng = np.random.default_rng(0)
    spec = _spec()
    current = _labelled(_frame(rng, 1500), rng, informative=True)
    verdict = check_frames(_reference(spec, rng), current, version=3, now=NOW)
    assert verdict.status == "ok" and verdict.exit_code == 0
    assert (verdict.model, verdict.version, verdict.rows, verdict.labelled_rows) == ("m", 3, 1500,
                                                                                     1500)
    assert [c.method for c in verdict.columns] == ["wasserstein", "wasserstein", "jensenshannon"]
    assert verdict.performance.value == pytest.approx(0.8, abs=0.05)
    assert verdict.window_start <= verdict.window_end == NOW


def test_uninformative_scores_are_degraded_and_alarm() -> None:
    rng = np.random.default_rng(1)
    spec = _spec()
    current = _labelled(_frame(rng, 1500), rng, informative=False)
    verdict = check_frames(_reference(spec, rng), current, now=NOW)
    assert verdict.status == "degraded" and verdict.exit_code == 1
    assert verdict.performance.degraded
    assert any(r.startswith("performance degraded") for r in verdict.reasons)


def test_too_few_labels_give_no_performance_verdict() -> None:
    rng = np.random.default_rng(2)
    spec = _spec()
    current = _labelled(_frame(rng, 1500), rng, informative=False)
    current.loc[50:, "label"] = None
    verdict = check_frames(_reference(spec, rng), current, now=NOW)
    assert verdict.labelled_rows == 50 and verdict.performance.value is None
    assert verdict.status == "ok"


def test_a_shift_over_the_share_threshold_is_drift_and_names_the_columns() -> None:
    rng = np.random.default_rng(3)
    spec = _spec(drift_share=0.3)
    current = _frame(rng, 1500, shift=1.0)
    verdict = check_frames(_reference(spec, rng), current, now=NOW)
    assert verdict.status == "drift" and verdict.drifted_columns == ["a"]
    assert verdict.drift_share == pytest.approx(1 / 3)
    assert verdict.prediction_drift is None  # no score column in the window


def test_per_column_overrides_change_method_and_threshold() -> None:
    rng = np.random.default_rng(4)
    spec = _spec(per_column={"a": {"method": "ks", "threshold": 0.01},
                             "b": {"threshold": 0.5}})
    verdict = check_frames(_reference(spec, rng), _frame(rng, 800), now=NOW)
    columns = {c.column: c for c in verdict.columns}
    assert (columns["a"].method, columns["a"].threshold) == ("ks", 0.01)
    assert (columns["b"].method, columns["b"].threshold) == ("wasserstein", 0.5)


def test_quality_flags_missing_unseen_and_out_of_range() -> None:
    rng = np.random.default_rng(5)
    spec = _spec()
    current = _frame(rng, 1000)
    current.loc[:99, "a"] = np.nan
    current.loc[:49, "c"] = "new"
    current.loc[:29, "b"] = 1e6
    verdict = check_frames(_reference(spec, rng), current, now=NOW)
    quality = {q.column: q for q in verdict.data_quality}
    assert quality["a"].missing_share == pytest.approx(0.1) and quality["a"].flagged
    assert quality["c"].unseen_categories == ["new"] and quality["c"].unseen_share == 0.05
    assert quality["b"].out_of_range_share == pytest.approx(0.03, abs=0.003) and quality["b"].flagged
    assert verdict.status == "drift" and verdict.quality_flagged


def test_insufficient_rows_never_alarm() -> None:
    rng = np.random.default_rng(6)
    spec = _spec()
    current = _frame(rng, 99, shift=5.0)
    verdict = check_frames(_reference(spec, rng), current, now=NOW)
    assert verdict.status == "insufficient_data" and not verdict.alarming
    assert "fewer than drift.min_rows=100" in verdict.reasons[0]


@pytest.mark.parametrize(("labels", "positive", "expected"), [
    (["yes", "no", "yes"], "yes", [1, 0, 1]),
    (["1", "0", "1.0"], 1, [1, 0, 1]),
    ([1.0, 0.0, 1.0], 1, [1, 0, 1]),
    (["True", "False", "True"], True, [1, 0, 1]),
])
def test_labels_are_compared_with_the_positive_label(labels: list, positive: object,
                                                     expected: list[int]) -> None:
    assert LabelCodec(positive).decode_many(pd.Series(labels)).tolist() == expected
