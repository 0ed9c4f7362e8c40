"""The promotion gate: an asymptotic confidence sequence on the paired metric difference.

Pure: numbers in, a :class:`GateDecision` out. Champion and challenger are scored on the
*same* labelled rows, so the difference is paired. The controller looks at the gate every
``evaluate_every_seconds`` on a growing sample and acts on the first look that decides, so
the interval must hold at every look at once, not only at one planned sample size: it is a
*confidence sequence* (CS), time-uniform over the number of pairs ``n``.

Method: the Gaussian-mixture asymptotic confidence sequence of Waudby-Smith, Arnold, Ramdas et
al. (2021, "Time-uniform central limit theory and asymptotic confidence sequences", Thm 2.2;
boundary from Robbins' normal mixture, Howard et al. 2021), run on per-pair contributions whose
mean is the metric difference (:func:`paired_difference`):

- log_loss, brier, accuracy: the per-row loss difference (the metric *is* its mean);
- roc_auc: DeLong placement values (the Hoeffding projection of the two AUCs), linear in
  the rows up to a remainder that vanishes faster than the CS's width;
- f1: the delta method for a ratio of means; average_precision: bootstrap variance.

The difference is *sign-adjusted*: ``difference = challenger - champion`` for metrics where
higher is better, ``champion - challenger`` for log_loss and brier: positive = challenger
better. With ``margin`` (metric units, default 0.01):

- a challenger whose scores are not all finite in [0, 1] is rejected at once (broken);
- fewer than ``min_pairs`` labelled pairs, or the metric undefined (one class): wait;
- challenger scores equal to the champion's on every pair (max abs difference below
  ``SAME_SCORES``): ``no_change``, nothing to promote (a retrain that reproduced the champion);
- ``ci_low >= -margin``: promote (not worse by more than the margin, at every look);
- ``ci_high < -margin``: reject (clearly worse);
- otherwise inconclusive: wait (the caller rejects when its evaluation times out).

:func:`against_chain` then applies the cumulative-loss bound and the superiority rule (the
core calls it: it knows the chain and the cycle's triggers). :func:`fixed_horizon_bootstrap`
is the gate this replaced (a percentile interval valid at one look only), kept for bench/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from controller.machine import GateDecision, broken
from kernel.metrics import THRESHOLD, weighted_metric
from kernel.spec import LOWER_IS_BETTER

_EPS = 1e-15
SAME_SCORES = 1e-9   # max |challenger - champion| on every pair below this: the same model


@dataclass(frozen=True)
class GatePolicy:
    min_pairs: int = 200
    margin: float = 0.01
    confidence: float = 0.95
    n_boot: int = 1000               # average_precision's variance (no closed form)
    seed: int = 0
    max_pairs: int = 100_000         # beyond this only the most recent rows are used
    tuning_pairs: int = 2000         # the sequence is tightest around this many pairs


def evaluate(y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, *, metric: str,
             policy: GatePolicy = GatePolicy(), evidence: str = "shadow") -> GateDecision:
    """Judge the challenger against the champion on paired labelled rows."""
    y, a, b, reasons = _clean(y, champion, challenger, policy)
    if isinstance(reasons, GateDecision):
        return replace(reasons, metric=metric, evidence=evidence)
    n = len(y)
    base = GateDecision("wait", (), metric, n, evidence=evidence, margin=policy.margin,
                        min_pairs=policy.min_pairs)
    if n < policy.min_pairs:
        return replace(base, reasons=(*reasons, f"{n} labelled pairs < min_pairs "
                                      f"{policy.min_pairs}: waiting for more evidence"))
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    m_a, m_b = point_metric(metric, y, a), point_metric(metric, y, b)
    if same_scores(a, b):
        return replace(base, outcome="no_change", champion_metric=m_a, challenger_metric=m_b,
                       difference=0.0, reasons=(*reasons, (
                           f"no_change: challenger scores equal the champion's on all {n} "
                           f"{evidence} pairs (max |difference| {_max_diff(a, b):.1e} < "
                           f"{SAME_SCORES:.0e}): nothing to promote")))
    if not (np.isfinite(m_a) and np.isfinite(m_b)):
        return replace(base, reasons=(*reasons, f"{metric} is undefined on these {n} pairs "
                                      f"(labels: {int(y.sum())} positive): waiting"))
    variance = paired_variance(metric, y, a, b, n_boot=policy.n_boot, seed=policy.seed)
    return judge_difference(base, reasons, sign * (m_b - m_a), variance, m_a, m_b, policy)


def judge_difference(base: GateDecision, reasons: tuple[str, ...], diff: float, variance: float,
                     m_a: float, m_b: float, policy: GatePolicy) -> GateDecision:
    """The decision on a sign-adjusted paired difference ``diff`` whose estimated variance on
    these ``base.n`` pairs is ``variance``: the confidence sequence's interval, then
    promote / reject / wait (shared by the binary and the multi-class gate)."""
    n, metric, evidence = base.n, base.metric, base.evidence
    half = cs_radius(n, math.sqrt(n * variance), 1 - policy.confidence, policy.tuning_pairs)
    low, high = diff - half, diff + half
    decided = replace(base, champion_metric=m_a, challenger_metric=m_b, difference=diff,
                      ci_low=low, ci_high=high, extra={"sd_per_pair": math.sqrt(n * variance)})
    numbers = (f"{metric}: challenger {m_b:.4f} vs champion {m_a:.4f} on n={n} {evidence} pairs; "
               f"difference {diff:+.4f} (positive = challenger better), "
               f"{policy.confidence:.0%} confidence sequence [{low:+.4f}, {high:+.4f}] (valid at "
               f"every look), margin {policy.margin:.4f}")
    return _judge(decided, (*reasons, numbers), low, high, policy.margin)


def _judge(decided: GateDecision, reasons: tuple[str, ...], low: float, high: float,
           margin: float) -> GateDecision:
    if low >= -margin:
        return replace(decided, outcome="promote", reasons=(
            *reasons, f"promote: CI low {low:+.4f} >= -margin {-margin:+.4f}"))
    if high < -margin:
        return replace(decided, outcome="reject", reasons=(
            *reasons, f"reject: CI high {high:+.4f} < -margin {-margin:+.4f} (clearly worse)"))
    return replace(decided, reasons=(
        *reasons, f"inconclusive: CI [{low:+.4f}, {high:+.4f}] straddles -margin "
        f"{-margin:+.4f}: waiting for more evidence"))


def _clean(y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, policy: GatePolicy,
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...] | GateDecision]:
    """Validated arrays and the reasons so far, or a broken-challenger decision."""
    y = np.asarray(y, dtype=np.int64)
    a = np.asarray(champion, dtype=float)
    b = np.asarray(challenger, dtype=float)
    if not (len(y) == len(a) == len(b)):
        raise ValueError(f"unpaired inputs: {len(y)} labels, {len(a)} champion and "
                         f"{len(b)} challenger scores")
    bad = ~np.isfinite(b) | (b < 0) | (b > 1)
    if bad.any():
        return y, a, b, broken("", f"{int(bad.sum())} of {len(b)} scores are not finite "
                               "probabilities", n=len(b))
    ok = np.isfinite(a)
    reasons: tuple[str, ...] = ()
    if not ok.all():
        reasons = (f"{int((~ok).sum())} pairs dropped: champion score not finite",)
        y, a, b = y[ok], a[ok], b[ok]
    if len(y) > policy.max_pairs:
        y, a, b = y[-policy.max_pairs:], a[-policy.max_pairs:], b[-policy.max_pairs:]
        reasons = (*reasons, f"only the last {policy.max_pairs} pairs used")
    return y, a, b, reasons


def same_scores(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two models' scores on the same rows are equal (a challenger that changes
    nothing): every pair within ``SAME_SCORES``."""
    return len(a) > 0 and _max_diff(a, b) < SAME_SCORES


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, float) - np.asarray(b, float)))) if len(a) else 0.0


