"""Score calibration and confidence-based performance estimation (CBPE), binary classifiers.

CBPE (NannyML, "Estimation of Performance of the Monitored Model", docs/monitoring.md
"Estimated performance"): when a version's scores are calibrated probabilities, the
expected confusion matrix of a window follows from its scores alone. A row scored ``s``
with calibrated probability ``p`` is a true positive with probability ``p`` when the model
predicts positive (``s >= THRESHOLD``) and a false positive with probability ``1 - p``;
summing gives expected TP/FP/TN/FN, hence accuracy and F1. ROC AUC and average
precision are the same sums at every threshold (the rows' own scores), which is the
soft-label form of kernel/metrics.py's AUC and AP; log loss and Brier score are plain
expectations.

Training fits the calibration on the version's validation slice (the scores as they are,
Platt scaling or isotonic regression by pool-adjacent-violators, whichever has the lowest
cross-validated Brier score; all in numpy, stored as breakpoints) and measures the spread
of each realised metric across random chunks of that slice; a check scales the spread to
its window's size as NannyML scales sampling error (standard error of the mean:
``std * sqrt(chunk / n)``) and reports the estimate with a band of ``BAND_SIGMAS``
sampling errors. Applying a calibration is ``np.interp``: nothing here imports
scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernel.metrics import METRICS, THRESHOLD, metric_value, weighted_metric

CALIBRATION_SCHEMA = 1
#: The band: estimate +/- this many sampling errors (NannyML draws 3).
BAND_SIGMAS = 3.0
#: Metrics every estimate reports, besides the spec's own.
REPORTED = ("roc_auc", "accuracy", "f1")
#: Chunk sizes the spread is measured at (those leaving at least MIN_CHUNKS chunks).
CHUNK_GRID = (50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)
MIN_CHUNKS = 5
#: Calibration methods, simplest first (a later one must gain BRIER_MARGIN to be chosen).
METHODS = ("identity", "platt", "isotonic")
BRIER_MARGIN = 5e-4      # what a more flexible calibration must gain in Brier score
CV_ROWS = 10_000          # rows of the slice the choice of method is cross-validated on
CHUNK_DRAWS = 60          # chunk metrics per size (several random partitions of the slice)
#: Rank metrics (AUC, AP) of a larger window are estimated on a seeded sample of this many
#: rows: a sort of a million scores costs half a second, and the sample's own error (about
#: 0.001 in AUC) is far inside the band.
RANK_SAMPLE_ROWS = 200_000


@dataclass(frozen=True)
class Spread:
    """The realised metric's standard deviation across chunks of ``chunk_rows`` rows."""

    chunk_rows: int
    chunks: int
    std: float


