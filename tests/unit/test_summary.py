"""Mergeable column summaries (monitoring/summary/): merging parts equals the whole, and each
drift method on summaries is within its reported bound of the exact path's score, on random
and adversarial data; verdicts from summaries equal check_frames' on benchmark-like frames."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.bench_drift import CATEGORICAL, NUMERICAL, _features
from kernel.spec import DatasetSpec, parse_spec
from monitoring import stats
from monitoring.check import Reference, check_frames
from monitoring.summary import methods
from monitoring.summary.sketch import (
    CategoricalBasis,
    CategoricalSummary,
    NumericSummary,
    _hash,
    merge,
    numeric_basis,
)
from monitoring.summary.window import ReferenceSummary, check_summary

NOW = datetime(2026, 2, 1, tzinfo=UTC)


def _num(basis_values: np.ndarray, values: np.ndarray) -> NumericSummary:
    s = NumericSummary(numeric_basis(basis_values))
    s.add(values)
    return s


def _cat(categories: list[str], values: Sequence[str | None]) -> CategoricalSummary:
    s = CategoricalSummary(CategoricalBasis(frozenset(categories)))
    series = pd.Series(list(values), dtype=object).dropna()
    counts = series.value_counts(sort=False)
    s.add_counts([str(k) for k in counts.index], counts.tolist(),
                 sum(v is None for v in values))
    return s


def _same(a: NumericSummary, b: NumericSummary) -> None:
    assert (a.n, a.missing, a.infinite, a.outside) == (b.n, b.missing, b.infinite, b.outside)
    assert (a.min, a.max) == (b.min, b.max) or a.n == 0
    assert np.array_equal(a.index, b.index) and np.array_equal(a.counts, b.counts)
    assert a.values == b.values
    assert a.mean == pytest.approx(b.mean, rel=1e-9, abs=1e-9)
    assert a.m2 == pytest.approx(b.m2, rel=1e-9, abs=1e-6)


@settings(derandomize=True, max_examples=40, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0,
                max_size=300), st.integers(1, 5), st.integers(0, 2**31))
def test_merging_parts_equals_the_whole_numerical(values: list[float], parts: int,
                                                  seed: int) -> None:
    arr = np.asarray(values, dtype=np.float64)
    basis = np.random.default_rng(seed).normal(0, 3, 50)
    whole = _num(basis, arr)
    pieces = [_num(basis, p) for p in np.array_split(arr, parts)]
    left = pieces[0]
    for p in pieces[1:]:
        left = left.merge(p)
    right = pieces[-1]
    for p in reversed(pieces[:-1]):
        right = p.merge(right)
    _same(left, whole)
    _same(right, whole)


def test_merging_many_distinct_values_folds_the_same_keys_whatever_the_order() -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(0, 5000, 20_000).astype(float)
    basis = np.arange(10, dtype=float)  # few values: the basis keeps them exactly
    whole = _num(basis, values)
    a, b, c = (_num(basis, p) for p in np.array_split(values, 3))
    assert merge(merge(a, b), c).values == merge(a, merge(c, b)).values == whole.values
    assert not whole.values.exact
    for v in range(10):  # the basis' values are always counted exactly
        assert whole.values.counts.get(float(v), 0) == int(np.sum(values == v))


def test_merging_categorical_parts_equals_the_whole_with_the_other_bucket() -> None:
    from monitoring.summary import sketch

    rng = np.random.default_rng(4)
    values = [f"k{v}" for v in rng.integers(0, sketch.CATEGORY_CAP * 2, 30_000)]
    ref = ["k1", "k2"]
    whole = _cat(ref, values)
    parts = [_cat(ref, values[i::4]) for i in range(4)]
    assert merge(merge(parts[0], parts[1]), merge(parts[2], parts[3])).values == whole.values
    assert whole.values.other > 0 and whole.n == len(values)
    kept = sorted((k for k in set(values) if k not in ref), key=_hash)[:sketch.CATEGORY_CAP]
    assert set(whole.values.counts) == set(kept) | ({"k1", "k2"} & set(values))


# --- each method within its bound of the exact score ---------------------------------------


def _exact(ref: np.ndarray, cur: np.ndarray, method: str | None = None) -> stats.ColumnResult:
    return stats.column_drift("x", stats.NumericSample(ref), stats.NumericSample(cur),
                              "numerical", method=method)


def _summary(ref: np.ndarray, cur: np.ndarray, method: str | None = None
             ) -> methods.SummaryResult:
    return methods.column_drift("x", _num(ref, ref), _num(ref, cur), "numerical", method=method)


def _agree(ref: np.ndarray, cur: np.ndarray, method: str | None = None) -> None:
    exact, approx = _exact(ref, cur, method), _summary(ref, cur, method)
    assert approx.result.method == exact.method
    if np.isnan(exact.score):
        assert np.isnan(approx.result.score) and approx.result.drifted == exact.drifted
        return
    assert abs(approx.result.score - exact.score) <= approx.bound + 1e-9 * max(1, abs(exact.score))
    if abs(exact.score - exact.threshold) > approx.bound + 1e-9:
        assert approx.result.drifted == exact.drifted


_RNG = np.random.default_rng(11)
CASES = {
    "normal": (_RNG.normal(0, 1, 5000), _RNG.normal(0.2, 1.1, 20_000)),
    "heavy tails": (_RNG.standard_cauchy(5000), _RNG.standard_cauchy(8000) * 2),
    "lognormal far from zero": (1e6 + _RNG.lognormal(0, 2, 3000), 1e6 + _RNG.lognormal(0.1, 2, 9000)),
    "ties": (_RNG.integers(0, 40, 4000).astype(float), _RNG.integers(0, 45, 7000).astype(float)),
    "rounded": (_RNG.normal(50, 10, 4000).round(1), _RNG.normal(52, 10, 9000).round(1)),
    "constant": (np.full(3000, 7.0), np.full(2000, 7.0)),
    "constant moved": (np.full(3000, 7.0), np.full(2000, 8.0)),
    "few values": (_RNG.integers(0, 4, 3000).astype(float), _RNG.integers(0, 5, 2000).astype(float)),
    "two values": (_RNG.integers(0, 2, 800).astype(float), _RNG.integers(0, 2, 900).astype(float)),
    "small reference": (_RNG.normal(0, 1, 600), _RNG.normal(0.1, 1, 30_000)),
    "small exact ks": (_RNG.normal(0, 1, 600).round(2), _RNG.normal(0.1, 1, 3000).round(2)),
    "all missing current": (_RNG.normal(0, 1, 3000), np.full(2000, np.nan)),
    "all missing reference": (np.full(3000, np.nan), _RNG.normal(0, 1, 2000)),
    "infinities": (np.append(_RNG.normal(0, 1, 3000), [np.inf, -np.inf]),
                   np.append(_RNG.normal(0, 1, 3000), [np.inf] * 40)),
    "tiny scale": (_RNG.normal(0, 1e-7, 3000), _RNG.normal(1e-8, 1e-7, 5000)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_default_method_on_summaries_is_within_its_bound(case: str) -> None:
    _agree(*CASES[case])


@pytest.mark.parametrize("method", ["wasserstein", "jensenshannon", "ks"])
@pytest.mark.parametrize("case", ["normal", "heavy tails", "rounded", "small reference"])
def test_each_method_on_summaries_is_within_its_bound(case: str, method: str) -> None:
    _agree(*CASES[case], method=method)


@pytest.mark.parametrize("method", ["chisquare", "z", "jensenshannon"])
def test_count_methods_on_summaries_equal_the_exact_score(method: str) -> None:
    ref, cur = (CASES["two values"] if method == "z" else CASES["few values"])
    exact, approx = _exact(ref, cur, method), _summary(ref, cur, method)
    assert approx.bound == 0.0
    assert approx.result.score == pytest.approx(exact.score, rel=1e-9, abs=1e-12)


def test_the_bound_is_small_where_it_matters() -> None:
    ref, cur = CASES["normal"]
    assert _summary(ref, cur).bound < 0.005  # Wasserstein threshold 0.1
    approx = _summary(ref, cur, "ks")
    assert approx.bound < 0.05


@pytest.mark.parametrize("values", [["a"] * 3000, ["a", "b"] * 1500, ["a", "b", "c", None] * 900])
def test_categorical_methods_equal_the_exact_score(values: list[str | None]) -> None:
    rng = np.random.default_rng(5)
    cur = list(rng.choice(np.array(["a", "b", "c", "d", "e"], dtype=object), 4000))
    cur[:30] = [f"new{i}" for i in range(30)]  # unseen categories
    ref_cats = sorted({v for v in values if v is not None})
    for method in (None, "jensenshannon", "chisquare"):
        exact = stats.column_drift("c", stats.CategoricalSample(pd.Series(values, dtype=object)),
                                   stats.CategoricalSample(pd.Series(cur, dtype=object)),
                                   "categorical", method=method)
        approx = methods.column_drift("c", _cat(ref_cats, values), _cat(ref_cats, cur),
                                      "categorical", method=method)
        assert approx.result.method == exact.method
        assert approx.result.score == pytest.approx(exact.score, rel=1e-9, abs=1e-12)
        assert approx.result.drifted == exact.drifted


def test_folded_categories_leave_jensenshannon_exact() -> None:
    from monitoring.summary import sketch

    rng = np.random.default_rng(6)
    ref = list(rng.choice(np.array(["a", "b", "c"], dtype=object), 5000))
    cur = [f"u{v}" for v in rng.integers(0, sketch.CATEGORY_CAP * 3, 40_000)] + ref
    exact = stats.column_drift("c", stats.CategoricalSample(pd.Series(ref, dtype=object)),
                               stats.CategoricalSample(pd.Series(cur, dtype=object)), "categorical")
    summary = _cat(["a", "b", "c"], cur)
    assert summary.values.other > 0
    approx = methods.column_drift("c", _cat(["a", "b", "c"], ref), summary, "categorical")
    assert approx.result.score == pytest.approx(exact.score, rel=1e-9)


def test_sturges_edges_are_numpys() -> None:
    rng = np.random.default_rng(8)
    for n in (1, 2, 37, 5000):
        values = rng.normal(0, 1, n)
        expected = np.histogram_bin_edges(values, bins="sturges")
        got = methods._sturges_edges(float(values.min()), float(values.max()), n)
        assert np.allclose(got, expected, rtol=0, atol=1e-12)


def test_asymptotic_ks_matches_scipy() -> None:
    from scipy import stats as sps

    rng = np.random.default_rng(9)
    ref, cur = rng.normal(0, 1, 700).round(1), rng.normal(0.05, 1, 20_000).round(1)
    expected = float(sps.ks_2samp(ref, cur)[1])
    approx = _summary(ref, cur, "ks")
    assert approx.bound == 0.0
    assert approx.result.score == pytest.approx(expected, rel=1e-9)


# --- verdicts ------------------------------------------------------------------------------


def _spec() -> DatasetSpec:
    return parse_spec({"model_name": "bench", "target": "y", "timestamp_column": "ts",
                       "features": {"numerical": NUMERICAL, "categorical": CATEGORICAL},
                       "metric": "roc_auc", "drift": {"drift_share": 0.3, "min_rows": 200}})


@pytest.mark.parametrize("shift", [False, True])
def test_every_column_verdict_equals_the_exact_paths_on_benchmark_frames(shift: bool) -> None:
    rng = np.random.default_rng(0)
    spec = _spec()
    reference = Reference(spec, _features(rng, 20_000, shift=False), rng.uniform(0, 1, 4000),
                          {"roc_auc": 0.8})
    current = _features(rng, 60_000, shift=shift)
    current["score"] = rng.uniform(0, 1, len(current)) ** (2 if shift else 1)
    exact = check_frames(reference, current, now=NOW)
    ref = ReferenceSummary.of(reference)
    parts = [ref.summarise(current.iloc[i::3]) for i in range(3)]
    window = parts[0].merge(parts[1]).merge(parts[2])
    approx = check_summary(reference, ref, window, now=NOW,
                           window_start=exact.window_start, window_end=exact.window_end)
    assert approx.engine == "summary" and exact.engine == "exact"
    assert approx.status == exact.status and approx.drifted_columns == exact.drifted_columns
    assert approx.drift_share == exact.drift_share
    for a, e in zip(approx.columns, exact.columns, strict=True):
        assert (a.column, a.method, a.threshold, a.drifted) == (e.column, e.method, e.threshold,
                                                                  e.drifted)
        assert a.score_bound is not None and abs(a.score - e.score) <= a.score_bound + 1e-9
    assert exact.prediction_drift is not None and approx.prediction_drift is not None
    assert approx.prediction_drift.drifted == exact.prediction_drift.drifted
    assert approx.data_quality == exact.data_quality  # counts are exact


def test_a_reference_summary_survives_json_unchanged() -> None:
    """What monitoring/summary/stored.py writes reads back as the same summary (same
    fingerprint, so the day summaries made against it still match), adversarial columns too:
    all missing, constant, few distinct values, heavy tails, a single category."""
    import json

    rng = np.random.default_rng(3)
    frame = _features(rng, 3000, shift=False)
    frame["n00"] = np.nan
    frame["n01"] = 5.0
    frame["n02"] = rng.integers(0, 4, len(frame)).astype(float)
    frame["n03"] = rng.standard_cauchy(len(frame))
    frame["c0"] = "only"
    reference = Reference(_spec(), frame, rng.uniform(0, 1, 500), {"roc_auc": 0.8})
    ref = ReferenceSummary.of(reference)
    back = ReferenceSummary.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert back.fingerprint() == ref.fingerprint()
    nan_free = [c for c, b in ref.bases.items() if c != "n00"]  # NaN bounds: never equal
    assert {c: back.bases[c] for c in nan_free} == {c: ref.bases[c] for c in nan_free}
    assert repr(back.bases["n00"]) == repr(ref.bases["n00"])
    assert back.score_basis == ref.score_basis
    assert back.kinds == ref.kinds
    assert json.dumps(back.to_dict()) == json.dumps(ref.to_dict())
    current = _features(rng, 2000, shift=True)
    a = check_summary(reference, ref, ref.summarise(current), now=NOW)
    b = check_summary(reference, back, back.summarise(current), now=NOW)
    assert a == b
