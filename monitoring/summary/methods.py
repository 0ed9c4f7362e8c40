"""The drift methods of monitoring/stats.py on column summaries, each with its error bound.

Where both summaries hold every distinct value (``Counts.exact``) a method is computed on the
exact value counts and equals the exact path's up to float summation order. Otherwise it
works on the z-buckets of monitoring/summary/sketch.py and returns, with its score, ``bound``:
the largest possible distance between that score and the exact path's (docs/monitoring.md,
"Summary engine: error bounds"). Chi-square, Z and Jensen-Shannon on union values never need
the buckets: the reference's values are always kept, and the values folded into ``other``
are absent from the reference, where these methods are exact on one merged bin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitoring import stats
from monitoring.summary.sketch import (
    ALPHA,
    VALUE_CAP,
    ZMIN,
    ColumnSummary,
    NumericSummary,
    bucket_bounds,
    representative,
)

_OTHER = ("driftloop.other",)  # the key of folded values: equal to no real value
KS_EXACT_ROWS = 10_000           # scipy's ks_2samp is exact up to this size (MAX_AUTO_N)


@dataclass(frozen=True)
class SummaryResult:
    result: stats.ColumnResult
    bound: float                  # |score - exact score| <= bound (0: exact up to rounding)


def _sample(s: ColumnSummary) -> stats.CategoricalSample:
    """The summary's value counts as a sample; folded values become one ``_OTHER`` key."""
    keys = list(s.values.counts)
    counts = list(s.values.counts.values())
    if s.values.other:
        keys.append(_OTHER)
        counts.append(s.values.other)
    uniques = np.empty(len(keys), dtype=object)
    uniques[:] = keys
    return stats.CategoricalSample.from_counts(uniques, np.asarray(counts, np.int64), s.missing)


def _n_values(ref: ColumnSummary, cur: ColumnSummary) -> int:
    if ref.values.exact and cur.values.exact:
        return len(set(ref.values.counts) | set(cur.values.counts))
    return VALUE_CAP + 1  # more distinct values than are kept


def column_drift(column: str, ref: ColumnSummary, cur: ColumnSummary, kind: stats.Kind, *,
                 method: str | None = None, threshold: float | None = None) -> SummaryResult:
    """One column's drift from two summaries, as ``stats.column_drift`` from two samples."""
    chosen = method or stats.method_for(ref.n, _n_values(ref, cur), kind != "categorical")
    if chosen not in stats.FAST_METHODS:
        raise stats.UnsupportedMethod(chosen)
    limit = stats.DEFAULT_THRESHOLDS[chosen] if threshold is None else float(threshold)
    if ref.n == 0 or cur.n == 0:
        return SummaryResult(stats.ColumnResult(column, kind, chosen, float("nan"), limit,
                                                drifted=cur.n == 0 < ref.n), 0.0)
    if chosen in ("chisquare", "z"):
        if not ref.values.exact or (chosen == "z" and not cur.values.exact):
            raise stats.UnsupportedMethod(f"{chosen} on a column with more than the kept "
                                          "distinct values")
        rs, cs = _sample(ref), _sample(cur)
        score = stats.chisquare_p(rs, cs) if chosen == "chisquare" else stats.z_p(rs, cs)
        return SummaryResult(stats.ColumnResult(column, kind, chosen, score, limit,
                                                score < limit), 0.0)
    if chosen == "jensenshannon":
        score, bound = _jensenshannon(ref, cur)
        return SummaryResult(stats.ColumnResult(column, kind, chosen, score, limit,
                                                score >= limit), bound)
    if not isinstance(ref, NumericSummary) or not isinstance(cur, NumericSummary):
        raise stats.UnsupportedMethod(f"{chosen} needs a numerical column")
    if chosen == "wasserstein":
        score, bound = wasserstein_norm(ref, cur)
        return SummaryResult(stats.ColumnResult(column, kind, chosen, score, limit,
                                                score >= limit), bound)
    score, bound = ks_p(ref, cur)
    return SummaryResult(stats.ColumnResult(column, kind, chosen, score, limit,
                                            score <= limit), bound)


# --- supports: the points both sides are counted on ---------------------------------------