@dataclass(frozen=True)
class Calibration:
    """A version's calibration map (score -> P(y = 1)) and its metrics' chunk spreads."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    rows: int
    method: str = "isotonic"
    reference: Mapping[str, float] = field(default_factory=dict)   # realised on the slice
    spreads: Mapping[str, tuple[Spread, ...]] = field(default_factory=dict)

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities; linear between breakpoints, clipped outside them."""
        return np.interp(np.asarray(scores, dtype=float), self.x, self.y)

    def sampling_error(self, metric: str, n: int) -> float | None:
        """The metric's sampling error on ``n`` rows: the spread at the largest measured
        chunk size not above ``n`` (the smallest if all are), times ``sqrt(chunk / n)``."""
        spreads = self.spreads.get(metric) or ()
        if not spreads or n <= 0:
            return None
        fitting = [s for s in spreads if s.chunk_rows <= n] or [spreads[0]]
        s = fitting[-1]
        return float(s.std * math.sqrt(s.chunk_rows / n))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": CALIBRATION_SCHEMA, "method": self.method, "rows": self.rows,
                "x": list(self.x), "y": list(self.y), "reference": dict(self.reference),
                "spreads": {m: [{"chunk_rows": s.chunk_rows, "chunks": s.chunks, "std": s.std}
                                for s in v] for m, v in self.spreads.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        if int(data.get("schema", 0)) != CALIBRATION_SCHEMA:
            raise ValueError(f"calibration schema {data.get('schema')!r}, expected "
                             f"{CALIBRATION_SCHEMA}")
        spreads = {m: tuple(Spread(int(s["chunk_rows"]), int(s["chunks"]), float(s["std"]))
                            for s in v) for m, v in dict(data.get("spreads", {})).items()}
        return cls(x=tuple(float(v) for v in data["x"]), y=tuple(float(v) for v in data["y"]),
                   rows=int(data["rows"]), method=str(data.get("method", "isotonic")),
                   reference={k: float(v) for k, v in dict(data.get("reference", {})).items()},
                   spreads=spreads)


# -- fitting (at training time) ----------------------------------------------------------------

def isotonic(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic regression of ``y`` (0/1) on ``scores`` by pool-adjacent-violators, as
    breakpoints for ``np.interp``: each pooled block contributes its lowest and highest
    score at the block's mean (scikit-learn's ``IsotonicRegression`` with
    ``out_of_bounds="clip"`` predicts the same)."""
    s = np.asarray(scores, dtype=float)
    t = np.asarray(y, dtype=float)
    keep = np.isfinite(s)
    s, t = s[keep], t[keep]
    if not s.size:
        raise ValueError("no finite scores to calibrate")
    values, inverse = np.unique(s, return_inverse=True)
    weight = np.bincount(inverse).astype(float)
    total = np.bincount(inverse, weights=t)
    # blocks: [mean, weight, first index, last index]
    means: list[float] = []
    weights: list[float] = []
    first: list[int] = []
    last: list[int] = []
    for i in range(values.size):
        m, w, lo = total[i] / weight[i], weight[i], i
        while means and means[-1] >= m:
            pm, pw = means.pop(), weights.pop()
            lo = first.pop()
            last.pop()
            m, w = (pm * pw + m * w) / (pw + w), pw + w
        means.append(m)
        weights.append(w)
        first.append(lo)
        last.append(i)
    xs: list[float] = []
    ys: list[float] = []
    for m, lo, hi in zip(means, first, last, strict=True):
        xs.append(float(values[lo]))
        ys.append(m)
        if hi != lo:
            xs.append(float(values[hi]))
            ys.append(m)
    return np.asarray(xs), np.asarray(ys)


def platt(scores: np.ndarray, y: np.ndarray, *, iterations: int = 50) -> tuple[float, float]:
    """Platt scaling on the logit of the score: ``P(y = 1) = sigmoid(a * logit(s) + b)``,
    by Newton's method (a tiny ridge keeps a separable slice finite)."""
    z = _logit(scores)
    t = np.asarray(y, dtype=float)
    a, b = 1.0, 0.0
    for _ in range(iterations):
        q = _sigmoid(a * z + b)
        w = q * (1 - q)
        g = np.array([np.dot(q - t, z) + 1e-6 * a, np.sum(q - t)])
        h = np.array([[np.dot(w, z * z) + 1e-6, np.dot(w, z)], [np.dot(w, z), np.sum(w) + 1e-9]])
        try:
            step = np.linalg.solve(h, g)
        except np.linalg.LinAlgError:
            break
        if not np.isfinite(step).all():
            break
        a, b = a - float(step[0]), b - float(step[1])
        if np.abs(step).max() < 1e-10:
            break
    return a, b


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * z))   # no overflow for large |z|


