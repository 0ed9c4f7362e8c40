"""PSI per column with its 0.1/0.2 bands, and two drift levels (spec drift.levels): what the
verdict says, what the controller's intake does, and specs without levels as before."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from controller.intake import take_verdict
from controller.store import Store
from kernel.errors import SpecError
from kernel.spec import DatasetSpec, parse_spec
from monitoring import stats
from monitoring.check import Reference, check_frames, drift_level

NOW = datetime(2026, 3, 2, tzinfo=UTC)
COLUMNS = [f"x{i}" for i in range(10)]


def _spec(**drift: object) -> DatasetSpec:
    return parse_spec({"model_name": "lv", "target": "y", "timestamp_column": "ts",
                       "features": {"numerical": COLUMNS},
                       "drift": {"min_rows": 100, **drift}})


def _frame(rng: np.random.Generator, n: int, shifted: int = 0) -> pd.DataFrame:
    """``shifted`` of the ten columns moved by one standard deviation."""
    return pd.DataFrame({c: rng.normal(1.0 if i < shifted else 0.0, 1, n)
                         for i, c in enumerate(COLUMNS)})


def test_psi_by_hand_with_evidentlys_filling_of_empty_bins() -> None:
    ref = stats.sample_of(pd.Series(["a"] * 50 + ["b"] * 50), "categorical")
    cur = stats.sample_of(pd.Series(["a"] * 80 + ["b"] * 20), "categorical")
    assert stats.psi(ref, cur) == pytest.approx(0.3 * np.log(0.5 / 0.8) * -1
                                                + 0.3 * np.log(0.5 / 0.2))
    gone = stats.sample_of(pd.Series(["a"] * 100), "categorical")   # b empty: 0.0001
    assert stats.psi(ref, gone) == pytest.approx((0.5 - 1) * np.log(0.5 / 1)
                                                 + (0.5 - 0.0001) * np.log(0.5 / 0.0001))
    assert [stats.psi_band(v) for v in (0.0, 0.099, 0.1, 0.19, 0.2, 3.0)] == [
        "none", "none", "moderate", "moderate", "significant", "significant"]
    assert stats.psi_band(float("nan")) is None


def test_psi_is_a_fast_method_now() -> None:
    rng = np.random.default_rng(0)
    ref = stats.sample_of(rng.normal(0, 1, 3000), "numerical")
    cur = stats.sample_of(rng.normal(0.5, 1, 1000), "numerical")
    result = stats.column_drift("x", ref, cur, "numerical", method="psi")
    assert (result.method, result.threshold, result.drifted) == ("psi", 0.1, True)
    assert result.score == pytest.approx(stats.psi(ref, cur))


def test_every_column_carries_its_psi_and_band() -> None:
    rng = np.random.default_rng(1)
    spec = _spec()
    verdict = check_frames(Reference(spec, _frame(rng, 5000)), _frame(rng, 3000, shifted=2),
                           now=NOW)
    bands = {c.column: c.psi_band for c in verdict.columns}
    assert bands["x0"] == bands["x1"] == "significant"
    assert {bands[c] for c in COLUMNS[2:]} == {"none"}
    assert all(c.psi is not None and c.method == "wasserstein" for c in verdict.columns)


@pytest.mark.parametrize(("share", "expected"), [
    (0.0, "none"), (0.29, "none"), (0.3, "ticket"), (0.59, "ticket"), (0.6, "retrain"),
    (1.0, "retrain")])
def test_two_levels(share: float, expected: str) -> None:
    assert drift_level(share, 0.6, 0.3) == expected


def test_without_levels_drift_share_is_the_retrain_threshold_as_before() -> None:
    spec = _spec(drift_share=0.3)
    assert (spec.drift.retrain_share, spec.drift.ticket_share) == (0.3, None)
    assert drift_level(0.4, spec.drift.retrain_share, spec.drift.ticket_share) == "retrain"
    assert drift_level(0.2, spec.drift.retrain_share, spec.drift.ticket_share) == "none"
    levels = _spec(levels={})
    assert (levels.drift.ticket_share, levels.drift.retrain_share) == (0.3, 0.6)
    with pytest.raises(SpecError, match="ticket 0.7 is above retrain 0.6"):
        _spec(levels={"ticket": 0.7})


@pytest.mark.parametrize(("drift", "shifted", "status", "level", "action"), [
    ({}, 4, "drift", "retrain", "retrain"),                       # no levels: as before
    ({}, 2, "ok", "none", None),
    ({"levels": {}}, 4, "drift", "ticket", "ticket"),             # 0.4: a ticket
    ({"levels": {}}, 7, "drift", "retrain", "retrain"),           # 0.7: a retrain
    ({"levels": {}}, 2, "ok", "none", None),
])
def test_the_level_reached_maps_to_an_action(drift: dict[str, object], shifted: int,
                                             status: str, level: str,
                                             action: str | None) -> None:
    rng = np.random.default_rng(2)
    spec = _spec(**drift)
    verdict = check_frames(Reference(spec, _frame(rng, 5000)), _frame(rng, 3000, shifted),
                           now=NOW)
    assert (verdict.status, verdict.drift_level) == (status, level)
    assert verdict.drift_share == pytest.approx(shifted / 10)
    assert verdict.drift_ticket_threshold == spec.drift.ticket_share
    store = Store("sqlite://")
    result = take_verdict(store, verdict.model_dump_json().encode(), verdict, models={"lv"},
                          now=NOW)
    rows = store.triggers_of("lv")
    assert [r.action for r in rows] == ([] if action is None else [action])
    assert bool(result.trigger_ids) == (action == "retrain")
    if action == "ticket":
        assert rows[0].status == "ignored" and any("ticket level" in r for r in verdict.reasons)
