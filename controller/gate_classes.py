"""The promotion gate for multi-class models: the same confidence sequence, on class
probabilities.

Pure, like controller/gate.py, whose decision rule (:func:`controller.gate.judge_difference`)
it shares: champion and challenger are judged on the *same* labelled rows, each row giving a
per-pair contribution whose mean is the metric, and the time-uniform interval of the
sign-adjusted difference decides promote / reject / wait against the margin.

Inputs are probability matrices (rows: pairs, columns: classes) in one class order
(:func:`aligned` puts a version's columns in that order) and the labels as indices into it.
Per-pair contributions:

- ``accuracy``: 1 when the top class is the label (ties: the first class in the order, as
  ``numpy.argmax`` and scikit-learn's ``predict`` do);
- ``log_loss``: ``-log p[label]`` (clipped at 1e-15);
- ``macro_f1``: the delta method, as the binary gate does for F1: per class c, with
  ``u = 2 [pred = c and label = c]`` and ``v = [pred = c] + [label = c]``, F1_c is
  ``mean(u) / mean(v)`` and its influence ``(u - F1_c v) / mean(v)``; macro-F1 averages the
  classes present among the pairs' labels (scikit-learn's ``f1_score(labels=present,
  average="macro")``), and so does its contribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from controller.gate import SAME_SCORES, GatePolicy, judge_difference
from controller.machine import GateDecision, broken
from kernel.spec import LOWER_IS_BETTER

_EPS = 1e-15
ROW_SUM_TOLERANCE = 1e-6   # a challenger row summing further from 1 is not a distribution


def aligned(probabilities: np.ndarray, classes: Sequence[str], order: Sequence[str]) -> np.ndarray:
    """``probabilities`` (columns in ``classes``' order) with its columns in ``order``; a
    class of ``order`` the version does not know gets probability 0. Raises when the version
    has a class ``order`` lacks (its probability would be lost)."""
    lost = sorted(set(classes) - set(order))
    if lost:
        raise ValueError(f"classes {lost} are not in the gate's class order {list(order)}")
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.asarray(probabilities, dtype=float)
    out = np.zeros((len(matrix), len(order)))
    for j, name in enumerate(order):
        if name in index:
            out[:, j] = matrix[:, index[name]]
    return out


def per_pair(metric: str, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-row contributions whose mean is the metric (exactly for accuracy and log loss, to
    first order for macro-F1)."""
    n = len(y)
    if metric == "log_loss":
        return -np.log(np.clip(p[np.arange(n), y], _EPS, 1.0))
    pred = np.argmax(p, axis=1)
    if metric == "accuracy":
        return (pred == y).astype(float)
    if metric == "macro_f1":
        present = np.unique(y)
        terms = np.zeros(n)
        value = 0.0
        for c in present:
            u = 2.0 * ((pred == c) & (y == c))
            v = (pred == c).astype(float) + (y == c)
            f1 = u.mean() / v.mean()      # v.mean() > 0: c is among the labels
            value += f1
            terms += (u - f1 * v) / v.mean()
        k = len(present)
        return value / k + terms / k
    raise ValueError(f"no multi-class per-pair form for metric {metric!r}")


def point_metric(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    """The metric itself (the mean of :func:`per_pair` for every metric here)."""
    return float(per_pair(metric, y, p).mean()) if len(y) else float("nan")


def evaluate(y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, *, metric: str,
             policy: GatePolicy = GatePolicy(), evidence: str = "shadow") -> GateDecision:
    """Judge the challenger's class probabilities against the champion's on paired rows."""
    y = np.asarray(y, dtype=np.int64)
    a = np.asarray(champion, dtype=float).reshape(len(y), -1)
    b = np.asarray(challenger, dtype=float).reshape(len(y), -1)
    bad = ~np.isfinite(b).all(axis=1) | (b < 0).any(axis=1) | (b > 1).any(axis=1) \
        | (np.abs(b.sum(axis=1) - 1) > ROW_SUM_TOLERANCE)
    if bad.any():
        return broken(metric, f"{int(bad.sum())} of {len(b)} rows of class probabilities are "
                      "not distributions", evidence=evidence, n=len(b))
    reasons: tuple[str, ...] = ()
    ok = np.isfinite(a).all(axis=1)
    if not ok.all():
        reasons = (f"{int((~ok).sum())} pairs dropped: champion probabilities not finite",)
        y, a, b = y[ok], a[ok], b[ok]
    if len(y) > policy.max_pairs:
        y, a, b = y[-policy.max_pairs:], a[-policy.max_pairs:], b[-policy.max_pairs:]
        reasons = (*reasons, f"only the last {policy.max_pairs} pairs used")
    n = len(y)
    base = GateDecision("wait", (), metric, n, evidence=evidence, margin=policy.margin,
                        min_pairs=policy.min_pairs)
    if n < policy.min_pairs:
        return replace(base, reasons=(*reasons, f"{n} labelled pairs < min_pairs "
                                      f"{policy.min_pairs}: waiting for more evidence"))
    terms_a, terms_b = per_pair(metric, y, a), per_pair(metric, y, b)
    m_a, m_b = float(terms_a.mean()), float(terms_b.mean())
    largest = float(np.max(np.abs(a - b)))
    if largest < SAME_SCORES:
        return replace(base, outcome="no_change", champion_metric=m_a, challenger_metric=m_b,
                       difference=0.0, reasons=(*reasons, (
                           f"no_change: challenger probabilities equal the champion's on all "
                           f"{n} {evidence} pairs (max |difference| {largest:.1e} < "
                           f"{SAME_SCORES:.0e}): nothing to promote")))
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    variance = float(np.var(terms_b - terms_a, ddof=1)) / n
    return judge_difference(base, reasons, sign * (m_b - m_a), variance, m_a, m_b, policy)
