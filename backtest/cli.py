"""``driftloop backtest``: replay a labelled history through the live controller."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kernel.cliutil import echo, parse_time


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest)


def backtest(
    spec: Annotated[Path, typer.Option(help="Dataset spec (YAML) of the model to replay.")],
    data: Annotated[list[Path], typer.Option(help="Labelled history (.csv/.parquet) with the "
                                             "spec's timestamp, features and (without --labels) "
                                             "target; repeatable.")],
    labels: Annotated[Path | None, typer.Option(help="Labels file joined on the spec's id "
                                                "column: id, target and optionally the "
                                                "timestamp column = when each label arrived.")]
    = None,
    policy: Annotated[Path | None, typer.Option(help="YAML of controller policy overrides "
                                                "(cooldown, min_pairs, margin, recent_days, "
                                                "retrain_window_days, drift_trigger: false, ...; "
                                                "see docs/backtest.md). Default: the live "
                                                "controller's settings.")] = None,
    period: Annotated[str, typer.Option(help="Length of a period: one drift check per "
                                        "period (e.g. 1d, 12h, 1w, or calendar months: 1mo, "
                                        "3mo).")] = "1d",
    initial_periods: Annotated[int, typer.Option(min=1, help="Periods that train the first "
                                                 "champion before the replay starts.")] = 3,
    label_delay: Annotated[str, typer.Option(help="How long after a row its label arrives; "
                                             "no decision sees a label earlier.")] = "1d",
    tick: Annotated[str, typer.Option(help="Simulated controller tick: serving switches "
                                      "models and the reconcile step runs this often.")] = "1h",
    stable_until: Annotated[str | None, typer.Option(help="Periods ending by this time "
                                                     "(ISO 8601) are marked stable: alarms "
                                                     "there count as false alarms.")] = None,
    onset: Annotated[str | None, typer.Option(help="Marked onset of a change (ISO 8601): "
                                              "the detection delay is measured from it.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the summary "
                                                   "JSON here.")] = None,
    out: Annotated[Path | None, typer.Option(help="Directory for table.csv, backtest.json, "
                                             "backtest.png and backtest.html (default "
                                             "<home>/reports/backtest/<model>-<time>).")] = None,
    baselines: Annotated[bool, typer.Option(help="Also replay 'never retrain' and 'retrain "
                                            "every period' for comparison.")] = True,
    mlflow: Annotated[bool, typer.Option(help="Log one run per policy to the "
                                         "driftloop-backtest MLflow experiment.")] = True,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    quiet: Annotated[bool, typer.Option(help="No per-period progress on stderr.")] = False,
) -> None:
    """Replay a labelled history in time order through the controller's own decision
    logic (same code and settings as live) and show what the policy would have done."""
    import tempfile
    from datetime import UTC, datetime

    from backtest.adapters import load_policy, parse_duration, parse_period
    from backtest.engine import BacktestConfig, run_backtest
    from backtest.report import log_runs, render_text, write_outputs
    from kernel.errors import UsageError
    from kernel.settings import CommonSettings
    from kernel.spec import load_spec

    missing = [str(p) for p in [*data, *([labels] if labels else [])] if not p.exists()]
    if missing:
        raise UsageError(f"file not found: {', '.join(missing)}")
    dataset = load_spec(spec)
    length, months = parse_period(period, option="--period")
    config = BacktestConfig(
        period=length, months=months, initial_periods=initial_periods,
        label_delay=parse_duration(label_delay, option="--label-delay"),
        tick=parse_duration(tick, option="--tick"),
        stable_until=parse_time(stable_until, option="--stable-until"),
        onset=parse_time(onset, option="--onset"), seed=seed, baselines=baselines)
    common = CommonSettings()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = out or common.reports_dir / "backtest" / f"{dataset.model_name}-{stamp}"

    def progress(line: str) -> None:
        if not quiet:
            typer.echo(line, err=True)

    with tempfile.TemporaryDirectory(prefix="driftloop-backtest-") as tmp:
        chosen = load_policy(policy, home=Path(tmp))
        result = run_backtest(dataset, spec.resolve(), data, labels_path=labels, config=config,
                              policy=chosen, workdir=Path(tmp) / "work", progress=progress)
    files = write_outputs(result, out_dir, json_path)
    echo(render_text(result))
    echo(f"wrote {', '.join(str(f) for f in files)}")
    if mlflow:
        from registry import open_registry

        runs = log_runs(result, open_registry(common), files)
        echo("MLflow runs (experiment driftloop-backtest): "
             + ", ".join(f"{k}={v}" for k, v in runs.items()))