def cs_radius(n: int, sd: float, alpha: float, tuning_pairs: int) -> float:
    """Half-width at ``n`` of the two-sided asymptotic confidence sequence for a mean with
    per-observation standard deviation ``sd`` (Waudby-Smith et al. 2021, Thm 2.2), its
    mixture tuned (rho) to be tightest at ``tuning_pairs``: P(ever excludes the mean) <= alpha
    asymptotically, over every n at once."""
    if n <= 0 or not math.isfinite(sd):
        return math.inf
    log_a = -2 * math.log(alpha)
    rho2 = (log_a + math.log(log_a + 1)) / tuning_pairs
    trho = n * rho2
    return sd * math.sqrt(2 * (trho + 1) / (n * trho) * math.log(math.sqrt(trho + 1) / alpha))


def paired_variance(metric: str, y: np.ndarray, a: np.ndarray, b: np.ndarray, *,
                    n_boot: int = 1000, seed: int = 0) -> float:
    """Estimated variance of ``metric(b) - metric(a)`` on these n pairs (unsigned)."""
    n = len(y)
    terms = per_pair(metric, y, b) - per_pair(metric, y, a) if metric != "average_precision" \
        else None
    if terms is None:
        diffs = bootstrap_differences(metric, y, a, b, n_boot=n_boot, seed=seed)
        diffs = diffs[np.isfinite(diffs)]
        return float(np.var(diffs, ddof=1)) if len(diffs) > 1 else math.inf
    return float(np.var(terms, ddof=1)) / n if n > 1 else math.inf


