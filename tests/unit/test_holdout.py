"""The static holdout (controller/holdout.py): scored by the champion each period and after a
promotion, against scikit-learn; recorded on the version and as a run; a drop against the
previous champion asks exactly once per version; an unreadable file is counted, never raised;
and the reconcile pass runs it (a retrain trigger of source holdout is taken)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, log_loss, roc_auc_score

from controller.evidence import Evaluator, ModelCache
from controller.holdout import HoldoutMonitor, score_holdout
from controller.metrics import ControllerMetrics
from controller.reconcile import Controller, Managed
from controller.settings import ControllerSettings
from controller.store import Store
from kernel.spec import DatasetSpec, parse_spec
from monitoring.check import worse_by
from monitoring.predlog import open_log
from registry import ALIAS_CHAMPION, ALIAS_PREVIOUS, TAG_PREFIX, NewVersion
from registry.memory import InMemoryRegistry
from tests.unit.controller_harness import RecordingLauncher

T0 = datetime(2026, 6, 1, tzinfo=UTC)


class Blurred:
    """A stand-in model: the probability of ``yes`` is ``a`` blurred by ``noise`` (seeded),
    so a larger noise is a worse model on the same rows."""

    def __init__(self, noise: float) -> None:
        self.noise = noise

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        a = frame["a"].to_numpy(dtype=float)
        rng = np.random.default_rng(0)
        p = np.clip(a + self.noise * rng.normal(size=len(a)), 0.001, 0.999)
        return np.column_stack([1 - p, p])


def _spec(tmp_path: Path, **holdout: Any) -> DatasetSpec:
    return parse_spec({"model_name": "churn", "target": "y", "timestamp_column": "ts",
                       "positive_label": "yes", "negative_label": "no",
                       "features": {"numerical": ["a"], "categorical": ["plan"]},
                       "holdout": {"path": "holdout.csv", **holdout}},
                      source=tmp_path / "spec.yaml")


def _holdout(tmp_path: Path, n: int = 400, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, n)
    frame = pd.DataFrame({"a": a, "plan": rng.choice(["basic", "pro"], n),
                          "y": np.where(rng.random(n) < a, "yes", "no")})
    frame.to_csv(tmp_path / "holdout.csv", index=False)
    return frame


def _register(registry: InMemoryRegistry, spec: DatasetSpec, noise: float) -> int:
    empty = pd.DataFrame({"a": [0.5]})
    return registry.register(NewVersion(
        "churn", model=Blurred(noise), spec_yaml=spec.to_yaml(), input_example=empty,
        reference=empty, validation=empty, metrics={}, params={}, tags={})).version


def _expected(frame: pd.DataFrame, noise: float) -> float:
    scores = Blurred(noise).predict_proba(frame)[:, 1]
    return float(roc_auc_score(frame["y"] == "yes", scores))


def _world(tmp_path: Path) -> tuple[HoldoutMonitor, InMemoryRegistry, Store, ControllerMetrics]:
    registry, store, metrics = InMemoryRegistry(), Store("sqlite://"), ControllerMetrics.create()
    cache = ModelCache(registry, tmp_path / "bundles")
    return (HoldoutMonitor(store=store, registry=registry, cache=lambda: cache, metrics=metrics),
            registry, store, metrics)


def _gauge(metrics: ControllerMetrics, version: int) -> float | None:
    return metrics.registry.get_sample_value("driftloop_holdout_metric",
                                             {"model": "churn", "version": str(version)})


def test_the_score_is_scikit_learns_metric_by_the_specs_decoder(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    frame = _holdout(tmp_path)
    value, rows = score_holdout(frame, spec, spec, Blurred(0.3), None)
    assert rows == 400 and value == pytest.approx(_expected(frame, 0.3))
    lossy = parse_spec({**spec.model_dump(exclude_none=True), "metric": "log_loss"})
    loss, _ = score_holdout(frame, lossy, spec, Blurred(0.3), None)
    assert loss == pytest.approx(log_loss(frame["y"] == "yes",
                                          Blurred(0.3).predict_proba(frame)[:, 1]))
    assert worse_by(0.40, 0.30, lower_is_better=True) == pytest.approx(0.10)
    assert worse_by(0.80, 0.90, lower_is_better=False) == pytest.approx(0.10)


def test_scored_each_period_and_recorded_on_the_version(tmp_path: Path) -> None:
    spec = _spec(tmp_path, every_hours=24)
    frame = _holdout(tmp_path)
    monitor, registry, store, metrics = _world(tmp_path)
    v1 = _register(registry, spec, 0.1)
    registry.set_alias("churn", ALIAS_CHAMPION, v1)
    for hours in (0, 1, 23, 24, 30, 48):
        assert monitor.check("churn", spec, T0 + timedelta(hours=hours)) == 0
    runs = [r for r in registry.runs if r["tags"].get(TAG_PREFIX + "kind") == "holdout"]
    assert len(runs) == 3                                   # at 0, 24 and 48 hours
    expected = _expected(frame, 0.1)
    assert runs[-1]["metrics"]["holdout_roc_auc"] == pytest.approx(expected)
    assert runs[-1]["params"]["rows"] == 400 and runs[-1]["experiment"] == "driftloop-monitoring"
    tags = registry.get_version("churn", v1).tags
    assert float(tags[TAG_PREFIX + "holdout_roc_auc"]) == pytest.approx(expected, abs=1e-6)
    assert tags[TAG_PREFIX + "holdout_scored_at"] == (T0 + timedelta(hours=48)).isoformat()
    assert _gauge(metrics, v1) == pytest.approx(expected)
    assert store.triggers_of("churn") == []                 # no previous champion: recorded
    # a restart: the version's tag is the throttle, so the new monitor is not due yet
    again, *_ = _world(tmp_path)
    again.registry = registry
    assert again.check("churn", spec, T0 + timedelta(hours=50)) == 0
    assert len([r for r in registry.runs if r["name"].startswith("holdout")]) == 3


def test_a_worse_champion_triggers_a_retrain_once_per_version(tmp_path: Path) -> None:
    spec = _spec(tmp_path, every_hours=24)
    frame = _holdout(tmp_path)
    monitor, registry, store, metrics = _world(tmp_path)
    v1, v2 = _register(registry, spec, 0.05), _register(registry, spec, 0.8)
    registry.set_alias("churn", ALIAS_CHAMPION, v1)
    monitor.check("churn", spec, T0)
    # a promotion: v2 is champion, v1 kept as @previous; scored at once, not a day later
    registry.set_alias("churn", ALIAS_CHAMPION, v2)
    registry.set_alias("churn", ALIAS_PREVIOUS, v1)
    monitor.check("churn", spec, T0 + timedelta(hours=1))
    triggers = store.triggers_of("churn")
    assert [(t.source, t.action, t.status, t.version) for t in triggers] == [
        ("holdout", "retrain", "pending", v2)]
    good, bad = _expected(frame, 0.05), _expected(frame, 0.8)
    assert good - bad > 0.05                                  # the default tolerance
    assert triggers[0].value == pytest.approx(bad)
    assert f"champion v{v2} {bad:.4f} is worse than previous champion v{v1}'s {good:.4f}" \
        in triggers[0].reason
    # v1's score came from its tags (same file): only v2 was scored
    assert len([r for r in registry.runs if r["name"].startswith("holdout")]) == 2
    assert _gauge(metrics, v1) == pytest.approx(good) and _gauge(metrics, v2) == pytest.approx(bad)
    for hours in (25, 49):                                    # re-scored, never re-triggered
        monitor.check("churn", spec, T0 + timedelta(hours=hours))
    assert len(store.triggers_of("churn")) == 1
    assert len([r for r in registry.runs if r["name"].startswith("holdout")]) == 4


def test_a_new_holdout_file_rescores_the_previous_champion(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    _holdout(tmp_path, seed=1)
    monitor, registry, store, _ = _world(tmp_path)
    v1, v2 = _register(registry, spec, 0.05), _register(registry, spec, 0.05)
    registry.set_alias("churn", ALIAS_CHAMPION, v1)
    monitor.check("churn", spec, T0)
    frame = _holdout(tmp_path, seed=2)                        # another file: v1's tag is stale
    registry.set_alias("churn", ALIAS_CHAMPION, v2)
    registry.set_alias("churn", ALIAS_PREVIOUS, v1)
    monitor.check("churn", spec, T0 + timedelta(hours=1))
    assert [r["params"]["version"] for r in registry.runs] == [v1, v2, v1]
    assert float(registry.get_version("churn", v1).tags[TAG_PREFIX + "holdout_roc_auc"]) == \
        pytest.approx(_expected(frame, 0.05), abs=1e-6)
    assert store.triggers_of("churn") == []                   # equal models: no drop


@pytest.mark.parametrize(("action", "tolerance", "expected"), [
    ("ticket", None, [("holdout", "ticket", "ignored")]),
    ("none", None, []),
    ("retrain", 0.9, []),                                      # within a (large) tolerance
])
def test_what_a_drop_does_follows_the_spec(tmp_path: Path, action: str, tolerance: float | None,
                                           expected: list[tuple[str, str, str]]) -> None:
    spec = _spec(tmp_path, action=action, **({} if tolerance is None else
                                             {"tolerance": tolerance}))
    _holdout(tmp_path)
    monitor, registry, store, metrics = _world(tmp_path)
    v1, v2 = _register(registry, spec, 0.05), _register(registry, spec, 0.8)
    registry.set_alias("churn", ALIAS_CHAMPION, v2)
    registry.set_alias("churn", ALIAS_PREVIOUS, v1)
    for hours in (0, 24):
        assert monitor.check("churn", spec, T0 + timedelta(hours=hours)) == 0
    assert [(t.source, t.action, t.status) for t in store.triggers_of("churn")] == expected
    tickets = metrics.registry.get_sample_value("driftloop_controller_triggers_total",
                                                {"source": "holdout", "outcome": "ticket"})
    assert tickets == (1.0 if action == "ticket" else None)


@pytest.mark.parametrize(("write", "message"), [
    (lambda p: None, "cannot read"),
    (lambda p: p.write_text("a,plan,y\n0.5,basic,maybe\n0.2,pro,no\n"),
     "label 'maybe' is not one of the spec's labels"),
    (lambda p: p.write_text("a,y\n0.5,yes\n0.2,no\n"), "missing columns ['plan']"),
])
def test_an_unreadable_holdout_is_counted_not_raised(tmp_path: Path, caplog: Any, write: Any,
                                                     message: str) -> None:
    spec = _spec(tmp_path)
    write(tmp_path / "holdout.csv")
    monitor, registry, store, metrics = _world(tmp_path)
    registry.set_alias("churn", ALIAS_CHAMPION, _register(registry, spec, 0.1))
    with caplog.at_level(logging.ERROR, logger="controller.holdout"):
        assert monitor.check("churn", spec, T0) == 1
        assert monitor.check("churn", spec, T0 + timedelta(hours=1)) == 0  # not due again
    assert metrics.registry.get_sample_value("driftloop_holdout_errors_total",
                                             {"model": "churn"}) == 1
    assert message in caplog.text and store.triggers_of("churn") == []
    assert registry.runs == []


def test_the_error_counter_is_exported_at_zero_before_any_failure(tmp_path: Path) -> None:
    # DriftloopHoldoutFailing is an increase(): a series born at 1 would never fire.
    spec = _spec(tmp_path)
    monitor, _, _, metrics = _world(tmp_path)
    assert monitor.check("churn", spec, T0) == 0  # no champion yet: nothing scored
    assert metrics.registry.get_sample_value("driftloop_holdout_errors_total",
                                             {"model": "churn"}) == 0
    assert monitor.check("other", spec.model_copy(update={"holdout": None}), T0) == 0
    assert metrics.registry.get_sample_value("driftloop_holdout_errors_total",
                                             {"model": "other"}) is None


def test_the_reconcile_pass_scores_the_holdout_and_takes_its_trigger(tmp_path: Path) -> None:
    (tmp_path / "history.csv").write_text("placeholder")  # a retrain needs training data
    spec = _spec(tmp_path).model_copy(update={"history": ["history.csv"]})
    _holdout(tmp_path)
    registry, store, metrics = InMemoryRegistry(), Store("sqlite://"), ControllerMetrics.create()
    v1, v2 = _register(registry, spec, 0.05), _register(registry, spec, 0.8)
    registry.set_alias("churn", ALIAS_CHAMPION, v2)
    registry.set_alias("churn", ALIAS_PREVIOUS, v1)
    _, reader = open_log(tmp_path / "log")
    settings = ControllerSettings(home=tmp_path / "home", controller_token="t",
                                  controller_recent_days=0)
    launcher = RecordingLauncher()
    controller = Controller(settings, store=store, registry=registry, launcher=launcher,
                            reader=reader, evaluator=Evaluator(registry, reader, ModelCache(
                                registry, tmp_path / "bundles")),
                            models={"churn": Managed(spec, tmp_path / "spec.yaml")},
                            metrics=metrics, clock=lambda: T0)
    state = controller.step("churn")
    assert controller.errors == 0
    [trigger] = store.triggers_of("churn")
    assert (trigger.source, trigger.status) == ("holdout", "done")
    assert state.phase == "training" and len(launcher.requests) == 1
    assert launcher.requests[0].reason == "holdout"
    assert state.cycle is not None and state.cycle.reasons[0].startswith(
        "holdout: holdout roc_auc of champion v2")


class Fixed:
    """A multi-class stand-in: the probabilities of the row's ``a`` bucket, in its classes'
    order (z, x, y: not the spec's)."""

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        table = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
        return table[np.minimum((frame["a"].to_numpy(dtype=float) * 3).astype(int), 2)]


def test_a_multiclass_holdout_uses_the_versions_class_order(tmp_path: Path) -> None:
    spec = parse_spec({"model_name": "churn", "target": "y", "timestamp_column": "ts",
                       "classes": ["x", "y", "z"], "features": {"numerical": ["a"]},
                       "holdout": {"path": "holdout.csv"}}, source=tmp_path / "spec.yaml")
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"a": rng.uniform(0, 1, 300), "y": rng.choice(["x", "y", "z"], 300)})
    frame.to_csv(tmp_path / "holdout.csv", index=False)
    order = ["z", "x", "y"]
    value, rows = score_holdout(frame, spec, spec, Fixed(), order)
    predicted = np.asarray(order)[Fixed().predict_proba(frame).argmax(axis=1)]
    assert rows == 300 and value == pytest.approx(
        f1_score(frame["y"], predicted, average="macro", labels=["x", "y", "z"]))
    monitor, registry, _, metrics = _world(tmp_path)
    empty = pd.DataFrame({"a": [0.5]})
    v1 = registry.register(NewVersion(
        "churn", model=Fixed(), spec_yaml=spec.to_yaml(), input_example=empty, reference=empty,
        validation=empty, metrics={}, params={}, tags={}, classes=order)).version
    registry.set_alias("churn", ALIAS_CHAMPION, v1)
    assert monitor.check("churn", spec, T0) == 0
    assert _gauge(metrics, v1) == pytest.approx(value)
