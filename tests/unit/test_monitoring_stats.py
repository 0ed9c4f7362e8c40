"""The fast drift statistics: Evidently's method choice and edge cases, on plain arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from monitoring import stats


def _num(values: object) -> stats.NumericSample:
    return stats.NumericSample(np.asarray(values, dtype=float))


def _cat(values: object) -> stats.CategoricalSample:
    return stats.CategoricalSample(pd.Series(values, dtype=object))


@pytest.mark.parametrize(("n_ref", "distinct", "kind", "method"), [
    (1000, 50, "numerical", "ks"),
    (1000, 4, "numerical", "chisquare"),
    (1000, 2, "numerical", "z"),
    (1001, 50, "numerical", "wasserstein"),
    (1001, 5, "numerical", "jensenshannon"),
    (500, 3, "categorical", "chisquare"),
    (500, 2, "categorical", "z"),
    (5000, 2, "categorical", "jensenshannon"),
])
def test_method_by_reference_size_and_distinct_values(n_ref: int, distinct: int, kind: str,
                                                       method: str) -> None:
    values = np.arange(n_ref) % distinct
    if kind == "categorical":
        ref, cur = _cat([f"k{v}" for v in values]), _cat([f"k{v}" for v in values[:300]])
    else:
        ref, cur = _num(values), _num(values[:300])
    assert stats.default_method(ref, cur, kind) == method


def test_missing_and_infinite_values_are_dropped_before_choosing() -> None:
    values = np.concatenate([np.random.default_rng(0).normal(size=1000), [np.nan] * 50,
                             [np.inf, -np.inf]])
    sample = _num(values)
    assert sample.n == 1000
    assert stats.default_method(sample, _num(values[:400]), "numerical") == "ks"


def test_wasserstein_is_scipys_normed_by_the_reference_std() -> None:
    rng = np.random.default_rng(1)
    ref, cur = rng.normal(0, 2, 3000), rng.normal(0.5, 2, 700)
    expected = sps.wasserstein_distance(ref, cur) / np.std(ref)
    result = stats.column_drift("x", _num(ref), _num(cur), "numerical")
    assert result.method == "wasserstein" and result.threshold == 0.1
    assert result.score == pytest.approx(expected, rel=1e-12)
    assert result.drifted


@pytest.mark.parametrize("seed", range(20))
def test_merge_is_the_stable_sort_of_reference_then_current(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = np.round(rng.normal(size=int(rng.integers(1, 2000))), seed % 3)
    cur = np.round(rng.normal(0.3, size=int(rng.integers(1, 2000))), seed % 3)
    ref[: ref.size // 3] = 0.0   # ties across both sides, with signed zeros
    cur[: cur.size // 4] = -0.0
    r, c = _num(ref), _num(cur)
    both = np.concatenate((r.sorted, c.sorted))
    order = np.argsort(both, kind="stable")
    merged = stats._Merged(r, c)
    assert np.array_equal(merged.values, both[order])
    assert np.array_equal(np.signbit(merged.values), np.signbit(both[order]))
    assert np.array_equal(merged.ref_count, np.cumsum(order[:-1] < r.n))


@pytest.mark.parametrize("seed", range(5))
def test_js_distance_is_scipys_to_the_last_bit(seed: int) -> None:
    from scipy.spatial import distance

    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 40))
    p, q = rng.random(k), rng.random(k)
    p[rng.random(k) < 0.2] = 0.0  # empty bins on either side
    q[rng.random(k) < 0.2] = 0.0
    assert stats.js_distance(p, q) == float(distance.jensenshannon(p, q, None))


def test_constant_reference_uses_the_floor_of_the_norm() -> None:
    result = stats.column_drift("x", _num(np.full(2000, 3.0)), _num(np.full(500, 3.0)),
                                "numerical", method="wasserstein")
    assert result.score == 0.0 and not result.drifted


def test_p_value_methods_drift_below_and_distances_at_or_above_the_threshold() -> None:
    same = stats.column_drift("c", _cat(["a", "b"] * 200), _cat(["a", "b"] * 100), "categorical")
    assert same.method == "z" and same.score == pytest.approx(1.0) and not same.drifted
    at = stats.column_drift("x", _num(np.arange(2000.0)), _num(np.arange(2000.0)), "numerical",
                            threshold=0.0)
    assert at.score == 0.0 and at.drifted  # distance methods: drift at the threshold


def test_an_empty_current_column_is_drift_and_an_empty_reference_is_not() -> None:
    full, empty = _num(np.arange(2000.0)), _num([np.nan] * 10)
    assert stats.column_drift("x", full, empty, "numerical").drifted
    assert not stats.column_drift("x", empty, full, "numerical").drifted


def test_unsupported_methods_are_refused_for_evidently_to_handle() -> None:
    with pytest.raises(stats.UnsupportedMethod):
        stats.column_drift("x", _num([1.0, 2.0]), _num([1.0, 2.0]), "numerical", method="kl_div")
    with pytest.raises(stats.UnsupportedMethod):
        stats.column_drift("c", _cat(["a"] * 2000), _cat(["b"] * 10), "categorical",
                           method="wasserstein")


def test_drift_share_is_the_share_of_drifted_columns() -> None:
    results = [stats.ColumnResult(str(i), "numerical", "ks", 0.0, 0.05, i < 3) for i in range(10)]
    assert stats.drift_share(results) == 0.3
    assert stats.drift_share([]) == 0.0
