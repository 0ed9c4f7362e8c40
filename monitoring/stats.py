"""Fast per-column drift statistics, computed exactly as Evidently 0.7 computes them.

Evidently's ``DataDriftPreset`` runs one scipy call per column on pandas Series; on
a day of logged traffic that is minutes. This module makes the same choices and the
same arithmetic with numpy, sorting each column once and sharing the sorts:

* method by size (``evidently.legacy.calculations.stattests.registry._get_default_stattest``):
  reference (after dropping NaN/inf) of at most 1,000 rows: numerical with more than 5
  distinct values -> ``ks``; categorical (or numerical with 3-5 values) -> ``chisquare``;
  two values -> ``z``. Above 1,000 rows: numerical with more than 5 values ->
  ``wasserstein`` (normed by the reference's std), else ``jensenshannon``.
* ``wasserstein``: scipy's ``_cdf_distance(p=1)`` on presorted arrays, divided by
  ``max(std(reference), 0.001)``; drift at or above the threshold (default 0.1).
* ``jensenshannon``: ``get_binned_data(..., feel_zeroes=False)``: numerical with more
  than 20 reference values -> ``histogram_bin_edges(combined, "sturges")``; otherwise
  value shares over the union of values; ``scipy.spatial.distance.jensenshannon``'s
  arithmetic (``rel_entr``), without importing ``scipy.spatial``.
* ``ks`` (p <= threshold), ``chisquare`` and ``z`` (p < threshold): the same scipy calls.
  ``scipy.stats`` is imported only for these small-reference methods: its import costs
  about a second, which a daily check on a large reference never needs.

* ``psi``: ``get_binned_data(..., feel_zeroes=True)`` (the same bins as Jensen-Shannon, empty
  bins filled as Evidently fills them), ``sum((p - q) * log(p / q))``; drift at or above the
  threshold (default 0.1). Every feature's PSI and its band (``psi_band``: below 0.1 none,
  0.1-0.2 moderate, 0.2 and above significant) is in the verdict whatever the column's method.

Methods not listed here (kl_div, hellinger, ...) raise ``UnsupportedMethod``; the caller
then asks Evidently itself (monitoring/drift.py). No evidently import here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd
from scipy.special import rel_entr

Kind = Literal["numerical", "categorical", "score"]

#: Evidently's default threshold per method (StatTest.default_threshold).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "ks": 0.05, "chisquare": 0.05, "z": 0.05, "wasserstein": 0.1, "jensenshannon": 0.1,
    "psi": 0.1,
}
#: The population stability index's customary bands: below 0.1 no significant change, 0.1 to
#: 0.2 a moderate one, 0.2 and above a significant one.
PSI_MODERATE, PSI_SIGNIFICANT = 0.1, 0.2
PsiBand = Literal["none", "moderate", "significant"]
FAST_METHODS = frozenset(DEFAULT_THRESHOLDS)
SMALL_REFERENCE_ROWS = 1000


class UnsupportedMethod(ValueError):
    """A drift method the fast path does not implement."""


@dataclass(frozen=True)
class ColumnResult:
    column: str
    kind: Kind
    method: str
    score: float
    threshold: float
    drifted: bool


class NumericSample:
    """One numerical column: finite values in original order, sorted once."""

    def __init__(self, values: pd.Series | np.ndarray) -> None:
        arr = np.asarray(values, dtype=np.float64)
        self.values = arr[np.isfinite(arr)]
        #: NaN (missing) and infinite values dropped, for data quality
        self.missing = int(np.count_nonzero(np.isnan(arr)))
        self.infinite = int(arr.size - self.values.size - self.missing)

    @property
    def n(self) -> int:
        return int(self.values.size)

    @cached_property
    def sorted(self) -> np.ndarray:
        return np.sort(self.values, kind="quicksort")

    @cached_property
    def std(self) -> float:
        # Evidently calls np.std on the pandas Series; pandas' nanstd, not numpy's.
        return float(np.std(pd.Series(self.values, copy=False)))

    @cached_property
    def factorized(self) -> tuple[np.ndarray, np.ndarray]:
        """(uniques in order of appearance, counts), as ``Series.unique``/``value_counts``."""
        codes, uniques = pd.factorize(self.values)
        return np.asarray(uniques), np.bincount(codes, minlength=len(uniques))

    @cached_property
    def nunique(self) -> int:
        s = self.sorted
        return int(s.size and 1 + np.count_nonzero(np.diff(s)))


class CategoricalSample:
    """One categorical column: non-missing values, factorised once (a pandas
    ``category`` column, as the prediction log's window gives, is factorised from its
    codes without looking at the strings)."""

    def __init__(self, values: pd.Series | np.ndarray) -> None:
        series = pd.Series(values, copy=False)
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        keep = codes >= 0
        self.n = int(keep.sum())
        self.missing = int(codes.size - self.n)
        self._uniques = np.asarray(uniques, dtype=object)
        self._counts = np.bincount(codes[keep], minlength=len(uniques))

    @classmethod
    def from_counts(cls, uniques: np.ndarray, counts: np.ndarray,
                    missing: int = 0) -> CategoricalSample:
        """A sample known only by its value counts (monitoring/summary/: a window's
        summary); chi-square, Z and Jensen-Shannon on union values read nothing else."""
        out = cls.__new__(cls)
        out._uniques = np.asarray(uniques, dtype=object)
        out._counts = np.asarray(counts, dtype=np.int64)
        out.n = int(out._counts.sum())
        out.missing = int(missing)
        return out

    @property
    def factorized(self) -> tuple[np.ndarray, np.ndarray]:
        return self._uniques, self._counts

    @property
    def nunique(self) -> int:
        return int(len(self._uniques))


Sample = NumericSample | CategoricalSample


def sample_of(values: pd.Series | np.ndarray, kind: Kind) -> Sample:
    return CategoricalSample(values) if kind == "categorical" else NumericSample(values)


def _union_counts(ref: Sample, cur: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Counts of both samples over Evidently's key order ``list(set(ref) | set(cur))``."""
    ref_u, ref_c = ref.factorized
    cur_u, cur_c = cur.factorized
    keys = list(set(ref_u) | set(cur_u))
    ref_map = dict(zip(ref_u.tolist(), ref_c.tolist(), strict=True))
    cur_map = dict(zip(cur_u.tolist(), cur_c.tolist(), strict=True))
    ref_counts = np.array([ref_map.get(k, 0) for k in keys], dtype=np.int64)
    cur_counts = np.array([cur_map.get(k, 0) for k in keys], dtype=np.int64)
    return ref_counts, cur_counts


