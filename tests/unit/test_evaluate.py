"""The numpy metrics against scikit-learn's, on random scores, ties and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from kernel.metrics import METRICS, metric_value, weighted_metric

SKLEARN = {
    "roc_auc": lambda y, p: skm.roc_auc_score(y, p),
    "average_precision": lambda y, p: skm.average_precision_score(y, p),
    "log_loss": lambda y, p: skm.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]),
    "accuracy": lambda y, p: skm.accuracy_score(y, p >= 0.5),
    "f1": lambda y, p: skm.f1_score(y, p >= 0.5, zero_division=0),
    "brier": lambda y, p: skm.brier_score_loss(y, p),
}


def _case(seed: int, n: int, decimals: int | None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(int)
    p = np.clip(0.5 * rng.random(n) + 0.4 * y, 0, 1)
    return y, (p if decimals is None else np.round(p, decimals))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("seed", "n", "decimals"), [
    (0, 50, None), (1, 1000, None), (2, 1000, 2), (3, 5000, 1), (4, 200, 0), (5, 30_000, 3),
])
def test_equals_scikit_learn(metric: str, seed: int, n: int, decimals: int | None) -> None:
    y, p = _case(seed, n, decimals)
    assert math.isclose(metric_value(metric, y, p), SKLEARN[metric](y, p), rel_tol=1e-9,
                        abs_tol=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_constant_scores_and_extreme_probabilities(metric: str) -> None:
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    for p in (np.full(8, 0.3), np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0])):
        assert math.isclose(metric_value(metric, y, p), SKLEARN[metric](y, p), rel_tol=1e-9,
                            abs_tol=1e-12)


@pytest.mark.parametrize("metric", ["roc_auc", "average_precision"])
def test_undefined_on_one_class(metric: str) -> None:
    assert math.isnan(metric_value(metric, np.ones(20, dtype=int), np.linspace(0, 1, 20)))


def test_non_finite_scores_give_nan_and_unknown_names_raise() -> None:
    assert math.isnan(metric_value("roc_auc", np.array([0, 1]), np.array([0.2, np.nan])))
    assert math.isnan(metric_value("brier", np.array([], dtype=int), np.array([])))
    with pytest.raises(ValueError, match="unknown metric"):
        metric_value("auc", np.array([0, 1]), np.array([0.2, 0.8]))


def test_weights_are_resample_counts() -> None:
    """A weight of k counts a row k times: the bootstrap relies on it."""
    y, p = _case(7, 300, 2)
    w = np.random.default_rng(8).integers(0, 3, size=(4, len(y)))
    for metric in METRICS:
        got = weighted_metric(metric, y, p, w.astype(float))
        for row, value in zip(w, got, strict=True):
            idx = np.repeat(np.arange(len(y)), row)
            assert math.isclose(value, SKLEARN[metric](y[idx], p[idx]), rel_tol=1e-9,
                                abs_tol=1e-12), metric
