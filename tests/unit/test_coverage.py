"""The coverage audit of a retraining set (training/coverage.py): shares per decile of the
champion's validation scores and per segment of its reference, against the spec's floors; a
retrain below a floor fails before fitting and registers nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kernel.spec import DatasetSpec, parse_spec
from registry import TAG_PREFIX as TAG
from registry.memory import InMemoryRegistry
from training.coverage import (
    Champion,
    CoverageError,
    audit,
    champion_scores,
    check,
    decile_edges,
    decile_shares,
)
from training.generate import Scenario, generate
from training.train import train

BASE: dict[str, Any] = dict(model_name="m", target="y", timestamp_column="t",
                            features={"numerical": ["a"], "categorical": ["plan"]})


class ScoreIsA:
    """A stand-in champion: its positive-class probability is the row's ``a``."""

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        a = frame["a"].to_numpy(dtype=float)
        return np.column_stack([1 - a, a])


def _spec(**coverage: Any) -> DatasetSpec:
    extra: dict[str, Any] = {"retrain": {"coverage": coverage}}
    if "min_segment_share" in coverage:
        extra["drift"] = {"segments": {"by": "weekend", "min_rows": 50}}
    return parse_spec({**BASE, **extra})


def _champion(reference: pd.DataFrame | None = None) -> Champion:
    # 1001 validation scores evenly over [0, 1]: the decile edges are 0.1, 0.2, ... 0.9
    validation = np.linspace(0, 1, 1001)
    ref = reference if reference is not None else pd.DataFrame({"a": validation})
    return Champion(3, ScoreIsA(), parse_spec(BASE), validation, ref)


def _rows(a: np.ndarray, stamps: Any = "2026-12-02T10:00:00Z") -> pd.DataFrame:
    return pd.DataFrame({"a": a, "plan": "basic", "t": stamps})


def test_edges_are_the_validation_scores_deciles() -> None:
    scores = np.random.default_rng(1).beta(2, 5, 5000)
    assert decile_edges(scores) == pytest.approx(np.percentile(scores, range(10, 100, 10)))
    assert decile_edges(np.linspace(0, 1, 1001)) == pytest.approx(np.arange(1, 10) / 10)


def test_a_uniform_set_passes_with_a_tenth_in_each_decile() -> None:
    rows = _rows(np.arange(1000) / 1000 + 0.0005)  # 100 rows inside each tenth of [0, 1]
    report = check(rows, _spec(min_decile_share=0.05), _champion())
    assert report.passed and report.rows == 1000
    assert [d.rows for d in report.deciles] == [100] * 10
    assert [d.share for d in report.deciles] == pytest.approx([0.1] * 10)
    assert json.loads(report.params()["coverage.decile_shares"]) == pytest.approx([0.1] * 10)
    assert report.params()["coverage.champion_version"] == "3"
    assert report.summary().startswith("passed against champion v3 (1000 rows)")


def test_a_set_missing_the_top_decile_fails_naming_it() -> None:
    rows = _rows(np.random.default_rng(2).uniform(0, 0.88, 2000))
    with pytest.raises(CoverageError) as caught:
        check(rows, _spec(min_decile_share=0.02), _champion())
    message = str(caught.value)
    assert message.startswith("coverage audit against champion v3: decile 10 of its "
                              "validation scores (0.900-1.000) holds 0.00% of the 2000 "
                              "retraining rows (0), below retrain.coverage.min_decile_share "
                              "2.00%")
    assert "\n" not in message and "more" not in message