def per_pair(metric: str, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-row contributions whose mean is the metric (exactly for means, to first order
    for roc_auc and f1: the influence function plus the value)."""
    yf = y.astype(float)
    if metric == "log_loss":
        q = np.clip(p, _EPS, 1 - _EPS)
        return -(yf * np.log(q) + (1 - yf) * np.log(1 - q))
    if metric == "brier":
        return (p - yf) ** 2
    if metric == "accuracy":
        return ((p >= THRESHOLD) == (y == 1)).astype(float)
    if metric == "roc_auc":
        return _auc_placements(y, p)
    if metric == "f1":
        pred = (p >= THRESHOLD).astype(float)
        u, v = 2 * pred * yf, pred + yf      # 2 tp_i and 2 tp_i + fp_i + fn_i
        mv = v.mean()
        value = u.mean() / mv if mv > 0 else 0.0
        return value + (u - value * v) / mv if mv > 0 else np.zeros(len(y))
    raise ValueError(f"no per-pair form for metric {metric!r}")


def _auc_placements(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """DeLong: AUC + (V10 - AUC) / share for positives, (V01 - AUC) / share for negatives."""
    pos, neg = p[y == 1], p[y == 0]
    sn, sp = np.sort(neg), np.sort(pos)
    v10 = (np.searchsorted(sn, pos, "left") + np.searchsorted(sn, pos, "right")) / (2 * len(neg))
    v01 = (2 * len(pos) - np.searchsorted(sp, neg, "left") - np.searchsorted(sp, neg, "right")) \
        / (2 * len(pos))
    auc = float(v10.mean())
    out = np.empty(len(y))
    out[y == 1] = auc + (v10 - auc) * len(y) / len(pos)
    out[y == 0] = auc + (v01 - auc) * len(y) / len(neg)
    return out


def against_chain(decision: GateDecision, *, drawdown: float, superiority: bool) -> GateDecision:
    """The gate's decision judged against the chain of promotions, not only the champion.

    ``drawdown`` (<= 0) is the running lower bound on how far the champion may already be
    below the best earlier champion of its chain (see docs/controller.md, "No ratchet"); a
    promotion must keep ``drawdown + ci_low >= -margin``. With ``superiority``, a promotion
    needs ``ci_low > 0``, and ``ci_high <= 0`` (cannot be better) rejects."""
    low, high, margin = decision.ci_low, decision.ci_high, decision.margin
    if low is None or high is None or margin is None:
        return decision
    if superiority and decision.outcome != "reject" and high <= 0:
        return decision.with_reason(f"superiority required: CI high {high:+.4f} <= 0, the "
                                    "challenger cannot be better: reject", outcome="reject")
    if decision.outcome != "promote":
        return decision
    if superiority and low <= 0:
        return decision.with_reason(f"superiority required: CI low {low:+.4f} <= 0: waiting "
                                    "for more evidence", outcome="wait")
    if drawdown + low < -margin:
        return decision.with_reason(
            f"no ratchet: the chain may already be {-drawdown:.4f} below its best champion; "
            f"with CI low {low:+.4f} the total could exceed the margin {margin:.4f}: waiting",
            outcome="wait")
    if drawdown < 0:
        return decision.with_reason(f"chain: cumulative bound {min(0.0, drawdown + low):+.4f} "
                                    f">= -margin {-margin:+.4f}")
    return decision


def point_metric(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    w = np.ones((1, len(y)))
    return float(weighted_metric(metric, y, p, w)[0])


def fixed_horizon_bootstrap(metric: str, y: np.ndarray, a: np.ndarray, b: np.ndarray, *,
                            confidence: float = 0.95, n_boot: int = 1000,
                            seed: int = 0) -> tuple[float, float]:
    """The replaced gate's interval: a paired bootstrap percentile interval of the
    sign-adjusted difference, valid at one planned look only (bench/bench_gate.py)."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    diffs = sign * bootstrap_differences(metric, y, a, b, n_boot=n_boot, seed=seed)
    diffs = diffs[np.isfinite(diffs)]
    alpha = (1 - confidence) / 2
    low, high = (float(v) for v in np.quantile(diffs, [alpha, 1 - alpha]))
    return low, high


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
