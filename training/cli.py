"""``driftloop generate`` and ``driftloop train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kernel.cliutil import echo, parse_time


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.command("train")(train)


def generate(
    out: Annotated[Path, typer.Option(help="Output file (.csv or .parquet) or directory.")],
    kind: Annotated[str, typer.Option(help="churn (tabular, binary: examples/churn/spec.yaml) "
                                      "or tickets (support-ticket texts over five classes: "
                                      "examples/tickets/spec.yaml).")] = "churn",
    scenario: Annotated[str, typer.Option(help="churn: none, covariate, concept, unit_bug, "
                                          "new_category, missing or weekend (a weekly pattern "
                                          "from day 0); tickets: none, slang, "
                                          "new_topic, class_mix or length "
                                          "(docs/scenarios.md).")] = "none",
    days: Annotated[int, typer.Option(min=1, help="Days of data.")] = 14,
    onset_day: Annotated[int | None, typer.Option(help="Day the scenario starts "
                                                  "(default: half way).")] = None,
    rows_per_day: Annotated[int, typer.Option(min=1, help="Rows per day.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 7,
) -> None:
    """Synthetic labelled data, churn (spec: examples/churn/spec.yaml) or support tickets
    (--kind tickets, spec: examples/tickets/spec.yaml), with an optional drift scenario
    switched on at a given day."""
    from kernel.errors import UsageError
    from kernel.tables import write_table
    from training import generate as churn_data
    from training import generate_tickets as ticket_data

    kinds = {"churn": churn_data, "tickets": ticket_data}
    if kind not in kinds:
        raise UsageError(f"--kind: unknown {kind!r}; choose from {', '.join(kinds)}")
    data = kinds[kind]
    if scenario not in data.SCENARIOS:
        other = next((k for k, m in kinds.items() if k != kind and scenario in m.SCENARIOS), None)
        if other is None:
            raise UsageError(f"--scenario: unknown {scenario!r}; choose from "
                             f"{', '.join(data.SCENARIOS)}")
        raise UsageError(f"--scenario: {scenario!r} is a {other} scenario, not a {kind} one "
                         f"(--kind {other}); {kind} has {', '.join(data.SCENARIOS)}")
    # a weekly pattern is there from the start (training sees it); a change starts half way
    onset = (0 if scenario == "weekend" else days // 2) if onset_day is None else onset_day
    frame = data.generate(days, scenario=churn_data.Scenario(scenario, onset),
                          rows_per_day=rows_per_day, seed=seed)
    target = out / f"{kind}.parquet" if out.suffix == "" or out.is_dir() else out
    try:
        write_table(frame, target)
    except OSError as exc:
        raise UsageError(f"--out: cannot write {target}: {exc.strerror or exc}") from None
    echo(f"wrote {len(frame)} {'rows' if kind == 'churn' else kind} over {days} days to {target} "
         f"(scenario {scenario}{f' from day {onset}' if scenario != 'none' else ''})")


def train(
    spec: Annotated[Path, typer.Option(help="Dataset spec (YAML).")],
    data: Annotated[list[Path], typer.Option(help="Training data (.csv/.parquet); repeat to "
                                             "combine history with recent rows.")],
    since: Annotated[str | None, typer.Option(help="Only rows at or after this time (ISO 8601).")]
    = None,
    until: Annotated[str | None, typer.Option(help="Only rows before this time (ISO 8601).")]
    = None,
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version "
                                              "(champion bootstraps the first one).")] = None,
    tag: Annotated[list[str], typer.Option(help="Extra version tag KEY=VALUE (repeatable); "
                                           "keys get the driftloop. prefix.")] = [],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Fit, evaluate, log and register a new model version in MLflow."""
    from kernel.errors import UsageError
    from kernel.settings import CommonSettings
    from kernel.spec import load_spec
    from registry import TAG_PREFIX, open_registry
    from training.train import train as run

    tags = {}
    for item in tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag: expected KEY=VALUE, got {item!r}")
        tags[key if key.startswith(TAG_PREFIX) else TAG_PREFIX + key] = value
    dataset = load_spec(spec)
    window = {"since": parse_time(since, option="--since"),
              "until": parse_time(until, option="--until")}
    missing = [str(p) for p in data if not p.exists()]
    if missing:
        raise UsageError(f"data file not found: {', '.join(missing)}")
    registry = open_registry(CommonSettings())
    echo(f"training {dataset.model_name} ({dataset.estimator.kind}) on {len(data)} input(s)...")
    result = run(dataset, data, registry, alias=alias, tags=tags, seed=seed, **window)
    metric = dataset.metric
    if result.details.get("useless"):
        typer.echo(f"warning: {dataset.model_name} version {result.version.version} is "
                   f"useless: {result.details['useless']} (tagged driftloop.useless=true; the "
                   "controller will not make it challenger)", err=True)
    echo(f"registered {dataset.model_name} version {result.version.version} "
         f"({metric}={result.metrics[metric]:.4f}, {result.rows} rows, {result.seconds:.1f}s)"
         + (f" as @{alias}" if alias else ""))
