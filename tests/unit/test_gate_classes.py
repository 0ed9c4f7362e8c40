"""The multi-class gate: per-pair contributions equal scikit-learn's metrics, decisions on
clearly better, equal and clearly worse challengers, and broken or identical ones."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss

from controller import gate_classes
from controller.gate import GatePolicy

K = 4


def _probabilities(rng: np.random.Generator, y: np.ndarray, skill: float) -> np.ndarray:
    """Softmax of noise plus ``skill`` on the true class."""
    logits = rng.normal(size=(len(y), K))
    logits[np.arange(len(y)), y] += skill
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_point_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K - 1, size=500)          # class K-1 never a label
    p = _probabilities(rng, y, 1.0)
    pred = p.argmax(axis=1)
    assert gate_classes.point_metric("accuracy", y, p) == pytest.approx(accuracy_score(y, pred))
    assert gate_classes.point_metric("log_loss", y, p) == pytest.approx(
        log_loss(y, p, labels=range(K)))
    present = np.unique(y)
    assert gate_classes.point_metric("macro_f1", y, p) == pytest.approx(
        f1_score(y, pred, labels=present, average="macro", zero_division=0))


def test_macro_f1_influence_approximates_the_change_of_one_row():
    """Removing a row changes macro-F1 by about its contribution's deviation / n."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, K, size=4000)
    p = _probabilities(rng, y, 1.5)
    terms = gate_classes.per_pair("macro_f1", y, p)
    whole = gate_classes.point_metric("macro_f1", y, p)
    drop = np.arange(1, len(y))
    without = gate_classes.point_metric("macro_f1", y[drop], p[drop])
    assert (whole - without) * len(y) == pytest.approx(terms[0] - whole, abs=0.05)


def test_decisions():
    rng = np.random.default_rng(4)
    y = rng.integers(0, K, size=3000)
    champion = _probabilities(rng, y, 1.0)
    policy = GatePolicy(min_pairs=200, margin=0.01)
    for metric in ("accuracy", "macro_f1", "log_loss"):
        better = gate_classes.evaluate(y, champion, _probabilities(rng, y, 2.5), metric=metric,
                                       policy=policy)
        worse = gate_classes.evaluate(y, champion, _probabilities(rng, y, 0.0), metric=metric,
                                      policy=policy)
        assert better.outcome == "promote" and better.difference > 0, (metric, better.reasons)
        assert worse.outcome == "reject" and worse.difference < 0, (metric, worse.reasons)
    same = gate_classes.evaluate(y, champion, champion.copy(), metric="macro_f1", policy=policy)
    assert same.outcome == "no_change"
    few = gate_classes.evaluate(y[:50], champion[:50], champion[:50] * 0 + 0.25,
                                metric="accuracy", policy=policy)
    assert few.outcome == "wait" and "min_pairs" in few.reasons[-1]


def test_broken_challenger_and_dropped_champion_rows():
    rng = np.random.default_rng(5)
    y = rng.integers(0, K, size=400)
    champion = _probabilities(rng, y, 1.0)
    bad = champion.copy()
    bad[0] = [0.5, 0.5, 0.5, 0.5]
    decision = gate_classes.evaluate(y, champion, bad, metric="accuracy")
    assert decision.broken and decision.outcome == "reject" and "not distributions" in decision.reasons[0]
    champion[1] = np.nan
    decision = gate_classes.evaluate(y, champion, _probabilities(rng, y, 1.0), metric="accuracy")
    assert decision.n == 399 and "1 pairs dropped" in decision.reasons[0]


def test_aligned_reorders_and_refuses_lost_classes():
    p = np.array([[0.2, 0.8]])
    assert gate_classes.aligned(p, ["b", "a"], ["a", "b", "c"]).tolist() == [[0.8, 0.2, 0.0]]
    with pytest.raises(ValueError, match="not in the gate's class order"):
        gate_classes.aligned(p, ["b", "z"], ["a", "b"])


def test_binary_metrics_have_no_multiclass_form():
    with pytest.raises(ValueError, match="no multi-class per-pair form"):
        gate_classes.per_pair("roc_auc", np.zeros(3, dtype=int), np.full((3, K), 0.25))
