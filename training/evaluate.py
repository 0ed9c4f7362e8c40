"""Metrics on binary labels and positive-class scores.

One function per metric so that the gate, the drift check and training all
compute them the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn import metrics as skm

THRESHOLD = 0.5


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(p, 1e-15, 1 - 1e-15)


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "roc_auc": lambda y, p: float(skm.roc_auc_score(y, p)),
    "average_precision": lambda y, p: float(skm.average_precision_score(y, p)),
    "log_loss": lambda y, p: float(skm.log_loss(y, _clip(p), labels=[0, 1])),
    "accuracy": lambda y, p: float(skm.accuracy_score(y, p >= THRESHOLD)),
    "f1": lambda y, p: float(skm.f1_score(y, p >= THRESHOLD, zero_division=0)),
    "brier": lambda y, p: float(skm.brier_score_loss(y, p)),
}


def metric_value(name: str, y: np.ndarray, p: np.ndarray) -> float:
    """The named metric, or NaN where it is undefined (e.g. AUC on one class)."""
    y = np.asarray(y)
    p = np.asarray(p, dtype=float)
    if len(y) == 0 or not np.isfinite(p).all():
        return float("nan")
    if name in {"roc_auc", "average_precision"} and len(np.unique(y)) < 2:
        return float("nan")
    return METRICS[name](y, p)


def all_metrics(y: np.ndarray, p: np.ndarray, *, primary: str) -> dict[str, float]:
    names = dict.fromkeys([primary, "roc_auc", "log_loss", "accuracy", "brier"])
    return {name: metric_value(name, y, p) for name in names}