class _Merged:
    """Both numerical samples in one sorted array, and how many reference values each
    prefix holds: what a stable sort of ``reference + current`` gives, built by merging
    the two presorted arrays (each reference value goes before the current values it
    ties with, as the stable sort puts it) instead of sorting again."""

    def __init__(self, ref: NumericSample, cur: NumericSample) -> None:
        r, c = ref.sorted, cur.sorted
        size = r.size + c.size
        # merged position of each reference value: those before it, plus the current
        # values strictly below it
        at = np.arange(r.size) + c.searchsorted(r, "left")
        is_ref = np.zeros(size, dtype=bool)
        is_ref[at] = True
        self.values = np.empty(size, dtype=np.float64)
        self.values[at] = r
        self.values[~is_ref] = c
        self.deltas = np.diff(self.values)
        # reference values among the first i + 1 merged values (i < n - 1)
        self.ref_count = np.cumsum(is_ref[:-1])

    @property
    def nunique(self) -> int:
        return int(1 + np.count_nonzero(self.deltas))


def combined_nunique(ref: Sample, cur: Sample, merged: _Merged | None = None) -> int:
    if isinstance(ref, NumericSample) and isinstance(cur, NumericSample):
        if ref.n == 0 or cur.n == 0:
            return max(ref.nunique, cur.nunique)
        return (merged or _Merged(ref, cur)).nunique
    return len(set(ref.factorized[0]) | set(cur.factorized[0]))