def test_shares_are_counted_as_by_hand() -> None:
    # champion scores 0.05 (decile 1) x3, 0.95 (decile 10) x1: 75% and 25%
    got = decile_shares(np.array([0.05, 0.05, 0.05, 0.95]), np.linspace(0, 1, 1001))
    assert [d.rows for d in got] == [3, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert got[0].share == 0.75 and got[9].share == 0.25
    report = audit(_rows(np.array([0.05, 0.05, 0.05, 0.95])),
                   np.array([0.05, 0.05, 0.05, 0.95]), _champion(), _spec())
    assert len(report.failures) == 8  # deciles 2..9 are empty
    assert report.reason().endswith("(and 7 more)")


def test_deciles_the_champion_never_scores_into_are_not_judged() -> None:
    # a champion with three distinct validation scores: most deciles are empty edges
    validation = np.repeat([0.2, 0.5, 0.8], [400, 300, 300])
    champion = Champion(1, ScoreIsA(), parse_spec(BASE), validation,
                        pd.DataFrame({"a": validation}))
    rows = _rows(np.repeat([0.2, 0.5, 0.8], [50, 30, 20]))
    report = check(rows, _spec(min_decile_share=0.1), champion)
    judged = [d for d in report.deciles if d.validation_share > 0]
    assert sum(d.validation_share for d in judged) == pytest.approx(1.0)
    assert sum(d.rows for d in judged) == 100 and report.passed


def test_a_segment_below_its_floor_fails_naming_it() -> None:
    # the champion's reference: weekdays and weekends; the retraining rows: 4% weekend
    reference = pd.DataFrame({"a": 0.5, "t": ["2026-12-02T10:00:00Z"] * 500
                              + ["2026-12-05T10:00:00Z"] * 200})
    a = np.arange(1000) / 1000 + 0.0005
    stamps = np.where(np.arange(1000) % 25 == 0, "2026-12-06T08:00:00Z", "2026-12-03T08:00:00Z")
    spec = _spec(min_decile_share=0.02, min_segment_share=0.1)
    with pytest.raises(CoverageError, match=r"segment weekend=weekend holds 4\.00% of the 1000 "
                       r"retraining rows \(40\), below retrain.coverage.min_segment_share "
                       r"10\.00%"):
        check(_rows(a, stamps), spec, _champion(reference))
    fine = np.where(np.arange(1000) % 4 == 0, "2026-12-06T08:00:00Z", "2026-12-03T08:00:00Z")
    report = check(_rows(a, fine), spec, _champion(reference))
    assert {s.segment: s.share for s in report.segments} == {"weekday": 0.75, "weekend": 0.25}
    assert json.loads(report.params()["coverage.segment_shares"]) == {"weekday": 0.75,
                                                                      "weekend": 0.25}


def test_segments_the_reference_hardly_has_and_a_reference_without_times() -> None:
    # 10 weekend rows in the reference are below drift.segments.min_rows (50): not judged
    reference = pd.DataFrame({"a": 0.5, "t": ["2026-12-02T10:00:00Z"] * 500
                              + ["2026-12-05T10:00:00Z"] * 10})
    spec = _spec(min_segment_share=0.1)
    rows = _rows(np.arange(1000) / 1000 + 0.0005)
    report = check(rows, spec, _champion(reference))
    assert [s.segment for s in report.segments] == ["weekday"] and report.passed
    untimed = check(rows, spec, _champion(pd.DataFrame({"a": [0.5] * 100})))
    assert untimed.passed and untimed.segments == ()
    assert "segments" in untimed.skipped[0] and "coverage.skipped" in untimed.params()


def test_rows_without_a_champion_column_skip_the_deciles() -> None:
    champion = _champion()
    rows = pd.DataFrame({"b": [0.1, 0.2], "t": "2026-12-02"})
    assert champion_scores(champion, rows) is None
    report = audit(rows, None, champion, _spec())
    assert report.passed and report.deciles == () and "['a', 'plan']" in report.skipped[0]


def _coverage_spec(spec: DatasetSpec, floor: float) -> DatasetSpec:
    coverage = {"retrain": {"coverage": {"min_decile_share": floor}}}
    return parse_spec({**json.loads(spec.model_dump_json(exclude_none=True)), **coverage})


def test_a_retrain_below_the_floor_registers_nothing_and_one_above_logs_its_figures(
        tmp_path: Path, churn_spec: DatasetSpec) -> None:
    frame = generate(3, scenario=Scenario("none", 0), rows_per_day=600, seed=3)
    data = tmp_path / "all.parquet"
    frame.to_parquet(data, index=False)
    registry = InMemoryRegistry()
    spec = _coverage_spec(churn_spec, 0.05)
    first = train(spec, [data], registry, alias="champion")  # no champion yet: no audit
    assert TAG + "coverage" not in first.version.tags
    # the rows the champion scores highest left out: its top deciles are empty
    bundle = registry.download(spec.model_name, 1, tmp_path / "v1")
    scores = registry.load_model(bundle).predict_proba(frame[spec.features.all])[:, 1]
    narrow = tmp_path / "narrow.parquet"
    frame[scores < np.quantile(scores, 0.7)].to_parquet(narrow, index=False)
    with pytest.raises(CoverageError, match=r"champion v1: decile 8 of its validation scores "
                       r"\(0\.\d+-0\.\d+\) holds 0\.00% of the 1260 retraining rows \(0\), "
                       r"below retrain.coverage.min_decile_share 5\.00% \(and 2 more\)$"):
        train(spec, [narrow], registry)
    assert registry.aliases(spec.model_name) == {"champion": 1}
    assert [v.version for v in registry.find_versions(spec.model_name, {})] == [1]
    again = train(spec, [data], registry)
    assert again.version.version == 2
    assert again.version.tags[TAG + "coverage"].startswith("passed against champion v1")
    report = again.details["coverage"]
    shares = json.loads(report.params()["coverage.decile_shares"])
    assert len(shares) == 10 and sum(shares) == pytest.approx(1.0)
    assert min(shares) >= 0.05 and report.champion_version == 1


class ThreeWay:
    """A multi-class stand-in: probabilities (a, (1 - a) / 2, (1 - a) / 2)."""

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        a = frame["a"].to_numpy(dtype=float)
        return np.column_stack([a, (1 - a) / 2, (1 - a) / 2])


def test_a_multiclass_champion_is_audited_on_its_top_probability() -> None:
    spec = parse_spec({**BASE, "classes": ["x", "y", "z"],
                       "retrain": {"coverage": {"min_decile_share": 0.05}}})
    rows = _rows(np.array([0.1, 0.5, 0.9]))
    champion = Champion(2, ThreeWay(), spec, np.linspace(1 / 3, 1, 1001), rows)
    assert champion_scores(champion, rows) == pytest.approx([0.45, 0.5, 0.9])