def _value_support(ref: NumericSummary, cur: NumericSummary
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    points = np.array(sorted(set(ref.values.counts) | set(cur.values.counts)), dtype=np.float64)
    rc = np.array([ref.values.counts.get(p, 0) for p in points.tolist()], dtype=np.int64)
    cc = np.array([cur.values.counts.get(p, 0) for p in points.tolist()], dtype=np.int64)
    return points, rc, cc


def _bucket_support(ref: NumericSummary, cur: NumericSummary
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = np.union1d(ref.index, cur.index)
    rc = np.zeros(index.size, np.int64)
    cc = np.zeros(index.size, np.int64)
    rc[np.searchsorted(index, ref.index)] = ref.counts
    cc[np.searchsorted(index, cur.index)] = cur.counts
    return index, rc, cc


def _exact(ref: NumericSummary, cur: NumericSummary) -> bool:
    return ref.values.exact and cur.values.exact


# --- the methods ---------------------------------------------------------------------------


def wasserstein_norm(ref: NumericSummary, cur: NumericSummary) -> tuple[float, float]:
    """W1(ref, cur) / max(std(ref), 0.001). On buckets every value moves by at most
    ALPHA * |z| (+ ZMIN) in z, so W1 moves by at most that on average per side."""
    norm = max(ref.std, 0.001)
    if _exact(ref, cur):
        points, rc, cc = _value_support(ref, cur)
        scale, bound = 1.0, 0.0
    else:
        index, rc, cc = _bucket_support(ref, cur)
        points, scale = representative(index), ref.basis.scale
        slack = ALPHA * (1 + 3 * ALPHA)
        bound = scale * (slack * (ref.abs_z / ref.n + cur.abs_z / cur.n) + 2 * ZMIN) / norm
    diff = np.abs(np.cumsum(rc)[:-1] / ref.n - np.cumsum(cc)[:-1] / cur.n)
    distance = float(np.dot(diff, np.diff(points))) * scale
    return distance / norm, bound


def _ks_pvalue(d: float, n1: int, n2: int) -> float:
    from scipy import stats as sps

    return float(sps.kstwo.sf(d, np.round(n1 * n2 / (n1 + n2))))


def ks_p(ref: NumericSummary, cur: NumericSummary) -> tuple[float, float]:
    """The two-sample KS p-value. On exact value counts: scipy's own (its exact mode up
    to 10,000 rows per side, from the values rebuilt; else its asymptotic formula on the
    exact D). On buckets: D on bucket edges is at most the true D, which is at most that
    plus the largest share of one side in one bucket; the bound is the p-value's range."""
    from scipy import stats as sps

    if _exact(ref, cur):
        points, rc, cc = _value_support(ref, cur)
        if max(ref.n, cur.n) <= KS_EXACT_ROWS:
            return float(sps.ks_2samp(np.repeat(points, rc), np.repeat(points, cc))[1]), 0.0
        d = float(np.max(np.abs(np.cumsum(rc) / ref.n - np.cumsum(cc) / cur.n)))
        return _ks_pvalue(d, ref.n, cur.n), 0.0
    _, rc, cc = _bucket_support(ref, cur)
    d = float(np.max(np.abs(np.cumsum(rc) / ref.n - np.cumsum(cc) / cur.n)))
    slack = float(max(np.max(rc) / ref.n, np.max(cc) / cur.n))
    high, low = _ks_pvalue(d, ref.n, cur.n), _ks_pvalue(min(d + slack, 1.0), ref.n, cur.n)
    return high, high - low


def _sturges_edges(low: float, high: float, size: int) -> np.ndarray:
    """``np.histogram_bin_edges(combined, "sturges")`` from the combined min, max and size."""
    if low == high:
        low, high = low - 0.5, high + 0.5
        return np.linspace(low, high, 2)
    width = (high - low) / (np.log2(size) + 1.0)
    bins = int(np.ceil((high - low) / width))
    return np.linspace(low, high, bins + 1, endpoint=True)


def _bin_counts(points: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.histogram(points, edges, weights=counts)[0]


def _jensenshannon(ref: ColumnSummary, cur: ColumnSummary) -> tuple[float, float]:
    """Evidently's bins: Sturges edges on the combined sample for a numerical column whose
    reference has more than 20 values, else shares over the union of values."""
    numeric = isinstance(ref, NumericSummary) and isinstance(cur, NumericSummary)
    ref_many = numeric and (not ref.values.exact or len(ref.values.counts) > 20)
    if not ref_many:
        if not ref.values.exact:
            raise stats.UnsupportedMethod("jensenshannon on a reference of many values")
        return stats.jensenshannon(_sample(ref), _sample(cur)), 0.0
    assert isinstance(ref, NumericSummary) and isinstance(cur, NumericSummary)
    edges = _sturges_edges(min(ref.min, cur.min), max(ref.max, cur.max), ref.n + cur.n)
    if _exact(ref, cur):
        points, rc, cc = _value_support(ref, cur)
        p, q = _bin_counts(points, rc, edges) / ref.n, _bin_counts(points, cc, edges) / cur.n
        return stats.js_distance(p, q), 0.0
    index, rc, cc = _bucket_support(ref, cur)
    b = ref.basis
    x = b.center + b.scale * representative(index)
    x = np.clip(x, edges[0], edges[-1])  # a bucket's representative may pass the min or max
    lo, hi = bucket_bounds(index)
    x_lo, x_hi = b.center + b.scale * lo, b.center + b.scale * hi
    inner = edges[1:-1]
    straddles = (np.searchsorted(inner, x_lo, "right") != np.searchsorted(inner, x_hi, "left"))
    p, q = _bin_counts(x, rc, edges) / ref.n, _bin_counts(x, cc, edges) / cur.n
    moved_p = float(rc[straddles].sum()) / ref.n
    moved_q = float(cc[straddles].sum()) / cur.n
    # JS distance is a metric and JS divergence <= ln 2 * total variation
    bound = float(np.sqrt(np.log(2) * moved_p) + np.sqrt(np.log(2) * moved_q))
    return stats.js_distance(p, q), bound