def default_method(ref: Sample, cur: Sample, kind: Kind, merged: _Merged | None = None) -> str:
    """Evidently's choice of method for a column of this size."""
    return method_for(ref.n, combined_nunique(ref, cur, merged), kind != "categorical")


def method_for(ref_n: int, n_values: int, numeric: bool) -> str:
    """Evidently's choice from the reference's size (NaN/inf dropped), the number of
    distinct values of both samples together and the column's kind."""
    if ref_n <= SMALL_REFERENCE_ROWS:
        if numeric and n_values > 5:
            return "ks"
        return "chisquare" if n_values > 2 else "z"
    if numeric and n_values > 5:
        return "wasserstein"
    return "jensenshannon"


# --- the statistics ----------------------------------------------------------------------


def wasserstein_norm(ref: NumericSample, cur: NumericSample,
                     merged: _Merged | None = None) -> float:
    """scipy.stats.wasserstein_distance / max(std(ref), 0.001), on shared sorts.

    scipy weighs |u_cdf - v_cdf| at each merged value by the gap to the next one. Where
    the gap is not zero, the value ends its run of ties, so ``searchsorted(..., "right")``
    equals the count of each side among the merged values so far; where it is zero the
    term is zero either way. So the terms, and the sum, are scipy's exactly."""
    m = merged or _Merged(ref, cur)
    u_count = m.ref_count
    v_count = np.arange(1, m.values.size, dtype=u_count.dtype) - u_count
    diff = np.abs(u_count / ref.n - v_count / cur.n)
    distance_ = float(np.vecdot(diff, m.deltas))
    return distance_ / max(ref.std, 0.001)


