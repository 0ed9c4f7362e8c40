"""The label-free estimate in the verdict: estimated beside realised, the outcome precedence
(realised wins), versions without a calibration, and what the controller's intake does."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from controller.intake import take_verdict
from controller.store import Store
from kernel.calibration import fit_calibration
from kernel.spec import DatasetSpec, parse_spec
from monitoring.check import Reference, check_frames, outcome
from monitoring.verdict import EstimatedPerformance, Performance
from registry import TAG_PREFIX
from registry.bundle import Bundle
from registry.memory import InMemoryRegistry
from registry.port import BUNDLE_DIR
from training.generate import Scenario, generate
from training.train import train

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _spec(**drift: object) -> DatasetSpec:
    return parse_spec({"model_name": "est", "target": "y", "timestamp_column": "ts",
                       "features": {"numerical": ["a"]}, "metric": "accuracy",
                       "drift": {"min_rows": 100, "min_labelled_rows": 200,
                                 "performance_tolerance": 0.05, **drift}})


def _reference(spec: DatasetSpec, rng: np.random.Generator, *, calibrated: bool = True
               ) -> Reference:
    s = rng.uniform(0, 1, 5000)     # scores calibrated by construction: P(y = 1 | s) = s
    y = (rng.random(s.size) < s).astype(int)
    calibration = fit_calibration(y, s, metrics=[spec.metric]) if calibrated else None
    accuracy = float(np.mean((s >= 0.5) == (y == 1)))        # about 0.75
    return Reference(spec, pd.DataFrame({"a": rng.normal(0, 1, 3000)}), s, {"accuracy": accuracy},
                     calibration)


def _window(rng: np.random.Generator, n: int, scores: np.ndarray,
            labelled: int = 0) -> pd.DataFrame:
    frame = pd.DataFrame({"a": rng.normal(0, 1, n), "score": scores})
    y = (rng.random(n) < scores).astype(int)
    frame["label"] = pd.Series([str(v) for v in y], dtype=object).where(np.arange(n) < labelled)
    return frame


def test_unsure_scores_without_labels_are_estimated_degraded_a_ticket() -> None:
    rng = np.random.default_rng(0)
    spec = _spec()
    reference = _reference(spec, rng)
    # inputs moved where the model is unsure: scores near 0.5, expected accuracy
    # E[max(s, 1 - s)] = 0.5 + E|s - 0.5| = 0.575
    verdict = check_frames(reference, _window(rng, 2000, rng.uniform(0.35, 0.65, 2000)), now=NOW)
    est = verdict.estimated
    assert verdict.status == "estimated_degraded" and verdict.alarming
    assert est is not None and est.value == pytest.approx(0.575, abs=0.02)
    assert est.degraded and not est.superseded and est.action == "ticket"
    assert est.lower is not None and est.upper is not None and est.lower < est.value < est.upper
    assert est.baseline == pytest.approx(0.75, abs=0.03)
    assert set(est.metrics) == {"accuracy", "roc_auc", "f1"}
    assert sum(est.confusion.values()) == pytest.approx(1.0)
    assert verdict.performance is not None and verdict.performance.value is None
    assert any(r.startswith("estimated accuracy") and "degraded: ticket" in r
               for r in verdict.reasons)


def test_with_enough_labels_realised_performance_wins() -> None:
    rng = np.random.default_rng(1)
    spec = _spec()
    reference = _reference(spec, rng)
    # the same unsure scores, but the labels say the model is right (concept drift the other
    # way): realised accuracy decides and is within tolerance
    scores = rng.uniform(0.35, 0.65, 2000)
    frame = _window(rng, 2000, scores, labelled=2000)
    frame["label"] = np.where(scores >= 0.5, "1", "0")
    verdict = check_frames(reference, frame, now=NOW)
    assert verdict.status == "ok"
    assert verdict.performance is not None and verdict.performance.value == 1.0
    assert verdict.estimated is not None and verdict.estimated.degraded
    assert verdict.estimated.superseded and not verdict.estimated.alarming


def test_a_version_without_calibration_has_no_estimate_and_says_so() -> None:
    rng = np.random.default_rng(2)
    spec = _spec()
    reference = _reference(spec, rng, calibrated=False)
    verdict = check_frames(reference, _window(rng, 2000, rng.uniform(0.35, 0.65, 2000)), now=NOW)
    assert verdict.status == "ok"
    assert verdict.estimated is not None and verdict.estimated.value is None
    assert "no score calibration" in (verdict.estimated.note or "")
    assert any("no score calibration" in r for r in verdict.reasons)


def test_a_calibrated_window_like_the_reference_is_ok_and_near_the_baseline() -> None:
    rng = np.random.default_rng(3)
    spec = _spec()
    reference = _reference(spec, rng)
    verdict = check_frames(reference, _window(rng, 2000, rng.uniform(0, 1, 2000)), now=NOW)
    est = verdict.estimated
    assert verdict.status == "ok" and est is not None and not est.degraded
    assert est.value == pytest.approx(reference.metrics["accuracy"], abs=0.03)


def _perf(value: float | None, degraded: bool = False) -> Performance:
    return Performance(metric="accuracy", value=value, baseline=0.8, tolerance=0.05,
                       labelled_rows=0 if value is None else 500, degraded=degraded)


def _est(degraded: bool, superseded: bool = False) -> EstimatedPerformance:
    return EstimatedPerformance(metric="accuracy", value=0.6 if degraded else 0.79,
                                baseline=0.8, tolerance=0.05, degraded=degraded,
                                superseded=superseded)


@pytest.mark.parametrize(("perf", "est", "drift", "expected"), [
    (None, None, False, "ok"),
    (None, _est(False), False, "ok"),
    (None, _est(True), False, "estimated_degraded"),
    (_perf(None), _est(True), False, "estimated_degraded"),        # too few labels
    (_perf(0.79), _est(True), False, "ok"),                          # realised wins
    (_perf(0.79), _est(True, superseded=True), False, "ok"),
    (_perf(0.6, degraded=True), _est(False), False, "degraded"),
    (_perf(0.6, degraded=True), _est(True), True, "degraded"),
    (None, _est(True), True, "drift"),                               # retrain-level first
])
def test_outcome_precedence(perf: Performance | None, est: EstimatedPerformance | None,
                            drift: bool, expected: str) -> None:
    assert outcome(perf, est, dataset_drift=drift, quality_flagged=False) == expected


@pytest.mark.parametrize(("action", "retrain_triggers", "tickets"), [
    ("ticket", 0, 1), ("retrain", 1, 0), ("none", 0, 0)])
def test_intake_maps_the_estimate_to_its_action(action: str, retrain_triggers: int,
                                                tickets: int) -> None:
    rng = np.random.default_rng(4)
    spec = _spec(estimated_action=action)
    verdict = check_frames(_reference(spec, rng), _window(rng, 2000, rng.uniform(0.35, 0.65,
                                                                                 2000)), now=NOW)
    assert verdict.status == "estimated_degraded"
    store = Store("sqlite://")
    body = verdict.model_dump_json().encode()
    result = take_verdict(store, body, verdict, models={"est"}, now=NOW)
    rows = store.triggers_of("est")
    assert len(result.trigger_ids) == retrain_triggers
    assert [r.action for r in rows if r.status == "pending"] == ["retrain"] * retrain_triggers
    assert [r.action for r in rows if r.action == "ticket"] == ["ticket"] * tickets
    assert all(r.status == "ignored" for r in rows if r.action == "ticket")
    again = take_verdict(store, body, verdict, models={"est"}, now=NOW)
    assert not again.trigger_ids and len(store.triggers_of("est")) == len(rows)   # once


def test_intake_ignores_a_superseded_estimate() -> None:
    rng = np.random.default_rng(5)
    spec = _spec(estimated_action="retrain")
    scores = rng.uniform(0.35, 0.65, 2000)
    frame = _window(rng, 2000, scores, labelled=2000)
    frame["label"] = np.where(scores >= 0.5, "1", "0")
    verdict = check_frames(_reference(spec, rng), frame, now=NOW)
    store = Store("sqlite://")
    take_verdict(store, verdict.model_dump_json().encode(), verdict, models={"est"}, now=NOW)
    assert [r.action for r in store.triggers_of("est")] == ["performance"]


def test_a_trained_version_carries_its_calibration_and_an_old_one_none(
        tmp_path: Path, churn_spec: DatasetSpec) -> None:
    data = tmp_path / "rows.parquet"
    generate(3, scenario=Scenario("none", 0), rows_per_day=600, seed=2).to_parquet(data,
                                                                                  index=False)
    registry = InMemoryRegistry()
    result = train(churn_spec, [data], registry)
    bundle = Bundle(registry.download(churn_spec.model_name, result.version.version,
                                      tmp_path / "b"))
    stored = bundle.calibration
    assert stored is not None and stored["rows"] == int(result.version.tags[
        TAG_PREFIX + "validation_rows"])
    reference = Reference.from_bundle(bundle)
    assert reference.calibration is not None
    assert reference.calibration.method in result.version.tags[TAG_PREFIX + "calibration"]
    assert set(reference.calibration.spreads) >= {"roc_auc", "accuracy", "f1"}
    (bundle.root / BUNDLE_DIR / "calibration.json").unlink()    # as trained before CBPE
    old = Bundle(bundle.root)
    assert old.is_complete() and old.calibration is None
    assert Reference.from_bundle(old).calibration is None
