"""What a backtest leaves behind: the table, the JSON summary, the plot, the MLflow runs."""

from __future__ import annotations

import base64
import html
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from backtest.engine import ESTIMATE_BINARY_ONLY, POLICIES, BacktestResult, PeriodRow
from registry import TAG_PREFIX, ModelRegistry
from registry.port import BACKTEST_EXPERIMENT

LABELS = {"never": "never retrain", "configured": "configured policy",
          "every_period": "retrain every period"}


def _clean(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _trigger_text(row: PeriodRow) -> str:
    return "; ".join(f"{t['source']}:{t['outcome']}" for t in row.triggers
                     if t["outcome"] != "recorded")


def _decision_text(d: dict[str, Any]) -> str:
    if d["difference"] is None:
        who = f" v{d['challenger']}" if d["challenger"] is not None else ""
        return f"{d['outcome']}{who} ({d['evidence']})"
    return (f"{d['outcome']} v{d['challenger']} ({d['evidence']} n={d['n']} "
            f"diff={d['difference']:+.4f} CI=[{d['ci_low']:+.4f},{d['ci_high']:+.4f}])")


def as_dict(result: BacktestResult) -> dict[str, Any]:
    """The ``--json`` document: config, policy, per-period rows and totals."""
    c = result.config
    periods = []
    for p in result.periods:
        periods.append({
            "index": p.index, "start": p.start, "end": p.end, "rows": p.rows,
            "labelled_at_end": p.labelled_at_end,
            "drift": {"status": p.status, "share": p.drift_share, "columns": p.drifted},
            "checked_metric": p.checked_metric, "realised": p.realised,
            "estimated": p.estimated,
            "estimated_band": list(p.estimated_band) if p.estimated_band else None,
            "realised_in_band": p.in_band,
            "trigger": _trigger_text(p) or None, "triggers": p.triggers,
            "decisions": p.decisions, "live_version": p.live_version,
            "served_versions": p.served_versions, "shadow_version": p.shadow_version,
            "reasons": p.reasons})
    return _clean({
        "schema_version": 1, "model": result.spec.model_name, "metric": result.spec.metric,
        "classes": None if result.classes is None else list(result.classes),
        "config": {"period_seconds": c.period.total_seconds(), "period_months": c.months,
                   "initial_periods": c.initial_periods,
                   "label_delay_seconds": c.label_delay.total_seconds(),
                   "tick_seconds": c.tick.total_seconds(), "stable_until": c.stable_until,
                   "onset": c.onset, "seed": c.seed},
        "origin": result.origin, "replay_start": result.replay_start,
        "policy": result.policy.describe(), "periods": periods, "totals": result.summary()})


def table(result: BacktestResult) -> pd.DataFrame:
    rows = []
    binary = not result.spec.is_multiclass
    for p in result.periods:
        rows.append({
            "start": p.start.strftime("%Y-%m-%d %H:%M"), "rows": p.rows, "status": p.status,
            "drift_share": p.drift_share, "checked": p.checked_metric,
            **{f"{k}": p.realised.get(k) for k in POLICIES if k in p.realised},
            "estimated": p.estimated if binary else ESTIMATE_BINARY_ONLY,
            "est_band": (f"[{p.estimated_band[0]:.3f}, {p.estimated_band[1]:.3f}]"
                         if p.estimated_band else None),
            "in_band": None if p.in_band is None else ("yes" if p.in_band else "no"),
            "trigger": _trigger_text(p),
            "decision": "; ".join(_decision_text(d) for d in p.decisions),
            "live": f"v{p.live_version}"})
    return pd.DataFrame(rows)


def render_text(result: BacktestResult) -> str:
    """The per-period table and the summary, for the terminal."""
    frame = table(result)
    with pd.option_context("display.max_colwidth", 90, "display.width", 250,
                           "display.float_format", "{:.3f}".format):
        text = frame.to_string(index=False, na_rep="-")
    s = result.summary()
    metric = result.spec.metric
    lines = [text, "", f"realised {metric} (hindsight, all labels):"]
    for name, values in s["metric_overall"].items():
        parts = ", ".join(f"{k} {_f(v)}" for k, v in values.items())
        lines.append(f"  {LABELS.get(name, name):<22} {parts}")
    if s["estimate_note"]:
        lines.append(f"estimated {metric} (label-free, CBPE): {s['estimate_note']}")
    elif s["estimate_periods"]:
        lines.append(f"realised {metric} inside the estimate's band: {s['estimate_in_band']} of "
                     f"{s['estimate_periods']} periods")
    lines.append(f"retrains {s['retrains']}, promotions {s['promotions']}, rejections "
                 f"{s['rejections']}, no change {s['no_change']}, failed {s['failed']}, "
                 f"rollbacks {s['rollbacks']}")
    if result.config.stable_until is not None:
        lines.append(f"false alarms in {s['stable_periods']} stable periods: {s['false_alarms']} "
                     f"(retrains started: {s['false_retrains']})")
    if result.config.onset is not None:
        lines.append(f"detection delay after onset: {_hours(s['detection_delay_seconds'])}, "
                     f"first promotion: {_hours(s['promotion_delay_seconds'])}")
    lines.append(f"label reads {s['label_reads']}, reads of labels from the future: "
                 f"{s['label_violations']}; {s['seconds']} s")
    return "\n".join(lines)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _hours(seconds: float | None) -> str:
    return "none" if seconds is None else f"{seconds / 3600:.1f} h"


def plot(result: BacktestResult, png: Path, page: Path) -> None:
    """The metric per period for each policy, with triggers and decisions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.8), dpi=100)
    x = [p.start for p in result.periods]
    styles = {"never": ("#888888", "--"), "configured": ("#1f77b4", "-"),
              "every_period": ("#2ca02c", ":")}
    for name in POLICIES:
        if not any(name in p.realised for p in result.periods):
            continue
        y = [p.realised.get(name) for p in result.periods]
        y = [math.nan if v is None else v for v in y]
        color, style = styles[name]
        # matplotlib takes datetimes through its unit converters; its stubs say float only
        ax.plot(x, y, style, color=color, marker="o", markersize=3,  # type: ignore[arg-type]
                label=LABELS[name])
    low, high = ax.get_ylim()
    first = {"trigger": True, "promoted": True, "rejected": True}
    for p in result.periods:
        if p.cycle_started:
            ax.axvline(p.end, color="#ff7f0e", alpha=0.5, lw=1,  # type: ignore[arg-type]
                       label="retrain triggered" if first["trigger"] else None)
            first["trigger"] = False
        for d in p.decisions:
            value = p.realised.get("configured")
            value = high if value is None else value
            if d["outcome"] == "promoted":
                ax.scatter([d["decided_at"]], [value], marker="^", s=70, color="#2ca02c",
                           zorder=5, label="promoted" if first["promoted"] else None)
                first["promoted"] = False
            elif d["outcome"] in ("rejected", "failed"):
                ax.scatter([d["decided_at"]], [value], marker="x", s=70, color="#d62728",
                           zorder=5, label="rejected / failed" if first["rejected"] else None)
                first["rejected"] = False
    c = result.config
    if c.stable_until is not None:
        ax.axvspan(result.replay_start, c.stable_until,  # type: ignore[arg-type]
                   color="#2ca02c", alpha=0.06,
                   label="marked stable")
    if c.onset is not None:
        ax.axvline(c.onset, color="#d62728", ls="--", lw=1,  # type: ignore[arg-type]
                   label="marked onset")
    ax.set_ylabel(f"realised {result.spec.metric}")
    ax.set_title(f"driftloop backtest: {result.spec.model_name}")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    encoded = base64.b64encode(png.read_bytes()).decode()
    summary = html.escape(json.dumps(result.summary(), indent=2, default=str))
    body = table(result).to_html(index=False, na_rep="-", float_format="{:.3f}".format)
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>driftloop backtest {html.escape(result.spec.model_name)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
        f"<h1>driftloop backtest: {html.escape(result.spec.model_name)}</h1>"
        f"<img alt='metric per period' src='data:image/png;base64,{encoded}'>"
        f"<h2>Periods</h2>{body}<h2>Summary</h2><pre>{summary}</pre></body></html>")


def write_outputs(result: BacktestResult, out_dir: Path, json_path: Path | None) -> list[Path]:
    """table.csv, backtest.json, backtest.png, backtest.html under ``out_dir`` (and the
    JSON also at ``json_path``). Returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = json.dumps(as_dict(result), indent=2)
    csv = out_dir / "table.csv"
    table(result).to_csv(csv, index=False)
    jpath = out_dir / "backtest.json"
    jpath.write_text(doc)
    files = [csv, jpath]
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(doc)
    png, page = out_dir / "backtest.png", out_dir / "backtest.html"
    plot(result, png, page)
    return [*files, png, page]


def log_runs(result: BacktestResult, registry: ModelRegistry, files: list[Path]) -> dict[str, str]:
    """One run per policy in the ``driftloop-backtest`` experiment (same tags, so the UI can
    compare them); the table, JSON and plot as artifacts of each. Returns policy -> run id."""
    s = result.summary()
    c = result.config
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    group = f"{result.spec.model_name}-{stamp}"
    common = {"period_seconds": c.period.total_seconds(), "period_months": c.months,
              "initial_periods": c.initial_periods,
              "label_delay_seconds": c.label_delay.total_seconds(),
              "tick_seconds": c.tick.total_seconds(), "onset": c.onset, "stable_until": c.stable_until,
              "replay_start": result.replay_start.isoformat(), "rows": s["rows"],
              "periods": s["periods"], "metric": result.spec.metric}
    runs = {}
    for name, overall in s["metric_overall"].items():
        metrics = {f"{result.spec.metric}_{k}": v for k, v in overall.items() if v is not None}
        params = dict(common)
        if name == "configured":
            params.update({f"policy.{k}": v for k, v in result.policy.describe().items()})
            metrics.update({k: float(s[k]) for k in ("retrains", "promotions", "rejections",
                                                     "no_change", "failed", "rollbacks",
                                                     "false_alarms")})
            for key in ("detection_delay_seconds", "promotion_delay_seconds"):
                if s[key] is not None:
                    metrics[key] = float(s[key])
        for p in result.periods:
            value = p.realised.get(name)
            if value is not None:
                metrics[f"{result.spec.metric}_period_{p.index:03d}"] = value
        runs[name] = registry.log_run(
            BACKTEST_EXPERIMENT, f"backtest {result.spec.model_name} {name}",
            params={k: "" if v is None else v for k, v in params.items()}, metrics=metrics,
            tags={TAG_PREFIX + "kind": "backtest", TAG_PREFIX + "model": result.spec.model_name,
                  TAG_PREFIX + "policy": name, TAG_PREFIX + "backtest_group": group},
            files=files)
    return runs