def _histogram_sorted(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """np.histogram(values, edges)[0] for explicit edges, on values already sorted."""
    cum = np.concatenate((sorted_values.searchsorted(edges[:-1], "left"),
                          sorted_values.searchsorted(edges[-1:], "right")))
    return np.diff(cum)


def binned_shares(ref: Sample, cur: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Evidently's ``get_binned_data(..., feel_zeroes=False)``."""
    if isinstance(ref, NumericSample) and isinstance(cur, NumericSample) and ref.nunique > 20:
        combined = np.concatenate((ref.sorted, cur.sorted))
        edges = np.histogram_bin_edges(combined, bins="sturges")
        return (_histogram_sorted(ref.sorted, edges) / ref.n,
                _histogram_sorted(cur.sorted, edges) / cur.n)
    ref_counts, cur_counts = _union_counts(ref, cur)
    return ref_counts / ref.n, cur_counts / cur.n


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """``scipy.spatial.distance.jensenshannon(p, q)`` (base e), operation for operation."""
    p = p / np.sum(p, axis=0, keepdims=True)
    q = q / np.sum(q, axis=0, keepdims=True)
    m = (p + q) / 2.0
    js = np.sum(rel_entr(p, m), axis=0) + np.sum(rel_entr(q, m), axis=0)
    return float(np.sqrt(js / 2.0))


def _fill_zeroes(shares: np.ndarray) -> np.ndarray:
    """Evidently's ``feel_zeroes``: empty bins get a millionth of the smallest share when that
    is at most 0.0001, else 0.0001."""
    out = np.array(shares, dtype=float)
    nonzero = out[out != 0]
    if nonzero.size:
        smallest = float(nonzero.min())
        np.place(out, out == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)
    return out


def psi(ref: Sample, cur: Sample) -> float:
    """The population stability index, as Evidently's ``psi`` stat test computes it."""
    if ref.n == 0 or cur.n == 0:
        return float("nan")
    p, q = binned_shares(ref, cur)
    p, q = _fill_zeroes(np.asarray(p)), _fill_zeroes(np.asarray(q))
    return float(np.sum((p - q) * np.log(p / q)))


def psi_band(value: float) -> PsiBand | None:
    if not np.isfinite(value):
        return None
    return ("significant" if value >= PSI_SIGNIFICANT else "moderate" if value >= PSI_MODERATE
            else "none")


def jensenshannon(ref: Sample, cur: Sample) -> float:
    p, q = binned_shares(ref, cur)
    return js_distance(np.asarray(p), np.asarray(q))


def chisquare_p(ref: Sample, cur: Sample) -> float:
    from scipy import stats

    ref_counts, cur_counts = _union_counts(ref, cur)
    k_norm = cur.n / ref.n
    f_exp = [c * k_norm for c in ref_counts.tolist()]
    with np.errstate(divide="ignore", invalid="ignore"):  # a category absent from the reference
        return float(stats.chisquare(cur_counts.tolist(), f_exp)[1])


def z_p(ref: Sample, cur: Sample) -> float:
    ref_u, ref_c = ref.factorized
    cur_u, cur_c = cur.factorized
    if len(ref_u) == 1 and len(cur_u) == 1 and ref_u[0] == cur_u[0]:
        return 1.0
    key = sorted(set(ref_u) | set(cur_u))[0]
    n1, n2 = ref.n, cur.n
    in1 = int(sum(c for u, c in zip(ref_u, ref_c, strict=True) if u == key))
    in2 = int(sum(c for u, c in zip(cur_u, cur_c, strict=True) if u == key))
    p1 = float(n1 - in1) / n1
    p2 = float(n2 - in2) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    from scipy import stats

    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def ks_p(ref: NumericSample, cur: NumericSample) -> float:
    from scipy import stats

    return float(stats.ks_2samp(ref.values, cur.values)[1])


def column_drift(column: str, ref: Sample, cur: Sample, kind: Kind, *,
                 method: str | None = None, threshold: float | None = None) -> ColumnResult:
    """One column's drift, as Evidently's ``ValueDrift`` would report it."""
    merged = None
    if (isinstance(ref, NumericSample) and isinstance(cur, NumericSample) and ref.n and cur.n
            and method in (None, "wasserstein")):
        merged = _Merged(ref, cur)  # shared by the choice of method and the distance
    chosen = method or default_method(ref, cur, kind, merged)
    if chosen not in FAST_METHODS:
        raise UnsupportedMethod(chosen)
    limit = DEFAULT_THRESHOLDS[chosen] if threshold is None else float(threshold)
    if ref.n == 0 or cur.n == 0:
        # Evidently refuses an empty column; an empty current column is drift.
        return ColumnResult(column, kind, chosen, float("nan"), limit, drifted=cur.n == 0 < ref.n)
    if chosen == "wasserstein":
        score = wasserstein_norm(_numeric(ref, chosen), _numeric(cur, chosen), merged)
        return ColumnResult(column, kind, chosen, score, limit, score >= limit)
    if chosen == "jensenshannon":
        score = jensenshannon(ref, cur)
        return ColumnResult(column, kind, chosen, score, limit, score >= limit)
    if chosen == "psi":
        score = psi(ref, cur)
        return ColumnResult(column, kind, chosen, score, limit, score >= limit)
    if chosen == "ks":
        score = ks_p(_numeric(ref, chosen), _numeric(cur, chosen))
        return ColumnResult(column, kind, chosen, score, limit, score <= limit)
    score = chisquare_p(ref, cur) if chosen == "chisquare" else z_p(ref, cur)
    return ColumnResult(column, kind, chosen, score, limit, score < limit)


def _numeric(sample: Sample, method: str) -> NumericSample:
    if not isinstance(sample, NumericSample):
        raise UnsupportedMethod(f"{method} needs a numerical column")
    return sample


def drift_share(results: list[ColumnResult]) -> float:
    """Share of drifted columns, as Evidently's DriftedColumnsCount."""
    return sum(r.drifted for r in results) / len(results) if results else 0.0
