from __future__ import annotations

import numpy as np
import pytest

from training.generate import SCENARIOS, Scenario, generate


def test_deterministic_by_seed():
    a = generate(2, rows_per_day=200, seed=3)
    b = generate(2, rows_per_day=200, seed=3)
    c = generate(2, rows_per_day=200, seed=4)
    assert a.equals(b)
    assert not a.equals(c)


def test_shape_and_time_order():
    frame = generate(3, rows_per_day=100)
    assert len(frame) == 300
    assert frame["ts"].is_monotonic_increasing
    assert frame["ts"].dt.normalize().nunique() == 3
    assert frame["customer_id"].is_unique
    assert set(frame["churned"].unique()) == {0, 1}


def _day(frame, day):
    return frame[frame["ts"].dt.normalize() == frame["ts"].dt.normalize().unique()[day]]


@pytest.mark.parametrize("name", sorted(set(SCENARIOS) - {"none"}))
def test_scenarios_switch_on_at_onset(name):
    base = generate(4, rows_per_day=2000, seed=5)
    drifted = generate(4, rows_per_day=2000, seed=5, scenario=Scenario(name, onset_day=2))
    # before the onset: identical
    assert _day(base, 0).equals(_day(drifted, 0))
    after_base, after = _day(base, 3), _day(drifted, 3)
    if name == "covariate":
        assert after["monthly_charges"].mean() > after_base["monthly_charges"].mean() * 1.15
        assert after["tenure_months"].mean() < after_base["tenure_months"].mean() * 0.6
    elif name == "concept":
        features = [c for c in base.columns if c not in {"churned"}]
        assert after[features].equals(after_base[features])
        assert not np.array_equal(after["churned"].to_numpy(), after_base["churned"].to_numpy())
    elif name == "unit_bug":
        ratio = after["monthly_charges"].median() / after_base["monthly_charges"].median()
        assert ratio == pytest.approx(100, rel=0.01)
    elif name == "new_category":
        assert (after["payment_method"] == "crypto-wallet").mean() > 0.2
        assert "crypto-wallet" not in set(base["payment_method"])
    elif name == "missing":
        assert after["total_charges"].isna().mean() == pytest.approx(0.4, abs=0.05)


def test_unknown_scenario():
    with pytest.raises(ValueError, match="unknown scenario"):
        generate(1, scenario=Scenario("meteor"))
