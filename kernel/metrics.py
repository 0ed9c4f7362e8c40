"""Metrics on binary labels and positive-class scores (the kernel: training, the drift
check, the gate and the backtest all compute them here).

One implementation per metric, in numpy, so that training, the drift check, the
backtest and the controller's gate (which needs them vectorised over bootstrap
resamples) compute them the same way. Each agrees with scikit-learn's
``roc_auc_score``, ``average_precision_score``, ``log_loss``, ``accuracy_score``,
``f1_score(zero_division=0)`` and ``brier_score_loss`` (tests/unit/test_evaluate.py).
"""

from __future__ import annotations

import numpy as np

#: The decision threshold: serving answers ``prediction = 1`` when ``score > THRESHOLD``
#: (as scikit-learn's ``predict`` does for a binary classifier); accuracy and F1 count a
#: positive at ``score >= THRESHOLD``, as scikit-learn's tests of them do.
THRESHOLD = 0.5
_EPS = 1e-15

METRICS = ("roc_auc", "average_precision", "log_loss", "accuracy", "f1", "brier")


def metric_value(name: str, y: np.ndarray, p: np.ndarray) -> float:
    """The named metric, or NaN where it is undefined (e.g. AUC on one class)."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}")
    y = np.asarray(y)
    p = np.asarray(p, dtype=float)
    if len(y) == 0 or not np.isfinite(p).all():
        return float("nan")
    if name in {"roc_auc", "average_precision"} and len(np.unique(y)) < 2:
        return float("nan")
    return float(weighted_metric(name, y, p, np.ones((1, len(y))))[0])


def all_metrics(y: np.ndarray, p: np.ndarray, *, primary: str) -> dict[str, float]:
    names = dict.fromkeys([primary, "roc_auc", "log_loss", "accuracy", "brier"])
    return {name: metric_value(name, y, p) for name in names}


def weighted_metric(metric: str, y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The metric for each row of weights ``w`` (shape k x n; resample counts in the
    gate's bootstrap, ones for a plain value), vectorised. Each equals scikit-learn's
    function of the same name (tests/unit/test_evaluate.py holds them to it), without
    importing scikit-learn: a drift check on a day of traffic then never pays for it."""
    y = y.astype(float)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "roc_auc":
            return _weighted_auc(y, p, w)
        if metric == "log_loss":
            q = np.clip(p, _EPS, 1 - _EPS)
            loss = -(y * np.log(q) + (1 - y) * np.log(1 - q))
            return (w @ loss) / total
        if metric == "brier":
            return (w @ (p - y) ** 2) / total
        if metric == "accuracy":
            return (w @ ((p >= THRESHOLD) == (y == 1)).astype(float)) / total
        if metric == "f1":
            pred = (p >= THRESHOLD).astype(float)
            tp, fp, fn = w @ (pred * y), w @ (pred * (1 - y)), w @ ((1 - pred) * y)
            denom = 2 * tp + fp + fn
            return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
        if metric == "average_precision":
            return _weighted_ap(y, p, w)
    raise ValueError(f"unknown metric {metric!r}")


def _weighted_auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC with ties counted half, for weighted rows (NaN on one class)."""
    order = np.argsort(p, kind="stable")
    ps, ys = p[order], y[order]
    wn, wp = w[:, order] * (1 - ys), w[:, order] * ys
    cum = np.cumsum(wn, axis=1)
    starts = np.r_[0, np.flatnonzero(np.diff(ps)) + 1]
    ends = np.r_[starts[1:], len(ps)] - 1
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(ps)]))
    before = np.concatenate([np.zeros((w.shape[0], 1)), cum], axis=1)[:, starts]
    equal = cum[:, ends] - before
    below = before[:, group] + 0.5 * equal[:, group]
    pos, neg = wp.sum(axis=1), wn.sum(axis=1)
    return np.where((pos > 0) & (neg > 0), (wp * below).sum(axis=1) / (pos * neg), np.nan)


def _weighted_ap(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average precision as scikit-learn computes it (one step per distinct score)."""
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    wp = w[:, order] * ys
    tp = np.cumsum(wp, axis=1)
    seen = np.cumsum(w[:, order], axis=1)
    ends = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]
    tp_end, seen_end = tp[:, ends], seen[:, ends]
    gained = np.diff(np.concatenate([np.zeros((w.shape[0], 1)), tp_end], axis=1), axis=1)
    precision = np.where(seen_end > 0, tp_end / np.where(seen_end > 0, seen_end, 1), 0)
    pos = wp.sum(axis=1)
    return np.where(pos > 0, (precision * gained).sum(axis=1) / np.where(pos > 0, pos, 1), np.nan)


# --- multi-class ------------------------------------------------------------------------------

#: What a multi-class version is measured by (``macro_f1``, ``accuracy``, ``log_loss``; the
#: spec's ``metric`` is one of them) and the per-class F1 (``f1.<class>``) beside them.
MULTICLASS_METRIC_NAMES = ("macro_f1", "accuracy", "log_loss")


def multiclass_value(name: str, y: np.ndarray, p: np.ndarray) -> float:
    """One multi-class metric of labels ``y`` (indices into ``p``'s columns) and class
    probabilities ``p`` (rows sum to 1): ``accuracy`` (top class, ties to the first as
    ``numpy.argmax``), ``log_loss`` (``-log p[y]``, clipped at 1e-15) or ``macro_f1`` over
    the classes present among the labels (scikit-learn's ``f1_score(labels=present,
    average="macro", zero_division=0)``); NaN for no rows."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=float)
    if len(y) == 0 or not np.isfinite(p).all():
        return float("nan")
    if name == "log_loss":
        return float(-np.log(np.clip(p[np.arange(len(y)), y], _EPS, 1.0)).mean())
    pred = p.argmax(axis=1)
    if name == "accuracy":
        return float((pred == y).mean())
    if name == "macro_f1":
        return float(np.mean([_f1_of(c, y, pred) for c in np.unique(y)]))
    raise ValueError(f"unknown multi-class metric {name!r}")


def _f1_of(c: int, y: np.ndarray, pred: np.ndarray) -> float:
    tp = float(((pred == c) & (y == c)).sum())
    denom = float((pred == c).sum() + (y == c).sum())
    return 2 * tp / denom if denom else 0.0


def multiclass_metrics(y: np.ndarray, p: np.ndarray, classes: tuple[str, ...] | list[str], *,
                       primary: str) -> dict[str, float]:
    """The primary metric, the others of :data:`MULTICLASS_METRIC_NAMES`, and each class's
    F1 (``f1.<class>``; left out for a class no label and no prediction has)."""
    names = dict.fromkeys([primary, *MULTICLASS_METRIC_NAMES])
    out = {name: multiclass_value(name, y, p) for name in names}
    pred = np.asarray(p, dtype=float).argmax(axis=1) if len(y) else np.array([], dtype=int)
    y = np.asarray(y, dtype=np.int64)
    for i, name in enumerate(classes):
        if (y == i).any() or (pred == i).any():
            out[f"f1.{name}"] = _f1_of(i, y, pred)
    return out
