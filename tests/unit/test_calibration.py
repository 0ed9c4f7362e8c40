"""kernel/calibration.py: isotonic calibration, expected confusion matrix and metrics (CBPE),
sampling errors: hand-computed expectations on small arrays, and perfectly calibrated
synthetic scores against the realised metric."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernel.calibration import (
    BAND_SIGMAS,
    Calibration,
    Spread,
    expected_confusion,
    expected_metric,
    fit_calibration,
    isotonic,
)
from kernel.metrics import metric_value


def test_isotonic_pools_violators_into_their_mean() -> None:
    # 0, 1, 0, 1: the middle pair violates the order and pools to 0.5
    x, y = isotonic(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1]))
    assert x.tolist() == [0.1, 0.2, 0.3, 0.4]
    assert y.tolist() == [0.0, 0.5, 0.5, 1.0]
    cal = Calibration(tuple(x), tuple(y), rows=4)
    assert cal.apply(np.array([0.0, 0.25, 0.35, 0.9])) == pytest.approx([0.0, 0.5, 0.75, 1.0])


def test_isotonic_averages_tied_scores_first() -> None:
    # two rows at 0.5 (labels 1 and 0) are one point at 0.5; 0.2 -> 1 then pools with it
    x, y = isotonic(np.array([0.2, 0.5, 0.5, 0.8]), np.array([1, 1, 0, 1]))
    assert x.tolist() == [0.2, 0.5, 0.8]
    assert y == pytest.approx([2 / 3, 2 / 3, 1.0])


def test_expected_confusion_accuracy_and_f1_by_hand() -> None:
    p = np.array([0.9, 0.6, 0.2, 0.4])        # calibrated P(y = 1)
    s = np.array([0.8, 0.7, 0.3, 0.6])        # the model's scores: rows 0, 1, 3 predicted 1
    cm = expected_confusion(p, s)
    assert cm == pytest.approx({"tp": 1.9, "fp": 1.1, "tn": 0.8, "fn": 0.2})
    assert expected_metric("accuracy", p, s) == pytest.approx((1.9 + 0.8) / 4)
    assert expected_metric("f1", p, s) == pytest.approx(3.8 / (3.8 + 1.1 + 0.2))
    assert expected_metric("brier", p, s) == pytest.approx(np.mean((s - p) ** 2 + p * (1 - p)))


def test_expected_auc_is_the_ratio_of_expected_pair_counts() -> None:
    p = np.array([0.9, 0.6, 0.2, 0.4, 0.4])
    s = np.array([0.8, 0.7, 0.3, 0.6, 0.6])   # a tie, counted half as everywhere
    above = (s[:, None] > s[None, :]) + 0.5 * (s[:, None] == s[None, :])
    pairs = (p[:, None] * (1 - p[None, :]) * above).sum()
    assert expected_metric("roc_auc", p, s) == pytest.approx(pairs / (p.sum() * (1 - p).sum()))


def test_with_certain_labels_the_estimate_is_the_realised_metric() -> None:
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    s = np.array([0.9, 0.3, 0.6, 0.4, 0.7, 0.1, 0.8, 0.2])
    for name in ("roc_auc", "accuracy", "f1", "average_precision", "log_loss"):
        assert expected_metric(name, y.astype(float), s) == pytest.approx(
            metric_value(name, y, s)), name


def test_sampling_error_scales_as_one_over_root_n_from_the_nearest_chunk_size() -> None:
    cal = Calibration((0.0, 1.0), (0.0, 1.0), rows=10_000,
                      spreads={"roc_auc": (Spread(100, 60, 0.05), Spread(1000, 10, 0.02))})
    assert cal.sampling_error("roc_auc", 100) == pytest.approx(0.05)
    assert cal.sampling_error("roc_auc", 400) == pytest.approx(0.05 / 2)
    assert cal.sampling_error("roc_auc", 4000) == pytest.approx(0.02 / 2)
    assert cal.sampling_error("roc_auc", 25) == pytest.approx(0.05 * 2)   # below every size
    assert cal.sampling_error("f1", 100) is None
    assert Calibration.from_dict(cal.to_dict()) == cal


def test_the_calibration_is_chosen_by_cross_validated_brier_score() -> None:
    rng = np.random.default_rng(5)
    s = rng.beta(2, 5, 5000)
    y = (rng.random(s.size) < s).astype(int)
    assert fit_calibration(y, s).method == "identity"
    squashed = fit_calibration(y, s ** 2)              # monotone miscalibration: corrected
    assert squashed.method in ("platt", "isotonic")
    assert squashed.apply(np.array([0.25]))[0] == pytest.approx(0.5, abs=0.05)
    stepped = np.where(s > 0.3, 0.9, 0.1)               # two values, each a wrong rate
    fitted = fit_calibration(y, stepped)
    assert fitted.method != "identity"
    assert fitted.apply(np.array([0.9]))[0] == pytest.approx(y[s > 0.3].mean(), abs=0.01)


def test_chunk_spread_matches_the_binomial_standard_error_of_accuracy() -> None:
    rng = np.random.default_rng(3)
    s = rng.uniform(0, 1, 20_000)
    y = (rng.random(s.size) < s).astype(int)
    cal = fit_calibration(y, s, metrics=["accuracy"])
    acc = metric_value("accuracy", y, s)
    expected = math.sqrt(acc * (1 - acc) / 500)
    assert cal.sampling_error("accuracy", 500) == pytest.approx(expected, rel=0.3)
    assert [sp.chunk_rows for sp in cal.spreads["accuracy"]][-1] == 2000   # 20k / 5 at most


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy", "f1"])
def test_perfectly_calibrated_scores_estimate_within_sampling_error(metric: str) -> None:
    """Windows like the calibration slice (labels drawn with P(y = 1) = score): the realised
    metric lies within the band around the estimate, and the gap is about one sampling error."""
    rng = np.random.default_rng(7)
    s = rng.beta(2, 3, 20_000)
    cal = fit_calibration((rng.random(s.size) < s).astype(int), s, metrics=[metric])
    gaps = []
    for _ in range(20):
        w = rng.beta(2, 3, 1000)
        y = (rng.random(w.size) < w).astype(int)
        est = expected_metric(metric, cal.apply(w), w)
        err = cal.sampling_error(metric, w.size)
        assert err is not None
        gaps.append(abs(est - metric_value(metric, y, w)) / err)
    assert sum(g <= BAND_SIGMAS for g in gaps) >= 19, gaps
    assert 0.4 < float(np.mean(gaps)) < 1.3, gaps      # about 0.8 for a normal error


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy", "f1"])
def test_under_covariate_shift_the_estimate_follows_the_realised_metric(metric: str) -> None:
    """The window's scores move (Beta(2, 5) in the slice, Beta(4, 2) in the windows) with
    P(y | score) unchanged: the estimate follows the realised metric. The band
    is the slice's sampling error: on a window unlike the slice it can be too narrow (a
    documented limit), so this holds the estimate to the realised mean, not to the band."""
    rng = np.random.default_rng(7)
    s = rng.beta(2, 5, 20_000)
    cal = fit_calibration((rng.random(s.size) < s).astype(int), s, metrics=[metric])
    estimates, realised = [], []
    for _ in range(20):
        w = rng.beta(4, 2, 2000)
        y = (rng.random(w.size) < w).astype(int)
        estimates.append(expected_metric(metric, cal.apply(w), w))
        realised.append(metric_value(metric, y, w))
    assert cal.method == "identity"       # calibrated already: left alone
    assert abs(float(np.mean(estimates)) - float(np.mean(realised))) < 0.01