def _logit(scores: np.ndarray) -> np.ndarray:
    s = np.clip(np.asarray(scores, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(s / (1 - s))


def _platt_points(scores: np.ndarray, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Platt's curve tabulated for ``np.interp``: a fine even grid plus the slice's quantiles."""
    grid = np.unique(np.concatenate([np.linspace(0, 1, 257),
                                     np.quantile(scores, np.linspace(0, 1, 257))]))
    return grid, _sigmoid(a * _logit(grid) + b)


def _fit(method: str, scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if method == "identity":
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    if method == "platt":
        return _platt_points(scores, *platt(scores, y))
    return isotonic(scores, y)


def choose_method(scores: np.ndarray, y: np.ndarray, *, folds: int = 5,
                  seed: int = 0) -> tuple[str, dict[str, float]]:
    """The calibration with the lowest cross-validated Brier score on the slice (a more
    flexible one only when it gains ``BRIER_MARGIN``), among the
    scores as they are (``identity``: NannyML too leaves calibrated scores alone), Platt
    scaling and isotonic regression. Isotonic fits the slice's sparse extremes too closely
    (its top block is often all positives), which biases estimates on a window that moves
    there; the cross-validation sees that. Returns the method and each one's Brier score."""
    rng = np.random.default_rng(seed)
    if len(y) > CV_ROWS:  # the choice needs no more; isotonic's fit is a Python loop
        pick = rng.choice(len(y), CV_ROWS, replace=False)
        scores, y = scores[pick], y[pick]
    n = len(y)
    parts = np.array_split(rng.permutation(n), folds)
    brier: dict[str, float] = {}
    for method in METHODS:
        total = 0.0
        for k in range(folds):
            test = parts[k]
            train = np.concatenate([parts[j] for j in range(folds) if j != k])
            x, p = _fit(method, scores[train], y[train])
            total += float(np.sum((np.interp(scores[test], x, p) - y[test]) ** 2))
        brier[method] = total / n
    best = METHODS[0]
    for method in METHODS[1:]:  # a more flexible method must beat noise to be chosen
        if brier[method] < brier[best] - BRIER_MARGIN:
            best = method
    return best, brier


def chunk_spreads(y: np.ndarray, scores: np.ndarray, metrics: Iterable[str], *,
                  seed: int = 0) -> dict[str, tuple[Spread, ...]]:
    """Each metric's spread across random chunks of the slice, per size in ``CHUNK_GRID``
    leaving at least ``MIN_CHUNKS`` chunks: ``CHUNK_DRAWS`` chunks from a few random
    partitions, std corrected for sampling without replacement (``(N - c) / (N - 1)``)."""
    y = np.asarray(y)
    scores = np.asarray(scores, dtype=float)
    n = len(y)
    rng = np.random.default_rng(seed)
    out: dict[str, list[Spread]] = {m: [] for m in metrics}
    for c in CHUNK_GRID:
        per = n // c
        if per < MIN_CHUNKS:
            break
        chunks: list[np.ndarray] = []
        while len(chunks) < CHUNK_DRAWS:
            order = rng.permutation(n)
            chunks += [order[i * c:(i + 1) * c] for i in range(per)]
        chunks = chunks[:CHUNK_DRAWS]
        correction = math.sqrt((n - 1) / (n - c))
        for m in out:
            values = np.array([metric_value(m, y[ix], scores[ix]) for ix in chunks])
            values = values[np.isfinite(values)]
            if values.size >= MIN_CHUNKS:
                out[m].append(Spread(c, int(values.size), float(np.std(values, ddof=1)
                                                               * correction)))
    return {m: tuple(v) for m, v in out.items() if v}


def fit_calibration(y: np.ndarray, scores: np.ndarray, *, metrics: Sequence[str] = (),
                    method: str | None = None, seed: int = 0) -> Calibration:
    """Calibrate ``scores`` on labels ``y`` (0/1) with ``method`` (by default the one
    :func:`choose_method` picks) and measure the metrics' chunk spreads."""
    y = np.asarray(y)
    scores = np.asarray(scores, dtype=float)
    keep = np.isfinite(scores)
    y, scores = y[keep], scores[keep]
    names = list(dict.fromkeys([*metrics, *REPORTED]))
    chosen = method or (choose_method(scores, y, seed=seed)[0] if len(y) >= 50 else "isotonic")
    x, p = _fit(chosen, scores, y)
    return Calibration(x=tuple(float(v) for v in x), y=tuple(float(v) for v in p),
                       rows=int(len(y)), method=chosen,
                       reference={m: metric_value(m, y, scores) for m in names},
                       spreads=chunk_spreads(y, scores, names, seed=seed))


# -- estimation (at check time) ----------------------------------------------------------------

def expected_confusion(p: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Expected TP, FP, TN, FN counts of rows with calibrated probabilities ``p`` and model
    scores ``scores`` (predicted positive at ``score >= THRESHOLD``, as kernel/metrics.py)."""
    pos = np.asarray(scores, dtype=float) >= THRESHOLD
    p = np.asarray(p, dtype=float)
    return {"tp": float(p[pos].sum()), "fp": float((1 - p[pos]).sum()),
            "tn": float((1 - p[~pos]).sum()), "fn": float(p[~pos].sum())}


def expected_metric(name: str, p: np.ndarray, scores: np.ndarray,
                    confusion: Mapping[str, float] | None = None) -> float:
    """The metric expected on rows whose labels are drawn with probabilities ``p``."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}")
    p = np.asarray(p, dtype=float)
    s = np.asarray(scores, dtype=float)
    if not len(p):
        return float("nan")
    if name in ("accuracy", "f1"):
        cm = confusion or expected_confusion(p, s)
        if name == "accuracy":
            return (cm["tp"] + cm["tn"]) / len(p)
        denom = 2 * cm["tp"] + cm["fp"] + cm["fn"]
        return 2 * cm["tp"] / denom if denom > 0 else 0.0
    if name == "brier":   # E[(s - Y)^2] = (s - p)^2 + p (1 - p)
        return float(np.mean((s - p) ** 2 + p * (1 - p)))
    # AUC and AP read labels as weights, log loss is linear in them: soft labels are their
    # expectation (a ratio of expected sums for AUC and AP, as CBPE computes them).
    if name in ("roc_auc", "average_precision"):
        if len(p) > RANK_SAMPLE_ROWS:
            pick = np.random.default_rng(0).choice(len(p), RANK_SAMPLE_ROWS, replace=False)
            p, s = p[pick], s[pick]
        if p.sum() <= 0 or (1 - p).sum() <= 0:
            return float("nan")
    return float(weighted_metric(name, p, s, np.ones((1, len(p))))[0])
