"""Segmented references and prediction drift by itself (spec drift.segments,
drift.prediction_drift; docs/monitoring.md "Segments", "Prediction drift")."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wasserstein_distance

from controller.intake import take_verdict
from controller.store import Store
from kernel.segments import segment_keys
from kernel.spec import DatasetSpec, load_spec, parse_spec
from monitoring.check import Reference, check_frames
from tests.conftest import CHURN_SPEC
from training.generate import Scenario, generate

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _churn(**drift: object) -> DatasetSpec:
    spec = load_spec(CHURN_SPEC)
    data = spec.model_dump(exclude={"source"})
    data["drift"] = {**data["drift"], **drift}
    return parse_spec(data)


def _weekly(days: int = 35, rows: int = 1000, scenario: str = "weekend",
            onset: int = 0) -> pd.DataFrame:
    return generate(days, scenario=Scenario(scenario, onset), rows_per_day=rows, seed=3)


def _day(frame: pd.DataFrame, day: int) -> pd.DataFrame:
    start = frame["ts"].min().normalize() + pd.Timedelta(days=day)
    return frame[(frame["ts"] >= start) & (frame["ts"] < start + pd.Timedelta(days=1))]


def _reference(spec: DatasetSpec, rows: pd.DataFrame) -> Reference:
    columns = [*spec.features.all, "ts"]
    return Reference(spec, rows[columns].reset_index(drop=True))


SEGMENTED = {"segments": {"by": "weekend"}}


def test_the_weekly_pattern_alarms_every_weekend_without_segments_and_never_with() -> None:
    data = _weekly()
    history = data[data["ts"] < data["ts"].min() + pd.Timedelta(days=28)]
    whole = _reference(_churn(), history)
    segmented = _reference(_churn(**SEGMENTED), history)
    saturdays = sundays = 0
    for day in range(28, 35):    # 2026-01-29 (Thursday) to 2026-02-04
        window = _day(data, day)
        weekend = window["ts"].iloc[0].dayofweek >= 5
        plain, by_segment = check_frames(whole, window), check_frames(segmented, window)
        assert plain.status == ("drift" if weekend else "ok"), (day, plain.reasons)
        assert by_segment.status == "ok", (day, by_segment.reasons)
        (segment,) = by_segment.segments   # one day is one segment
        assert segment.segment == ("weekend" if weekend else "weekday")
        assert segment.drift_share is not None and segment.drift_share < 0.3
        assert by_segment.segmented_by == "weekend"
        saturdays += weekend and window["ts"].iloc[0].dayofweek == 5
        sundays += weekend and window["ts"].iloc[0].dayofweek == 6
    assert (saturdays, sundays) == (1, 1)


def test_a_segment_is_judged_exactly_as_against_its_own_rows_of_the_reference() -> None:
    data = _weekly()
    history = data[data["ts"] < data["ts"].min() + pd.Timedelta(days=28)]
    spec = _churn(**SEGMENTED)
    window = _day(data, 30)   # a Saturday
    got = check_frames(_reference(spec, history), window)
    weekend_rows = history[(segment_keys(history, spec) == "weekend").to_numpy()]
    expected = check_frames(_reference(_churn(), weekend_rows), window)
    assert [c.model_dump() for c in got.columns] == [c.model_dump() for c in expected.columns]
    assert got.drift_share == expected.drift_share
    assert got.segments[0].reference_rows == len(weekend_rows) == 8 * 1000


def test_a_real_change_on_a_weekend_still_drifts_with_segments() -> None:
    spec = _churn(**SEGMENTED)
    history = _weekly(28)
    changed = generate(35, scenario=Scenario("covariate", 28), rows_per_day=1000, seed=5)
    saturday = _day(changed, 30)
    verdict = check_frames(_reference(spec, history), saturday)
    assert verdict.status == "drift" and verdict.segments[0].segment == "weekend"
    assert "monthly_charges" in verdict.segments[0].drifted_columns
    assert any(r.startswith("segments by weekend") and "drifted: weekend" in r
               for r in verdict.reasons)


def test_the_segment_that_drifted_most_speaks_and_small_segments_are_skipped() -> None:
    spec = _churn(segments={"by": "weekend", "min_rows": 300})
    history = _weekly(28)
    window = pd.concat([_day(history, 27).iloc[:250], _day(_weekly(35, scenario="covariate",
                                                                   onset=0), 30)])
    # 250 Wednesday rows (too few: skipped) and a Saturday of the changed world
    verdict = check_frames(_reference(spec, history), window)
    by_name = {s.segment: s for s in verdict.segments}
    assert by_name["weekday"].skipped is not None and by_name["weekday"].drift_share is None
    assert "250 in the window" in by_name["weekday"].skipped
    assert by_name["weekend"].drift_share == verdict.drift_share and verdict.status == "drift"


def test_no_segment_big_enough_falls_back_to_the_whole_reference() -> None:
    spec = _churn(segments={"by": "day_of_week", "min_rows": 5000})
    history = _weekly(28)
    window = _day(history, 27)
    verdict = check_frames(_reference(spec, history), window)
    assert verdict.segments[0].skipped is not None
    expected = check_frames(_reference(_churn(), history), window)
    assert verdict.drift_share == expected.drift_share
    assert any("compared with the whole reference" in r for r in verdict.reasons)


def test_a_reference_without_timestamps_is_one_reference_and_says_so() -> None:
    spec = _churn(**SEGMENTED)
    history = _weekly(28)
    old = Reference(spec, history[spec.features.all].reset_index(drop=True))
    verdict = check_frames(old, _day(history, 23))
    assert verdict.segments == []
    assert any("the version's reference has no timestamps" in r for r in verdict.reasons)


def test_a_categorical_column_can_segment() -> None:
    spec = _churn(segments={"by": "contract_type"})
    history = _weekly(28, scenario="none")
    verdict = check_frames(_reference(spec, history), _day(history, 20))
    assert sorted(s.segment for s in verdict.segments) == ["month-to-month", "one-year",
                                                          "two-year"]
    assert all(s.drift_share is not None for s in verdict.segments)


# --- prediction drift by itself --------------------------------------------------------------


def _scored(spec: DatasetSpec, rng: np.random.Generator, n_ref: int = 2000) -> Reference:
    features = generate(2, rows_per_day=n_ref // 2, seed=1)[spec.features.all]
    return Reference(spec, features, validation_scores=rng.beta(2, 5, n_ref),
                     metrics={"roc_auc": 0.8})


def _window(scores: np.ndarray) -> pd.DataFrame:
    frame = generate(1, rows_per_day=len(scores), seed=2)
    frame["score"] = scores
    return frame


def test_prediction_drift_alone_raises_a_ticket_at_its_own_threshold() -> None:
    rng = np.random.default_rng(0)
    spec = _churn(prediction_drift={})
    reference = _scored(spec, rng)
    assert reference.validation_scores is not None
    shifted = rng.beta(2.6, 5, 1500)   # scores moved; the features did not
    verdict = check_frames(reference, _window(shifted), now=NOW)
    alarm = verdict.prediction_alarm
    assert alarm is not None and alarm.drifted and alarm.statistic == "wasserstein"
    expected = wasserstein_distance(reference.validation_scores, shifted) / np.std(
        reference.validation_scores)
    assert alarm.value == pytest.approx(expected, rel=1e-9)
    assert alarm.threshold == pytest.approx(alarm.null_mean + 3 * alarm.null_std)
    assert verdict.drift_share == 0 and verdict.drift_level == "ticket"
    assert verdict.status == "drift"
    assert any(r.startswith("prediction drift by itself") for r in verdict.reasons)
    store = Store("sqlite://")
    take_verdict(store, verdict.model_dump_json().encode(), verdict, models={"churn"}, now=NOW)
    (row,) = store.triggers_of("churn")
    assert row.action == "ticket" and "prediction drift" in row.reason


def test_at_the_retrain_level_it_is_a_retrain_trigger() -> None:
    rng = np.random.default_rng(1)
    spec = _churn(prediction_drift={"level": "retrain"})
    verdict = check_frames(_scored(spec, rng), _window(rng.beta(3, 5, 1500)), now=NOW)
    assert verdict.drift_level == "retrain"
    store = Store("sqlite://")
    take_verdict(store, verdict.model_dump_json().encode(), verdict, models={"churn"}, now=NOW)
    (row,) = store.triggers_of("churn")
    assert row.action == "retrain" and row.reason.startswith("prediction drift on v0")


def test_the_threshold_holds_its_false_alarm_rate_on_unchanged_scores() -> None:
    rng = np.random.default_rng(2)
    spec = _churn(prediction_drift={})
    reference = _scored(spec, rng)
    alarms = sum(check_frames(reference, _window(rng.beta(2, 5, 800)), now=NOW)
                 .prediction_alarm.drifted for _ in range(40))   # type: ignore[union-attr]
    assert alarms <= 2    # 3 sigmas: about 0.5% expected, 40 windows
    plain = check_frames(_scored(_churn(), rng), _window(rng.beta(2.6, 5, 1500)), now=NOW)
    assert plain.prediction_alarm is None and plain.status == "ok"   # off: reported only


def test_multiclass_prediction_drift_is_the_class_shares_total_variation() -> None:
    spec = parse_spec({"model_name": "t", "target": "y", "timestamp_column": "ts",
                       "classes": ["a", "b", "c"], "features": {"numerical": ["x"]},
                       "drift": {"prediction_drift": {}, "min_rows": 10}})
    rng = np.random.default_rng(3)
    validation = pd.Series(rng.choice(["a", "b", "c"], 3000, p=[0.5, 0.3, 0.2]))
    reference = Reference(spec, pd.DataFrame({"x": rng.normal(size=3000)}),
                          classes=("a", "b", "c"), validation_predictions=validation)
    current = pd.DataFrame({"x": rng.normal(size=1000),
                            "prediction": rng.choice(["a", "b", "c"], 1000, p=[0.4, 0.3, 0.3])})
    verdict = check_frames(reference, current, now=NOW)
    alarm = verdict.prediction_alarm
    assert alarm is not None and alarm.statistic == "tvd" and alarm.drifted
    ref_shares = validation.value_counts(normalize=True).reindex(["a", "b", "c"]).to_numpy()
    cur_shares = current["prediction"].value_counts(normalize=True).reindex(
        ["a", "b", "c"]).to_numpy()
    assert alarm.value == pytest.approx(0.5 * np.abs(ref_shares - cur_shares).sum())
    same = pd.DataFrame({"x": rng.normal(size=1000),
                         "prediction": rng.choice(["a", "b", "c"], 1000, p=[0.5, 0.3, 0.2])})
    assert not check_frames(reference, same, now=NOW).prediction_alarm.drifted  # type: ignore[union-attr]


# --- calibrated thresholds ------------------------------------------------------------------


def test_calibrated_thresholds_stop_small_windows_alarming_on_noise() -> None:
    history = generate(20, rows_per_day=2500, seed=3)
    fixed_spec = _churn(min_rows=50)
    calibrated_spec = _churn(min_rows=50, calibrated_thresholds={})
    fixed = Reference(fixed_spec, history[fixed_spec.features.all])
    calibrated = Reference(calibrated_spec, history[fixed_spec.features.all])
    alarms = {"fixed": 0, "calibrated": 0}
    for seed in range(20):   # 100-row windows of an unchanged world
        window = generate(1, rows_per_day=100, seed=100 + seed)
        alarms["fixed"] += check_frames(fixed, window).status == "drift"
        verdict = check_frames(calibrated, window)
        alarms["calibrated"] += verdict.status == "drift"
        distances = [c for c in verdict.columns if c.method in ("wasserstein", "jensenshannon")]
        assert distances and all(c.calibrated for c in distances)
        assert all(c.threshold != 0.1 for c in distances)
    assert alarms["fixed"] >= 3 and alarms["calibrated"] == 0
    changed = generate(1, scenario=Scenario("covariate", 0), rows_per_day=300, seed=9)
    verdict = check_frames(calibrated, changed)
    assert verdict.status == "drift" and "tenure_months" in verdict.drifted_columns


def test_a_calibrated_threshold_shrinks_as_the_window_grows_and_is_cached() -> None:
    history = generate(10, rows_per_day=2000, seed=4)
    spec = _churn(calibrated_thresholds={"sigmas": 3, "resamples": 20})
    reference = Reference(spec, history[spec.features.all])
    small = check_frames(reference, generate(1, rows_per_day=300, seed=11))
    large = check_frames(reference, generate(1, rows_per_day=5000, seed=12))
    by_column = {c.column: c for c in small.columns}
    for column in large.columns:
        if column.method == "wasserstein":
            assert column.threshold < by_column[column.column].threshold
    assert {k[2] for k in reference.distance_nulls} == {300, 5000}
    # a per-column threshold set in the spec wins over calibration
    pinned = _churn(calibrated_thresholds={}, per_column={"tenure_months": {"threshold": 0.5}})
    verdict = check_frames(Reference(pinned, history[spec.features.all]),
                           generate(1, rows_per_day=300, seed=11))
    tenure = next(c for c in verdict.columns if c.column == "tenure_months")
    assert tenure.threshold == 0.5 and not tenure.calibrated


@pytest.mark.parametrize("drift", [SEGMENTED, {"calibrated_thresholds": {}},
                                   {"prediction_drift": {}}])
def test_the_summary_engine_refuses_what_it_cannot_compute(drift: dict[str, object],
                                                           tmp_path: object) -> None:
    from kernel.errors import UsageError
    from monitoring.job import _summary_verdict
    from monitoring.settings import MonitoringSettings

    spec = _churn(**drift)
    settings = MonitoringSettings(drift_engine="summary", home=str(tmp_path))
    reference = Reference(spec, generate(1, rows_per_day=200, seed=1)[spec.features.all])
    with pytest.raises(UsageError, match=f"does not take drift.{next(iter(drift))}; use "
                                         "DRIFTLOOP_DRIFT_ENGINE=exact"):
        _summary_verdict(settings, reference, "churn", 1, NOW, NOW, NOW)


def test_data_quality_reads_the_whole_window_not_the_judged_segment() -> None:
    spec = _churn(**SEGMENTED)
    history = _weekly(28)
    saturday = _day(generate(35, scenario=Scenario("covariate", 28), rows_per_day=1000,
                             seed=5), 30)   # a changed world: the weekend segment is judged
    window = pd.concat([_day(history, 27), saturday]).reset_index(drop=True)
    window.loc[window["ts"].dt.dayofweek < 5, "total_charges"] = np.nan   # weekday rows only
    verdict = check_frames(_reference(spec, history), window)
    judged = max(verdict.segments, key=lambda s: s.drift_share or 0)
    assert judged.segment == "weekend" and verdict.drift_share == judged.drift_share
    plain = check_frames(_reference(_churn(), history), window)
    quality = {q.column: q for q in verdict.data_quality}
    assert quality["total_charges"].missing_share == pytest.approx(0.5)
    assert [q.model_dump() for q in verdict.data_quality] == [
        q.model_dump() for q in plain.data_quality]
