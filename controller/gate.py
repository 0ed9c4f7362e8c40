"""The promotion gate: a paired bootstrap confidence interval with a minimum sample size.

Pure: numbers in, a :class:`GateDecision` out, deterministic for a seed. Champion and
challenger are scored on the *same* labelled rows; every bootstrap resample draws the same
rows for both, so the interval is on the paired difference.

The difference is *sign-adjusted*: ``difference = challenger - champion`` for metrics where
higher is better and ``champion - challenger`` for lower-is-better metrics (log_loss, brier),
so that a positive difference always means "the challenger is better".

Rule, with ``margin`` the non-inferiority margin (metric units, default 0.01):

- a challenger whose scores are not all finite in [0, 1] is rejected at once (broken);
- fewer than ``min_pairs`` labelled pairs: wait;
- the metric undefined on the pairs (e.g. one class only): wait;
- ``ci_low >= -margin``: promote (the challenger is not worse by more than the margin);
- ``ci_high < -margin``: reject (clearly worse);
- otherwise inconclusive: wait (the caller rejects when its evaluation times out).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from controller.machine import GateDecision, broken
from kernel.metrics import weighted_metric
from kernel.spec import LOWER_IS_BETTER


@dataclass(frozen=True)
class GatePolicy:
    min_pairs: int = 200
    margin: float = 0.01
    confidence: float = 0.95
    n_boot: int = 1000
    seed: int = 0
    max_pairs: int = 20_000          # the most recent rows beyond this are used


def evaluate(y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, *, metric: str,
             policy: GatePolicy = GatePolicy(), evidence: str = "shadow") -> GateDecision:
    """Judge the challenger against the champion on paired labelled rows."""
    y = np.asarray(y, dtype=np.int64)
    a = np.asarray(champion, dtype=float)
    b = np.asarray(challenger, dtype=float)
    if not (len(y) == len(a) == len(b)):
        raise ValueError(f"unpaired inputs: {len(y)} labels, {len(a)} champion and "
                         f"{len(b)} challenger scores")
    bad = ~np.isfinite(b) | (b < 0) | (b > 1)
    if bad.any():
        return broken(metric, f"{int(bad.sum())} of {len(b)} scores are not finite "
                      "probabilities", evidence=evidence, n=len(b))
    ok = np.isfinite(a)
    reasons: list[str] = []
    if not ok.all():
        reasons.append(f"{int((~ok).sum())} pairs dropped: champion score not finite")
        y, a, b = y[ok], a[ok], b[ok]
    if len(y) > policy.max_pairs:
        y, a, b = y[-policy.max_pairs:], a[-policy.max_pairs:], b[-policy.max_pairs:]
        reasons.append(f"only the last {policy.max_pairs} pairs used")
    n = len(y)
    base = GateDecision("wait", (), metric, n, evidence=evidence, margin=policy.margin,
                        min_pairs=policy.min_pairs)
    if n < policy.min_pairs:
        return replace(base, reasons=(*reasons, f"{n} labelled pairs < min_pairs "
                                      f"{policy.min_pairs}: waiting for more evidence"))
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    m_a, m_b = point_metric(metric, y, a), point_metric(metric, y, b)
    if not (np.isfinite(m_a) and np.isfinite(m_b)):
        return replace(base, reasons=(*reasons, f"{metric} is undefined on these {n} pairs "
                                      f"(labels: {int(y.sum())} positive): waiting"))
    diffs = bootstrap_differences(metric, y, a, b, n_boot=policy.n_boot, seed=policy.seed)
    diffs = sign * diffs[np.isfinite(diffs)]
    if len(diffs) < max(10, policy.n_boot // 2):
        return replace(base, reasons=(*reasons, f"too few usable bootstrap resamples "
                                      f"({len(diffs)}): waiting"))
    alpha = (1 - policy.confidence) / 2
    low, high = (float(v) for v in np.quantile(diffs, [alpha, 1 - alpha]))
    diff = sign * (m_b - m_a)
    decided = replace(base, champion_metric=m_a, challenger_metric=m_b, difference=diff,
                      ci_low=low, ci_high=high)
    level = f"{policy.confidence:.0%}"
    numbers = (f"{metric}: challenger {m_b:.4f} vs champion {m_a:.4f} on n={n} {evidence} pairs; "
               f"difference {diff:+.4f} (positive = challenger better), {level} CI "
               f"[{low:+.4f}, {high:+.4f}], margin {policy.margin:.4f}")
    if low >= -policy.margin:
        return replace(decided, outcome="promote", reasons=(
            *reasons, numbers, f"promote: CI low {low:+.4f} >= -margin {-policy.margin:+.4f}"))
    if high < -policy.margin:
        return replace(decided, outcome="reject", reasons=(
            *reasons, numbers, f"reject: CI high {high:+.4f} < -margin {-policy.margin:+.4f} "
            "(clearly worse)"))
    return replace(decided, reasons=(
        *reasons, numbers, f"inconclusive: CI [{low:+.4f}, {high:+.4f}] straddles "
        f"-margin {-policy.margin:+.4f}: waiting for more evidence"))


def point_metric(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    w = np.ones((1, len(y)))
    return float(weighted_metric(metric, y, p, w)[0])


def bootstrap_differences(metric: str, y: np.ndarray, a: np.ndarray, b: np.ndarray, *,
                          n_boot: int, seed: int, chunk: int = 200) -> np.ndarray:
    """``metric(b) - metric(a)`` on ``n_boot`` paired resamples (unsigned)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    out = []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(float)
        out.append(weighted_metric(metric, y, b, weights) - weighted_metric(metric, y, a, weights))
    return np.concatenate(out)
