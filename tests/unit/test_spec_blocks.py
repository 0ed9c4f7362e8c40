"""The spec's segments, prediction-drift, coverage, SLO and holdout blocks: defaults, and
refusals that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kernel.errors import SpecError
from kernel.spec import parse_spec, spec_from_yaml

BASE: dict[str, Any] = dict(model_name="m", target="y", timestamp_column="t",
                            features={"numerical": ["a"], "categorical": ["plan"]})


def test_defaults_of_each_block() -> None:
    spec = parse_spec({**BASE, "drift": {"segments": {"by": "weekend"}, "prediction_drift": {}},
                       "slo": [{"objective": 0.8}], "holdout": {"path": "h.csv"},
                       "retrain": {"coverage": {}}}, source=Path("/x/spec.yaml"))
    assert spec.drift.segments is not None and spec.drift.segments.min_rows == 100
    assert spec.drift.prediction_drift is not None
    assert (spec.drift.prediction_drift.level, spec.drift.prediction_drift.sigmas) == ("ticket", 3.0)
    slo = spec.slo[0]
    assert (slo.window_days, slo.budget, slo.period_days, slo.on_exhausted) == (7, 0.995, 30,
                                                                                "retrain")
    assert slo.label(spec.metric) == "roc_auc-7d"
    assert spec.holdout_path() == Path("/x/h.csv")
    assert spec.retrain.coverage is not None and spec.retrain.coverage.min_decile_share == 0.02
    # a version's stored spec round-trips, and a spec without SLOs writes no slo key
    assert spec_from_yaml(spec.to_yaml()) == spec.model_copy(update={"source": None})
    assert "slo" not in parse_spec(BASE).to_yaml()


def test_a_categorical_feature_can_segment() -> None:
    spec = parse_spec({**BASE, "drift": {"segments": {"by": "plan"}}})
    assert spec.drift.segments is not None and spec.drift.segments.by == "plan"


@pytest.mark.parametrize(("extra", "message"), [
    ({"drift": {"segments": {"by": "a"}}}, "'a' is neither"),
    ({"drift": {"segments": {"by": "hour_of_day", "hour_buckets": 5}}}, "must divide 24"),
    ({"slo": [{"objective": 1.5}]}, "objective 1.5 is outside [0, 1]"),
    ({"slo": [{"objective": 0.5, "metric": "macro_f1"}]}, "does not fit a binary spec"),
    ({"slo": [{"objective": 0.5}, {"objective": 0.6}]}, "names must be distinct"),
    ({"slo": [{"objective": 0.5, "budget": 1}]}, "slo.0.budget"),
    ({"retrain": {"coverage": {"min_segment_share": 0.1}}}, "needs drift.segments"),
    ({"holdout": {"path": "h.csv", "every_hours": 0}}, "holdout.every_hours"),
])
def test_refusals_name_the_field(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_spec({**BASE, **extra})


def test_a_multiclass_slo_takes_multiclass_metrics() -> None:
    multi = {**BASE, "classes": ["x", "y", "z"]}
    assert parse_spec({**multi, "slo": [{"objective": 0.7}]}).slo[0].label("macro_f1") \
        == "macro_f1-7d"
    with pytest.raises(SpecError, match="roc_auc does not fit a multi-class spec"):
        parse_spec({**multi, "slo": [{"objective": 0.7, "metric": "roc_auc"}]})
