"""The backtest on the demo scenarios, against time travel, and on a dataset nobody here made."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest.adapters import load_policy
from backtest.engine import BacktestConfig, BacktestResult, run_backtest
from driftloop.cli import main
from kernel.settings import CommonSettings
from kernel.tables import write_table
from tests.conftest import CHURN_SPEC
from training.generate import Scenario, generate

DAYS, ONSET_DAY, INITIAL = 12, 6, 4
START = datetime(2026, 1, 1, tzinfo=UTC)
ONSET = START + timedelta(days=ONSET_DAY)
#: Concept drift needs the old world dropped from retraining: train on the last 2 days only.
WINDOWED = "retrain_window_days: 2\n"


def _backtest(tmp_path: Path, scenario: str, policy: str | None = None, *,
              baselines: bool = True, min_rows: int | None = None,
              **config: object) -> BacktestResult:
    from kernel.spec import load_spec

    spec = load_spec(CHURN_SPEC)
    if min_rows is not None:  # retrain.min_rows for this history's 1,000 rows a day
        spec = spec.model_copy(update={"retrain": spec.retrain.model_copy(
            update={"min_rows": min_rows})})
    data = tmp_path / f"{scenario}.parquet"
    write_table(generate(DAYS, scenario=Scenario(scenario, ONSET_DAY), rows_per_day=1000,
                         seed=3), data)
    path = None
    if policy is not None:
        path = tmp_path / "policy.yaml"
        path.write_text(policy)
    options = dict(initial_periods=INITIAL, onset=ONSET, stable_until=ONSET, baselines=baselines)
    options.update(config)
    return run_backtest(spec, CHURN_SPEC, [data],
                        config=BacktestConfig(**options),  # type: ignore[arg-type]
                        policy=load_policy(path, home=tmp_path / "home"),
                        workdir=tmp_path / "work")


def _after_onset(result: BacktestResult, policy: str) -> float:
    value = result.overall[policy]["after_onset"]
    assert value is not None
    return value


def test_stable_history_no_alarm_no_retrain(tmp_path: Path) -> None:
    result = _backtest(tmp_path, "none", baselines=False)
    s = result.summary()
    assert s["periods"] == DAYS - INITIAL and s["rows"] == (DAYS - INITIAL) * 1000
    assert [p.status for p in result.periods] == ["ok"] * (DAYS - INITIAL)
    assert s["false_alarms"] == 0 and s["retrains"] == 0 and result.versions == 1
    assert all(p.live_version == 1 for p in result.periods)


def test_concept_drift_configured_policy_beats_never_retrain(tmp_path: Path) -> None:
    result = _backtest(tmp_path, "concept", WINDOWED, min_rows=1000)
    s = result.summary()
    assert s["false_alarms"] == 0 and s["false_retrains"] == 0
    assert s["promotions"] >= 1
    # labels arrive a day late: the first check that can see the onset day's labels is two
    # periods after the onset
    assert s["detection_delay_seconds"] == 2 * 86400
    assert _after_onset(result, "configured") > _after_onset(result, "never") + 0.05
    stable = [p for p in result.periods if p.end <= ONSET]
    assert all(p.realised["configured"] == p.realised["never"] for p in stable)
    promoted = [d for d in result.decisions if d["outcome"] == "promoted"][0]
    assert promoted["evidence"] in ("offline_replay", "shadow")
    assert promoted["n"] >= 200 and promoted["ci_low"] >= -promoted["margin"]
    assert s["label_violations"] == 0


@pytest.mark.parametrize("scenario", ["covariate", "new_category"])
def test_input_drift_detected_and_not_worse(tmp_path: Path, scenario: str) -> None:
    result = _backtest(tmp_path, scenario)
    s = result.summary()
    assert s["false_alarms"] == 0 and s["false_retrains"] == 0
    assert s["detection_delay_seconds"] == 86400           # the onset period's own check
    after = [p for p in result.periods if p.start >= ONSET]
    assert after[0].status == "drift" and after[0].cycle_started
    assert _after_onset(result, "configured") >= _after_onset(result, "never") - 0.01


def test_labels_later_than_the_history_never_reach_a_decision(tmp_path: Path) -> None:
    """Concept drift shows only in labels; with labels arriving after the history ends, the
    replay must not see it: no performance verdict, no trigger, no retrain."""
    result = _backtest(tmp_path, "concept", WINDOWED, baselines=False,
                       label_delay=timedelta(days=DAYS + 1))
    s = result.summary()
    assert all(p.checked_metric is None for p in result.periods)
    assert all(p.status == "ok" for p in result.periods)
    assert not any(t["source"] == "performance" for p in result.periods for t in p.triggers)
    assert s["retrains"] == 0 and s["label_violations"] == 0
    assert s["detection_delay_seconds"] is None


def test_decision_evidence_counts_only_labels_arrived_by_then(tmp_path: Path) -> None:
    """Labels from a labels file with their own arrival times; half of them arrive in 2030.
    Every gate decision's n is at most the labels that had arrived by its time."""
    from kernel.spec import load_spec

    frame = generate(DAYS, scenario=Scenario("covariate", ONSET_DAY), rows_per_day=1000, seed=3)
    labels = frame[["customer_id", "churned", "ts"]].copy()
    rng = np.random.default_rng(0)
    late = rng.random(len(labels)) < 0.5
    labels["ts"] = labels["ts"] + pd.Timedelta(hours=6)
    labels.loc[late, "ts"] = pd.Timestamp("2030-01-01", tz="UTC")
    data, label_file = tmp_path / "rows.parquet", tmp_path / "labels.csv"
    write_table(frame.drop(columns=["churned"]), data)
    write_table(labels, label_file)
    spec = load_spec(CHURN_SPEC)  # 500 labels a day: a change window needs fewer to start
    spec = spec.model_copy(update={"retrain": spec.retrain.model_copy(update={"min_rows": 500})})
    result = run_backtest(spec, CHURN_SPEC, [data], labels_path=label_file,
                          config=BacktestConfig(initial_periods=INITIAL, baselines=False,
                                                label_delay=timedelta(hours=12)),
                          policy=load_policy(None, home=tmp_path / "home"))
    arrival = np.maximum(labels["ts"], frame["ts"] + pd.Timedelta(hours=12))
    gated = [d for d in result.decisions if d["n"]]
    assert gated, "expected at least one gate decision with evidence"
    for d in gated:
        arrived = int((arrival <= pd.Timestamp(d["decided_at"])).sum())
        assert d["n"] <= arrived
    assert result.label_reads > 0 and result.label_violations == 0
    assert all(p.labelled_at_end <= p.rows // 2 + 60 for p in result.periods)


def test_cli_on_a_dataset_nobody_here_generated(home: Path, tmp_path: Path) -> None:
    """Other column names, CSV, a string positive label; MLflow runs per policy."""
    rng = np.random.default_rng(11)
    days, per_day = 8, 400
    n = days * per_day
    day = np.repeat(np.arange(days), per_day)
    when = pd.Timestamp("2025-03-01", tz="UTC") + pd.to_timedelta(day * 86400
                                                                  + rng.uniform(0, 86400, n), "s")
    vibration = rng.normal(1.0, 0.3, n) + np.where(day >= 5, 0.8, 0.0)  # sensor drift
    temp = rng.normal(60, 5, n)
    site = rng.choice(["north", "south", "east"], n)
    logit = -2 + 2.0 * (vibration - 1) + 0.08 * (temp - 60) + (site == "east") * 0.7
    status = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "failed", "healthy")
    frame = pd.DataFrame({"reading_time": when.strftime("%Y-%m-%dT%H:%M:%S"),
                          "pump": [f"p{i}" for i in range(n)], "vibration_mm_s": vibration,
                          "temperature_c": temp, "site": site, "status": status})
    data = tmp_path / "pumps.csv"
    frame.sort_values("reading_time").to_csv(data, index=False)
    spec = tmp_path / "pumps.yaml"
    spec.write_text("model_name: pump-failures\ntarget: status\npositive_label: failed\n"
                    "id_column: pump\ntimestamp_column: reading_time\nfeatures:\n"
                    "  numerical: [vibration_mm_s, temperature_c]\n  categorical: [site]\n"
                    "metric: average_precision\ndrift:\n  min_rows: 100\n"
                    "  min_labelled_rows: 50\n  performance_tolerance: 0.2\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text("min_pairs: 100\ncooldown: 12h\n")
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    code = main(["backtest", "--spec", str(spec), "--data", str(data), "--policy", str(policy),
                 "--initial-periods", "3", "--label-delay", "12h", "--stable-until",
                 "2025-03-06", "--onset", "2025-03-06", "--json", str(summary),
                 "--out", str(out), "--quiet"])
    assert code == 0
    doc = json.loads(summary.read_text())
    assert doc["model"] == "pump-failures" and doc["metric"] == "average_precision"
    assert len(doc["periods"]) == days - 3
    first = doc["periods"][0]
    assert {"start", "rows", "drift", "realised", "trigger", "decisions",
            "live_version"} <= set(first)
    assert set(first["realised"]) == {"never", "configured", "every_period"}
    assert first["rows"] == per_day and first["drift"]["status"] == "ok"
    assert doc["totals"]["false_alarms"] == 0
    assert any(p["drift"]["status"] == "drift" for p in doc["periods"][2:])
    assert doc["policy"]["controller_min_pairs"] == 100
    assert {p.name for p in out.iterdir()} == {"table.csv", "backtest.json", "backtest.png",
                                              "backtest.html"}
    assert (out / "backtest.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (out / "backtest.html").read_text()

    import mlflow

    settings = CommonSettings()
    client = mlflow.MlflowClient(settings.resolved_tracking_uri)
    experiment = client.get_experiment_by_name("driftloop-backtest")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["driftloop.policy"] for r in runs) == [
        "configured", "every_period", "never"]
    configured = [r for r in runs if r.data.tags["driftloop.policy"] == "configured"][0]
    assert configured.data.params["policy.controller_min_pairs"] == "100"
    assert "average_precision_all" in configured.data.metrics
    artifacts = {a.path for a in client.list_artifacts(configured.info.run_id)}
    assert {"table.csv", "backtest.json", "backtest.png", "backtest.html"} <= artifacts


def test_monthly_periods_end_on_calendar_month_boundaries(tmp_path: Path) -> None:
    from kernel.spec import load_spec

    data = tmp_path / "months.parquet"
    frame = generate(120, scenario=Scenario("none", 200), rows_per_day=60, seed=3)  # Jan-Apr
    write_table(frame, data)
    result = run_backtest(load_spec(CHURN_SPEC), CHURN_SPEC, [data],
                          config=BacktestConfig(months=1, initial_periods=2, tick=timedelta(
                              days=1), baselines=False),
                          policy=load_policy(None, home=tmp_path / "home"),
                          workdir=tmp_path / "work")
    months = [datetime(2026, m, 1, tzinfo=UTC) for m in (3, 4, 5)]
    assert [(p.start, p.end) for p in result.periods] == list(zip(months, months[1:], strict=False))
    ts = frame["ts"]
    # March has 31 days, April 30: each period holds exactly its calendar month's rows
    assert [p.rows for p in result.periods] == [
        int(((ts >= pd.Timestamp(a)) & (ts < pd.Timestamp(b))).sum())
        for a, b in zip(months, months[1:], strict=False)] == [31 * 60, 30 * 60]
    assert result.replay_start == months[0]



def test_after_a_covariate_shift_one_retrain_on_the_new_world_ends_the_alarm(
        tmp_path: Path) -> None:
    """Issue 20, with the defaults: the drift alarm's retrain trains on the rows from the
    detected change on (version tags), and once it serves no period alarms again."""
    from kernel.spec import load_spec

    days, onset_day = 24, 12
    data = tmp_path / "covariate.parquet"
    write_table(generate(days, scenario=Scenario("covariate", onset_day), rows_per_day=2000,
                         seed=3), data)
    onset = START + timedelta(days=onset_day)
    result = run_backtest(load_spec(CHURN_SPEC), CHURN_SPEC, [data],
                          config=BacktestConfig(initial_periods=5, onset=onset,
                                                stable_until=onset, baselines=False),
                          policy=load_policy(None, home=tmp_path / "home"),
                          workdir=tmp_path / "work")
    promoted = [d for d in result.decisions if d["outcome"] == "promoted"]
    assert promoted, "expected a promotion after the shift"
    first = promoted[0]
    tags = result.version_tags[first["challenger"]]
    assert tags["driftloop.window"] == "change"
    assert datetime.fromisoformat(tags["driftloop.window_since"]) >= onset
    assert tags["driftloop.train_rows_history"] == "0" and tags["driftloop.refit"] == "true"
    assert any("training window: retrain.window auto" in r for r in first["reasons"])
    after = [p for p in result.periods if p.start >= first["decided_at"]]
    assert after and not any(p.alarm for p in after)
    assert all(p.live_version == first["challenger"] for p in after)
    assert result.summary()["false_alarms"] == 0


@pytest.mark.filterwarnings(
    # the content-drift classifier keeps Evidently's max_iter=50 (monitoring/text_drift.py)
    "ignore:Maximum number of iteration reached:sklearn.exceptions.ConvergenceWarning")
def test_cli_on_the_ticket_classifier_with_slang(home: Path, tmp_path: Path) -> None:
    """A multi-class text spec through the command: tickets from ``driftloop generate --kind
    tickets --scenario slang``, labels from a file joined on ticket_id (six hours late), the
    spec's macro-F1 per period, text drift from the onset on, CBPE said to be binary only."""
    import yaml

    from tests.conftest import ROOT

    tickets = tmp_path / "tickets.parquet"
    assert main(["generate", "--kind", "tickets", "--scenario", "slang", "--days", "8",
                 "--onset-day", "4", "--rows-per-day", "400", "--seed", "3",
                 "--out", str(tickets)]) == 0
    frame = pd.read_parquet(tickets)
    labels = frame[["ticket_id", "label", "ts"]].assign(ts=frame["ts"] + pd.Timedelta(hours=6))
    data, label_file = tmp_path / "rows.parquet", tmp_path / "labels.csv"
    write_table(frame.drop(columns=["label"]), data)
    labels.to_csv(label_file, index=False)
    example = yaml.safe_load((ROOT / "examples" / "tickets" / "spec.yaml").read_text())
    example["text"].update(analyzer="word", max_features=5000)  # a second to train
    example["retrain"] = {"min_rows": 300}
    spec = tmp_path / "tickets.yaml"
    spec.write_text(yaml.safe_dump(example))
    policy = tmp_path / "policy.yaml"
    policy.write_text("min_pairs: 100\n")
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    onset = "2026-01-05T00:00:00Z"
    code = main(["backtest", "--spec", str(spec), "--data", str(data), "--labels",
                 str(label_file), "--policy", str(policy), "--initial-periods", "3",
                 "--label-delay", "1h", "--stable-until", onset, "--onset", onset,
                 "--json", str(summary), "--out", str(out), "--quiet"])
    assert code == 0
    doc = json.loads(summary.read_text())
    assert doc["model"] == "tickets" and doc["metric"] == "macro_f1"
    assert doc["classes"] == ["account", "billing", "hardware", "network", "other"]
    periods = doc["periods"]
    assert [p["rows"] for p in periods] == [400] * 5
    assert periods[0]["drift"]["status"] == "ok"
    assert not any(c.startswith("body") for c in periods[0]["drift"]["columns"])
    # slang starts on 40% of the network tickets and grows: flagged on the onset day or the
    # next, then every day (out-of-vocabulary share first)
    assert all(p["drift"]["status"] in ("drift", "degraded") for p in periods[2:])
    assert "body:oov_share" in periods[2]["drift"]["columns"]
    # labels six hours late: the onset period's own check already judges realised macro-F1
    assert periods[1]["checked_metric"] is not None
    for p in periods:
        assert set(p["realised"]) == {"never", "configured", "every_period"}
        assert all(0 < v <= 1 for v in p["realised"].values())
        assert p["estimated"] is None
    totals = doc["totals"]
    assert totals["estimate_note"] == "n/a (binary only)" and totals["label_violations"] == 0
    assert totals["false_alarms"] == 0 and totals["retrains"] >= 1
    assert totals["detection_delay_seconds"] in (86400, 2 * 86400)
    gated = [d for p in periods for d in p["decisions"] if d["kind"] == "gate"]
    assert gated and all(d["reasons"][0].startswith("macro_f1: challenger") for d in gated)
    assert all(d["evidence"] == "offline_replay" and d["n"] >= 100 for d in gated)
    assert set(pd.read_csv(out / "table.csv")["estimated"]) == {"n/a (binary only)"}

    import mlflow

    client = mlflow.MlflowClient(CommonSettings().resolved_tracking_uri)
    experiment = client.get_experiment_by_name("driftloop-backtest")
    assert experiment is not None
    [configured] = [r for r in client.search_runs([experiment.experiment_id])
                    if r.data.tags["driftloop.policy"] == "configured"]
    assert configured.data.metrics["macro_f1_all"] == pytest.approx(
        totals["metric_overall"]["configured"]["all"])


def test_a_weekly_pattern_alarms_without_segments_and_never_with(tmp_path: Path) -> None:
    """The weekend scenario over three weeks, two of them training: against one reference
    both weekend days alarm (and the retrain they cause, on the weekend alone, alarms on a
    weekday); with drift.segments by weekend no period alarms and nothing is retrained."""
    from kernel.spec import SegmentSettings, load_spec

    data = tmp_path / "weekend.parquet"
    write_table(generate(21, scenario=Scenario("weekend", 0), rows_per_day=1000, seed=3), data)
    plain = load_spec(CHURN_SPEC)
    segmented = plain.model_copy(update={"drift": plain.drift.model_copy(
        update={"segments": SegmentSettings(by="weekend")})})
    days: dict[str, list[tuple[str, str]]] = {}
    for name, spec in (("plain", plain), ("segmented", segmented)):
        result = run_backtest(spec, CHURN_SPEC, [data],
                              config=BacktestConfig(initial_periods=14, baselines=False),
                              policy=load_policy(None, home=tmp_path / f"home-{name}"),
                              workdir=tmp_path / f"work-{name}")
        days[name] = [(p.start.strftime("%a"), p.status) for p in result.periods]
        if name == "segmented":
            assert result.versions == 1 and result.summary()["retrains"] == 0
    assert [d for d, _ in days["plain"]] == ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
    assert [s for d, s in days["plain"] if d in ("Sat", "Sun")] == ["drift", "drift"]
    assert all(s == "ok" for d, s in days["plain"][:2])
    assert [s for _, s in days["segmented"]] == ["ok"] * 7
