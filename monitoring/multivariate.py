"""Multivariate drift by a domain classifier: can a model tell reference rows from current rows?

A gradient-boosted classifier (scikit-learn's HistGradientBoosting, categorical columns as
categories) is trained on a sample of each side, labelled 0 (reference) and 1 (current); its
cross-validated ROC AUC is 0.5 when the joint distributions agree and rises as they part,
including changes no single column shows (a new correlation between two columns whose
marginals stay put). The threshold comes from the reference itself: the same test on random
halves of the reference sample (reference against reference), ``mean + 3 std`` of their AUCs,
at least ``MIN_THRESHOLD``. The most separating features are those whose permutation on a
held-out fold lowers the AUC most.

Opt-in (spec ``drift.domain_classifier``): scikit-learn is imported only here, only then; the
default drift check never pays for it. Cost: a few seconds per check at 5,000 rows a side (the
reference's threshold is computed once per Reference and reused).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

MIN_THRESHOLD = 0.55
NULL_SIGMAS = 3.0


@dataclass(frozen=True)
class DomainResult:
    auc: float
    threshold: float
    null_mean: float
    null_std: float
    rows_per_side: int
    top_features: list[tuple[str, float]]     # (column, AUC drop when permuted), largest first

    @property
    def drifted(self) -> bool:
        return self.auc > self.threshold


def _encode(frames: Sequence[pd.DataFrame], numerical: Sequence[str],
            categorical: Sequence[str]) -> list[np.ndarray]:
    """Numbers as floats (NaN kept: the classifier handles it), categories as shared codes."""
    out = [np.empty((len(f), len(numerical) + len(categorical))) for f in frames]
    for j, col in enumerate(numerical):
        for k, f in enumerate(frames):
            out[k][:, j] = pd.to_numeric(f[col], errors="coerce").to_numpy(dtype=float)
    for j, col in enumerate(categorical, start=len(numerical)):
        values = pd.concat([f[col].astype(object) for f in frames], ignore_index=True)
        codes, _ = pd.factorize(values, use_na_sentinel=True)
        codes = np.where(codes < 0, np.nan, codes % 250)   # HistGradientBoosting: < 255 codes
        start = 0
        for k, f in enumerate(frames):
            out[k][:, j] = codes[start:start + len(f)]
            start += len(f)
    return out


def _cv_auc(x: np.ndarray, y: np.ndarray, categorical: np.ndarray, *, folds: int, seed: int,
            importance_of: Sequence[str] = ()) -> tuple[float, list[tuple[str, float]]]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold

    from kernel.metrics import metric_value

    proba = np.empty(len(y))
    drops: list[tuple[str, float]] = []
    split = StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y)
    for i, (train, test) in enumerate(split):
        model = HistGradientBoostingClassifier(max_iter=40, learning_rate=0.15, max_leaf_nodes=8,
                                               categorical_features=categorical,
                                               random_state=seed)
        model.fit(x[train], y[train])
        proba[test] = model.predict_proba(x[test])[:, 1]
        if i == 0 and importance_of:
            base = metric_value("roc_auc", y[test], proba[test])
            rng = np.random.default_rng(seed)
            for j, name in enumerate(importance_of):
                shuffled = x[test].copy()
                shuffled[:, j] = rng.permutation(shuffled[:, j])
                auc = metric_value("roc_auc", y[test], model.predict_proba(shuffled)[:, 1])
                drops.append((name, float(base - auc)))
    drops.sort(key=lambda d: -d[1])
    return float(metric_value("roc_auc", y, proba)), drops


def null_aucs(reference: pd.DataFrame, numerical: Sequence[str], categorical: Sequence[str], *,
              rows: int, splits: int = 4, folds: int = 3, seed: int = 0) -> list[float]:
    """The domain classifier's AUC on random halves of the reference (``rows`` a side)."""
    rng = np.random.default_rng(seed)
    mask = np.array([False] * len(numerical) + [True] * len(categorical))
    out = []
    for k in range(splits):
        pick = rng.choice(len(reference), 2 * rows, replace=False)
        a, b = reference.iloc[pick[:rows]], reference.iloc[pick[rows:]]
        xa, xb = _encode([a, b], numerical, categorical)
        x = np.vstack([xa, xb])
        y = np.r_[np.zeros(rows), np.ones(rows)]
        out.append(_cv_auc(x, y, mask, folds=folds, seed=seed + k)[0])
    return out


def domain_classifier(reference: pd.DataFrame, current: pd.DataFrame,
                      numerical: Sequence[str], categorical: Sequence[str], *,
                      sample_rows: int = 5000, folds: int = 3, null: Sequence[float] | None = None,
                      seed: int = 0, top: int = 5) -> DomainResult:
    """The test on up to ``sample_rows`` rows a side (at most half the reference, so that its
    reference-against-reference threshold uses samples of the same size). ``null``: AUCs of
    :func:`null_aucs` at that size, computed here when not given."""
    rows = int(min(sample_rows, len(reference) // 2, len(current)))
    if rows < 50:
        raise ValueError(f"too few rows for a domain classifier ({rows} a side)")
    rng = np.random.default_rng(seed)
    ref = reference.iloc[rng.choice(len(reference), rows, replace=False)]
    cur = current.iloc[rng.choice(len(current), rows, replace=False)]
    xr, xc = _encode([ref, cur], numerical, categorical)
    mask = np.array([False] * len(numerical) + [True] * len(categorical))
    names = [*numerical, *categorical]
    auc, drops = _cv_auc(np.vstack([xr, xc]), np.r_[np.zeros(rows), np.ones(rows)], mask,
                         folds=folds, seed=seed, importance_of=names)
    null = list(null) if null is not None else null_aucs(reference, numerical, categorical,
                                                          rows=rows, folds=folds, seed=seed + 1)
    mean, std = float(np.mean(null)), float(np.std(null, ddof=1)) if len(null) > 1 else 0.0
    threshold = max(MIN_THRESHOLD, mean + NULL_SIGMAS * std)
    return DomainResult(auc, threshold, mean, std, rows,
                        [(n, round(d, 4)) for n, d in drops[:top] if d > 0])
