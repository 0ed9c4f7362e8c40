"""The promotion gate from a table: a confidence sequence on the paired difference, minimum
pairs, broken challengers."""

from __future__ import annotations

import numpy as np
import pytest

from controller.gate import (
    GatePolicy,
    bootstrap_differences,
    cs_radius,
    evaluate,
    fixed_horizon_bootstrap,
    paired_variance,
)
from controller.machine import broken

N = 2000


def _data(n: int = N, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * signal))).astype(int)
    champion = 1 / (1 + np.exp(-(signal + rng.normal(scale=1.0, size=n))))
    return y, champion, signal


def _challenger(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, champion, signal = _data()
    rng = np.random.default_rng(9)
    if kind == "better":
        return y, champion, 1 / (1 + np.exp(-(signal + rng.normal(scale=0.3, size=N))))
    if kind == "equal":   # other scores, the same ranking: the same AUC
        return y, champion, champion ** 2
    if kind == "slightly_worse":
        return y, champion, np.clip(champion + rng.normal(scale=0.05, size=N), 0, 1)
    if kind == "much_worse":
        return y, champion, rng.random(N)
    if kind == "nan_scores":
        bad = champion.copy()
        bad[::100] = np.nan
        return y, champion, bad
    if kind == "out_of_range":
        return y, champion, champion * 3
    raise AssertionError(kind)


@pytest.mark.parametrize(("kind", "outcome", "sign"), [
    ("better", "promote", 1),
    ("equal", "promote", 0),
    ("slightly_worse", "promote", -1),   # within the non-inferiority margin
    ("much_worse", "reject", -1),
    ("nan_scores", "reject", None),
    ("out_of_range", "reject", None),
])
def test_gate_table(kind: str, outcome: str, sign: int | None) -> None:
    y, a, b = _challenger(kind)
    decision = evaluate(y, a, b, metric="roc_auc", policy=GatePolicy(min_pairs=200, margin=0.01))
    assert decision.outcome == outcome, decision.reasons
    assert decision.n == N
    if sign is None:
        assert decision.broken
        assert "not finite probabilities" in decision.reasons[0]
        return
    assert not decision.broken
    assert decision.ci_low is not None and decision.ci_high is not None
    assert decision.ci_low <= decision.difference <= decision.ci_high
    assert np.sign(round(decision.difference, 6)) == sign
    assert f"n={N}" in decision.reasons[-2]           # the reasons name the numbers
    assert f"{decision.ci_low:+.4f}" in decision.reasons[-2]
    if kind == "equal":
        assert decision.ci_low == decision.ci_high == 0.0


@pytest.mark.parametrize(("noise", "outcome"), [(0.0, "no_change"), (1e-12, "no_change"),
                                                (1e-6, "promote")])
def test_a_challenger_with_the_champions_scores_is_no_change(noise: float, outcome: str) -> None:
    y, a, _ = _data()
    b = np.clip(a + noise * np.random.default_rng(1).standard_normal(N), 0, 1)
    decision = evaluate(y, a, b, metric="roc_auc", policy=GatePolicy(min_pairs=200))
    assert decision.outcome == outcome, decision.reasons
    if outcome == "no_change":
        assert decision.difference == 0.0 and decision.ci_low is None
        assert decision.reasons[-1].startswith("no_change: challenger scores equal")
        assert f"all {N}" in decision.reasons[-1]
    # too few pairs: waiting, even when equal (no conclusion from a handful of rows)
    assert evaluate(y[:50], a[:50], a[:50], metric="roc_auc").outcome == "wait"


def test_too_few_pairs_waits() -> None:
    y, a, b = _challenger("better")
    decision = evaluate(y[:150], a[:150], b[:150], metric="roc_auc", policy=GatePolicy(min_pairs=200))
    assert decision.outcome == "wait"
    assert decision.ci_low is None
    assert "150 labelled pairs < min_pairs 200" in decision.reasons[0]


def test_one_class_waits() -> None:
    _, a, b = _challenger("better")
    decision = evaluate(np.ones(N, dtype=int), a, b, metric="roc_auc")
    assert decision.outcome == "wait"
    assert "undefined" in decision.reasons[0]


def test_inconclusive_waits() -> None:
    y, a, _ = _data(n=300)
    rng = np.random.default_rng(1)
    b = np.clip(a + rng.normal(scale=0.15, size=300), 0, 1)
    decision = evaluate(y, a, b, metric="roc_auc", policy=GatePolicy(min_pairs=200, margin=0.01))
    assert decision.outcome == "wait"
    assert decision.ci_low < -0.01 <= decision.ci_high
    assert "inconclusive" in decision.reasons[-1]


def test_nan_champion_scores_are_dropped_not_fatal() -> None:
    y, a, b = _challenger("better")
    a = a.copy()
    a[:10] = np.nan
    decision = evaluate(y, a, b, metric="roc_auc")
    assert decision.n == N - 10
    assert decision.outcome == "promote"
    assert "10 pairs dropped" in decision.reasons[0]


@pytest.mark.parametrize("metric", ["log_loss", "brier"])
def test_lower_is_better_metrics_are_sign_adjusted(metric: str) -> None:
    y, a, b = _challenger("better")
    decision = evaluate(y, a, b, metric=metric)
    assert decision.outcome == "promote"
    assert decision.challenger_metric < decision.champion_metric
    assert decision.difference > 0
    worse = evaluate(y, a, np.clip(np.random.default_rng(2).random(N), 0.01, 0.99), metric=metric)
    assert worse.outcome == "reject"
    assert worse.difference < 0


def test_deterministic_for_a_seed() -> None:
    y, a, b = _challenger("slightly_worse")
    one = evaluate(y, a, b, metric="roc_auc", policy=GatePolicy(seed=5))
    two = evaluate(y, a, b, metric="roc_auc", policy=GatePolicy(seed=5))
    assert (one.ci_low, one.ci_high) == (two.ci_low, two.ci_high)


def test_bootstrap_is_paired() -> None:
    y, a, _ = _data(n=400)
    diffs = bootstrap_differences("roc_auc", y, a, a.copy(), n_boot=50, seed=0)
    assert np.all(diffs == 0)


def test_broken_helper() -> None:
    decision = broken("roc_auc", "v3 failed to load: boom")
    assert decision.outcome == "reject" and decision.broken
    assert decision.reasons == ("challenger is broken: v3 failed to load: boom",)


def test_the_interval_is_a_confidence_sequence_wider_than_one_look() -> None:
    """Wider than the fixed-horizon normal interval at every n (the price of looking at
    every n), shrinking as pairs accrue, tightest relative to it near ``tuning_pairs``."""
    ratios = [cs_radius(n, 1.0, 0.05, 2000) / (1.96 / np.sqrt(n)) for n in (200, 2000, 20_000)]
    assert all(r > 1 for r in ratios)
    assert ratios[1] < ratios[0] and ratios[1] < ratios[2]
    radii = [cs_radius(n, 1.0, 0.05, 2000) for n in (200, 2000, 20_000, 200_000)]
    assert radii == sorted(radii, reverse=True)


def test_time_uniform_coverage_on_simulated_paths() -> None:
    """Over 400 paths of 5,000 observations each, looked at after every one: the share of paths
    whose sequence ever excludes the true mean stays within alpha (the fixed-horizon interval,
    looked at as often, does not)."""
    rng = np.random.default_rng(0)
    x = rng.exponential(size=(400, 5000)) - 1.0           # skewed, mean 0, sd 1
    n = np.arange(1, 5001)
    mean = np.cumsum(x, axis=1) / n
    sd = np.sqrt(np.maximum(np.cumsum(x ** 2, axis=1) / n - mean ** 2, 1e-12))
    radius = np.array([cs_radius(int(k), 1.0, 0.05, 500) for k in n])
    looks = slice(199, None)                              # from min_pairs on
    ever_cs = (np.abs(mean) > sd * radius)[:, looks].any(axis=1).mean()
    ever_fixed = (np.abs(mean) > 1.96 * sd / np.sqrt(n))[:, looks].any(axis=1).mean()
    assert ever_cs <= 0.05
    assert ever_fixed > 0.15


@pytest.mark.parametrize("metric", ["f1", "average_precision", "accuracy"])
def test_every_metric_has_a_sequence(metric: str) -> None:
    y, a, b = _challenger("better")
    decision = evaluate(y, a, b, metric=metric)
    assert decision.outcome == "promote", decision.reasons
    assert decision.ci_low is not None and decision.ci_low < decision.difference
    assert "confidence sequence" in decision.reasons[-2]


def test_variance_matches_the_bootstrap() -> None:
    """The per-pair (DeLong) variance of the AUC difference agrees with the bootstrap's."""
    y, a, b = _challenger("slightly_worse")
    boot = np.var(bootstrap_differences("roc_auc", y, a, b, n_boot=1000, seed=1), ddof=1)
    assert paired_variance("roc_auc", y, a, b) == pytest.approx(boot, rel=0.25)


def test_the_old_fixed_horizon_interval_is_kept() -> None:
    y, a, b = _challenger("slightly_worse")
    low, high = fixed_horizon_bootstrap("roc_auc", y, a, b, n_boot=500)
    decision = evaluate(y, a, b, metric="roc_auc")
    assert low < decision.difference < high
    assert decision.ci_low < low and high < decision.ci_high   # one look vs every look
