"""Multivariate drift by a domain classifier (real scikit-learn, small frames): raised on a
correlated shift that leaves every column's marginal unchanged (the pairing of two columns
swapped), not on a reference split."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from kernel.spec import DatasetSpec, parse_spec
from monitoring.check import Reference, check_frames

NOW = datetime(2026, 3, 3, tzinfo=UTC)


def _spec(**drift: object) -> DatasetSpec:
    return parse_spec({"model_name": "mv", "target": "y", "timestamp_column": "ts",
                       "features": {"numerical": ["a", "b", "c"], "categorical": ["k"]},
                       "drift": {"min_rows": 100, **drift}})


def _frame(rng: np.random.Generator, n: int, *, swap: bool = False) -> pd.DataFrame:
    a = rng.normal(0, 1, n)
    b = a + rng.normal(0, 0.3, n)                 # b follows a ...
    if swap:
        b = rng.permutation(b)                    # ... until the pairing is lost
    return pd.DataFrame({"a": a, "b": b, "c": rng.normal(0, 1, n),
                         "k": rng.choice(["x", "y", "z"], n)})


def test_a_swapped_pairing_is_multivariate_drift_and_a_reference_split_is_not() -> None:
    rng = np.random.default_rng(0)
    spec = _spec(domain_classifier={"sample_rows": 500, "folds": 2})
    reference = Reference(spec, _frame(rng, 2400))
    swapped = check_frames(reference, _frame(rng, 1200, swap=True), now=NOW)
    assert swapped.drifted_columns == [] and swapped.drift_share == 0.0   # marginals unchanged
    mv = swapped.multivariate
    assert mv is not None and mv.drifted and mv.auc > 0.75 and mv.rows_per_side == 500
    assert set(mv.top_features[:2]) == {"a", "b"}
    assert (swapped.status, swapped.drift_level) == ("drift", "ticket")
    assert any(r.startswith("multivariate drift") for r in swapped.reasons)
    same = check_frames(reference, _frame(rng, 1200), now=NOW)
    assert same.multivariate is not None and not same.multivariate.drifted
    assert same.multivariate.auc < same.multivariate.threshold
    assert (same.status, same.drift_level) == ("ok", "none")
    assert list(reference.null_aucs) == [500]        # the threshold computed once, reused


def test_off_by_default() -> None:
    rng = np.random.default_rng(1)
    verdict = check_frames(Reference(_spec(), _frame(rng, 2000)), _frame(rng, 1000, swap=True),
                           now=NOW)
    assert verdict.multivariate is None and verdict.status == "ok"
