"""The drift check on a window of 200,000 logged support tickets (issue 16), against
Evidently's own text drift on the same frames.

A ticket model (examples/tickets/spec.yaml: the ``body`` text, ``account_age_days``,
``channel``; five classes) is trained on ``driftloop generate --kind tickets`` data
(training/generate_tickets.py) into a local MLflow registry; its bundle's reference sample is
the reference. The window: ``--rows`` tickets of one day of the ``slang`` scenario (network
tickets in words the training vocabulary never had), scored by the version as the serving
log has them (``score``, ``prediction``, ``probabilities``), a label for one ticket in ten.

Each side is a fresh process, timed with its peak memory (GNU time):

- ours, the check itself: the bundle's reference (``Reference.from_bundle``), the window
  read as ``drift-check --current`` reads it (``monitoring.job.read_current_file``) and
  ``monitoring.check.check_frames`` (``--runs`` times, the median counts);
- ours, the whole command: ``driftloop drift-check --current FILE --no-report`` (registry,
  bundle download, the same check, the verdict JSON and the MLflow run);
- Evidently: ``Report([DataDriftPreset()])`` of the new API, with ``body`` declared a text
  column in the ``DataDefinition`` (so its drift is Evidently's ``text_content_drift``, the
  legacy preset's method for a text column mapping) beside the two tabular columns, on the
  reference sample and the whole window.

Per-column methods, thresholds and verdicts of both are compared where both compute them:
the text column's content drift and the two tabular columns. driftloop's content drift reads
at most ``monitoring.text_drift.MAX_ROWS`` texts a side (a seeded sample), Evidently all of
them, so the AUCs differ a little. Writes docs/bench/text_drift.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import BIN, ROOT, Measured, load_average, machine, measure, write_section

MODEL = "bench-text-drift"
SPEC = ROOT / "examples" / "tickets" / "spec.yaml"
LABELLED_EVERY = 10            # a label for one ticket in ten, as a feedback stream gives

OURS = '''
import json, sys, time
from datetime import UTC, datetime
from pathlib import Path
started = time.perf_counter()
from monitoring.check import Reference, check_frames
from monitoring.job import read_current_file
from registry.bundle import Bundle
reference = Reference.from_bundle(Bundle(Path(sys.argv[1])))
current = read_current_file(Path(sys.argv[2]), reference, since=None, until=None,
                            now=datetime.now(UTC))
read = time.perf_counter()
verdict = check_frames(reference, current, version=1)
done = time.perf_counter()
print(json.dumps({"seconds": done - started, "read": read - started, "check": done - read,
                  "rows": verdict.rows, "status": verdict.status, "share": verdict.drift_share,
                  "drifted": verdict.drifted_columns,
                  "columns": [[c.column, c.method, c.score, c.threshold, c.drifted]
                              for c in verdict.columns],
                  "text": [[t.column, t.method, t.auc, t.threshold, t.drifted, t.ood_share,
                            t.reference_ood_share, t.typical_current]
                           for t in verdict.text_columns],
                  "prediction": None if verdict.prediction_drift is None else
                                verdict.prediction_drift.drifted,
                  "performance": None if verdict.performance is None else
                                 [verdict.performance.metric, verdict.performance.value,
                                  verdict.performance.baseline]}))
'''

PEER = '''
import json, sys, time, warnings
started = time.perf_counter()
import numpy as np, pandas as pd
warnings.simplefilter("ignore", DeprecationWarning)
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.calculations import stattests
from evidently.presets import DataDriftPreset
text, num, cat = (sys.argv[i].split(",") if sys.argv[i] else [] for i in (3, 4, 5))
def prepare(frame):
    out = pd.DataFrame(index=range(len(frame)))
    for c in text:
        out[c] = frame[c].astype(object).where(frame[c].notna(), None).to_numpy()
    for c in num:
        out[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64").to_numpy()
    for c in cat:
        out[c] = frame[c].astype(object).where(frame[c].notna(), None).to_numpy()
    return out
reference = prepare(pd.read_parquet(sys.argv[1]))
current = prepare(pd.read_parquet(sys.argv[2]))
read = time.perf_counter()
definition = DataDefinition(text_columns=text, numerical_columns=num, categorical_columns=cat)
with np.errstate(divide="ignore", invalid="ignore"):
    snapshot = Report([DataDriftPreset(drift_share=float(sys.argv[6]))], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition))
data = snapshot.dict()
ids = {}
for export in stattests.__all__:
    test = getattr(stattests, export)
    if isinstance(test, stattests.StatTest):
        ids[test.display_name] = ids[test.name] = test.name
failed = {t["metric_config"]["params"]["column"]: t["status"] == "FAIL"
          for t in data["tests"] if t.get("id") == "drift"}
columns, share = [], None
for metric in data["metrics"]:
    config = metric["config"]
    if config["type"].endswith("DriftedColumnsCount"):
        share = float(metric["value"]["share"])
    elif config["type"].endswith("ValueDrift"):
        c = config["column"]
        columns.append([c, ids.get(config["method"], config["method"]), float(metric["value"]),
                        float(config["threshold"]), failed[c]])
done = time.perf_counter()
print(json.dumps({"seconds": done - started, "read": read - started, "check": done - read,
                  "rows": len(current), "reference_rows": len(reference), "share": share,
                  "columns": columns}))
'''


def scored_window(model: Any, frame: pd.DataFrame, features: Sequence[str],
                  classes: Sequence[str], label: str, *, chunk: int = 20_000) -> pd.DataFrame:
    """``frame`` as the prediction log has it: the features, the version's top probability
    (``score``), class (``prediction``) and every class's probability (``probabilities``, in
    ``classes`` order), and the label of one row in ``LABELLED_EVERY`` (None elsewhere)."""
    parts = [model.predict_proba(frame[list(features)].iloc[i:i + chunk])
             for i in range(0, len(frame), chunk)]
    proba = np.vstack(parts) if parts else np.empty((0, len(classes)))
    out = frame.reset_index(drop=True).copy()
    out["score"] = proba.max(axis=1)
    out["prediction"] = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    out["probabilities"] = list(proba)
    labels = out[label].astype(object)
    labels[np.arange(len(out)) % LABELLED_EVERY != 0] = None
    out[label] = labels
    return out


def compare(ours: Sequence[Sequence[Any]], theirs: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Per column both computed (``[column, method, score, threshold, drifted]`` rows):
    both methods, scores, thresholds and verdicts, and whether method, threshold and verdict
    are the same."""
    mine = {row[0]: row for row in ours}
    out = []
    for column, method, score, threshold, drifted in theirs:
        if column not in mine:
            continue
        _, m_method, m_score, m_threshold, m_drifted = mine[column]
        out.append({"column": column, "method": m_method, "peer_method": method,
                    "score": float(m_score), "peer_score": float(score),
                    "threshold": float(m_threshold), "peer_threshold": float(threshold),
                    "drifted": bool(m_drifted), "peer_drifted": bool(drifted),
                    "same": (m_method == method and abs(m_threshold - threshold) < 1e-12
                             and bool(m_drifted) == bool(drifted))})
    return out


def _json(run: Measured) -> dict[str, Any]:
    line = next(line for line in run.output.splitlines() if line.startswith("{"))
    return dict(json.loads(line))


@dataclass
class Window:
    """One window checked by both sides: our runs (the median counts), Evidently's run and
    both verdicts, compared column by column."""

    scenario: str
    ours: Measured
    runs: list[Measured]
    verdict: dict[str, Any]
    peer: Measured
    theirs: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return bool(self.rows) and all(r["same"] for r in self.rows) and \
            len(self.rows) == len(self.theirs["columns"])


def check_window(scenario: str, current_file: Path, bundle_dir: Path, spec: Any,
                 runs: int) -> Window:
    """Ours ``runs`` times, then Evidently once, on ``current_file`` against the bundle's
    reference sample."""
    ours_runs = []
    for _ in range(runs):  # ours is short and the machine is noisy: the median counts
        run = measure([sys.executable, "-c", OURS, str(bundle_dir), str(current_file)])
        assert run.returncode == 0, run.output
        ours_runs.append(run)
    ours = sorted(ours_runs, key=lambda r: r.seconds)[len(ours_runs) // 2]
    verdict = _json(ours)
    features = spec.features
    peer = measure([sys.executable, "-c", PEER, str(bundle_dir / "driftloop" /
                                                    "reference.parquet"),
                    str(current_file), ",".join(features.text), ",".join(features.numerical),
                    ",".join(features.categorical), str(spec.drift.drift_share)])
    assert peer.returncode == 0, peer.output
    theirs = _json(peer)
    rows = compare([*verdict["columns"], *(row[:5] for row in verdict["text"])],
                   theirs["columns"])
    return Window(scenario, ours, ours_runs, verdict, peer, theirs, rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_text_drift", description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000, help="tickets in each window")
    parser.add_argument("--train-days", type=int, default=20)
    parser.add_argument("--rows-per-day", type=int, default=1000, help="training tickets a day")
    parser.add_argument("--scenarios", default="slang,none",
                        help="one window of each ticket scenario (the first is also checked "
                        "by the whole drift-check command)")
    parser.add_argument("--runs", type=int, default=3, help="runs of ours (the median counts)")
    args = parser.parse_args(argv)
    from kernel.settings import CommonSettings
    from kernel.spec import load_spec
    from registry import open_registry
    from registry.bundle import Bundle
    from training.generate import DEFAULT_START, Scenario
    from training.generate_tickets import generate
    from training.train import train

    scenarios = [s for s in args.scenarios.split(",") if s]
    load_before = load_average()
    windows: list[Window] = []
    with tempfile.TemporaryDirectory(prefix="bench-text-drift-") as tmp:
        work = Path(tmp)
        home = work / "home"
        history = generate(args.train_days, rows_per_day=args.rows_per_day, seed=3)
        history.to_parquet(work / "history.parquet", index=False)
        spec = load_spec(SPEC).model_copy(update={"model_name": MODEL})
        registry = open_registry(CommonSettings(home=home))
        trained = train(spec, [work / "history.parquet"], registry, alias="champion")
        bundle_dir = registry.download(MODEL, trained.version.version, work / "bundle")
        bundle = Bundle(bundle_dir)
        classes = list(bundle.classes or ())
        reference_rows = len(bundle.reference)
        model = registry.load_model(bundle_dir)
        files = {}
        for i, scenario in enumerate(scenarios):
            window = generate(1, rows_per_day=args.rows, seed=5 + i, scenario=Scenario(scenario),
                              start=DEFAULT_START + timedelta(days=args.train_days))
            files[scenario] = work / f"window-{scenario}.parquet"
            scored_window(model, window, spec.features.all, classes,
                          spec.target).to_parquet(files[scenario], index=False)
        del history, window, model
        whole = measure([str(BIN / "driftloop"), "drift-check", "--model", MODEL, "--current",
                         str(files[scenarios[0]]), "--no-report", "--out", str(work / "out")],
                        env={"DRIFTLOOP_HOME": str(home)})
        assert whole.returncode in (0, 1), whole.output
        whole_verdict = json.loads(next((work / "out").glob("*.json")).read_text())
        loads = [load_average()]
        for scenario in scenarios:
            windows.append(check_window(scenario, files[scenario], bundle_dir, spec, args.runs))
            loads.append(load_average())
    command = ("python -m bench --only text_drift" if not argv
               else f"python -m bench.bench_text_drift {' '.join(argv)}")
    section = report(command, args, spec, reference_rows, windows, whole, whole_verdict,
                     [load_before, *loads])
    print(write_section("text_drift", section))
    for w in windows:
        print(f"{w.scenario}: ours {w.ours.seconds:.1f} s / {w.ours.peak_rss_mib:.0f} MiB, "
              f"Evidently {w.peer.seconds:.1f} s / {w.peer.peak_rss_mib:.0f} MiB; same "
              f"verdicts: {w.same}")
    print(f"whole drift-check: {whole.seconds:.1f} s / {whole.peak_rss_mib:.0f} MiB")
    if not all(w.same for w in windows):
        print("text drift benchmark: a verdict differs from Evidently's (see "
              "docs/bench/text_drift.md)", file=sys.stderr)
    return 0


def _verdict_line(w: Window) -> str:
    v, t = w.verdict, w.theirs
    text = v["text"][0] if v["text"] else None
    ood = (f"OOD share {text[5]:.3f} (reference {text[6]:.3f}), words most typical of the "
           f"window: {', '.join(text[7][:6]) or '-'}"
           if text is not None and text[5] is not None else "no OOD share")
    perf = v["performance"]
    realised = (f"realised {perf[0]} {perf[1]:.3f} on the labelled tickets (validation "
                f"{perf[2]:.3f})" if perf and perf[1] is not None else "no realised metric")
    predicted = {True: "drifted", False: "not drifted", None: "not computed"}[v["prediction"]]
    return (f"- `{w.scenario}`: ours `{v['status']}`, drift share {v['share']:.2f}, drifted "
            f"{', '.join(v['drifted']) or 'none'}; {ood}; class drift on the predicted "
            f"classes {predicted}; {realised}. Evidently: drift share {t['share']:.2f} over "
            f"its {len(t['columns'])} columns.")


def report(command: str, args: argparse.Namespace, spec: Any, reference_rows: int,
           windows: list[Window], whole: Measured, whole_verdict: dict[str, Any],
           loads: list[str]) -> str:
    from monitoring.text_drift import MAX_ROWS
    from training.generate_tickets import SCENARIOS

    first = windows[0]
    rows = first.verdict["rows"]
    described = "; ".join(f"`{w.scenario}`: {SCENARIOS[w.scenario]}" for w in windows)
    timings = []
    for w in windows:
        all_runs = ", ".join(f"{r.seconds:.1f}" for r in w.runs)
        timings += [
            f"| `{w.scenario}` | ours: `Reference.from_bundle` + `read_current_file` + "
            f"`check_frames` | {w.ours.seconds:.1f} s (median of {all_runs}; the check itself "
            f"{w.verdict['check']:.1f} s) | {w.ours.peak_rss_mib:,.0f} MiB |",
            f"| `{w.scenario}` | Evidently `Report([DataDriftPreset()])`, `body` a text column "
            f"| {w.peer.seconds:.1f} s (the report itself {w.theirs['check']:.1f} s) | "
            f"{w.peer.peak_rss_mib:,.0f} MiB |"]
    timings.append(
        f"| `{first.scenario}` | ours, whole: `driftloop drift-check --current FILE "
        f"--no-report` (registry, bundle download, the check, verdict JSON, MLflow run) | "
        f"{whole.seconds:.1f} s | {whole.peak_rss_mib:,.0f} MiB |")
    ratios = [f"`{w.scenario}` **{w.peer.seconds / w.ours.seconds:.1f}x** the wall time, "
              f"{w.peer.peak_rss_mib / w.ours.peak_rss_mib:.2f}x the peak memory"
              for w in windows]
    columns = "\n".join(
        f"| `{w.scenario}` | `{r['column']}` | {r['method']} | {r['score']:.4g} | "
        f"{r['threshold']:.4g} | {'drift' if r['drifted'] else 'no drift'} | "
        f"{r['peer_method']} | {r['peer_score']:.4g} | {r['peer_threshold']:.4g} | "
        f"{'drift' if r['peer_drifted'] else 'no drift'} | {'yes' if r['same'] else 'NO'} |"
        for w in windows for r in w.rows)
    text_auc = "; ".join(f"`{w.scenario}` {r['score']:.4f} (ours) vs {r['peer_score']:.4f}"
                         for w in windows for r in w.rows if r["column"] in spec.features.text)
    same = all(w.same for w in windows)
    text_same = all(r["same"] for w in windows for r in w.rows
                    if r["column"] in spec.features.text)
    whole_drifted = ", ".join(whole_verdict.get("drifted_columns", [])) or "none"
    lines = [
        f"## Drift check on text: {rows:,} logged tickets (issue 16)", "",
        f"`{command}` on {machine()}.", "",
        "A ticket model (the example spec `examples/tickets/spec.yaml`: the `body` text, one "
        "numerical and one categorical column, five classes) trained on "
        f"{args.train_days} days x {args.rows_per_day:,} tickets of `driftloop generate --kind "
        "tickets` (training/generate_tickets.py, scenario none) into a local MLflow registry; "
        f"its reference sample ({reference_rows:,} rows) is the reference of both sides. One "
        f"window of {rows:,} tickets per scenario, one day each ({described}; a scenario's "
        "onset day), scored by the version as the prediction log has them (top probability, "
        f"class, every class's probability), a label for one ticket in {LABELLED_EVERY}, in "
        "one Parquet file.", "",
        "Each side is a fresh process (imports and reading the Parquet files included), timed "
        "with GNU time's peak resident set. Ours reads at most "
        f"{MAX_ROWS:,} texts a side for its content-drift classifier (`MAX_ROWS` in "
        f"monitoring/text_drift.py: here {min(MAX_ROWS, reference_rows):,} reference and "
        f"{min(MAX_ROWS, rows):,} window texts, a seeded sample); Evidently fits its classifier "
        f"on all {reference_rows:,} + {rows:,}. Evidently {metadata.version('evidently')}: the "
        "new API's `Report([DataDriftPreset()])` with `body` a text column of the "
        "`DataDefinition`, so its drift is Evidently's `text_content_drift` (the method the "
        "legacy preset applies to a text column mapping: a TF-IDF + SGD domain classifier, "
        "ROC AUC above 0.55 with more than 1,000 reference rows), beside the two tabular "
        "columns. Ours does more in its process: four descriptor columns of `body` (length, "
        "words, OOV share, non-letter share), the OOD share by the version's profile, class "
        "drift on the predicted classes, data quality and realised macro-F1 on the labelled "
        "tickets. Load average (1, 5, 15 min) of the shared machine (another engineer runs "
        f"tests): {loads[0]} before the run, {loads[1]} before the timed runs, "
        + ", ".join(f"{load} after the `{w.scenario}` window" for w, load in
                    zip(windows, loads[2:], strict=True)) + ".", "",
        "| window | run | wall time | peak memory |",
        "|---|---|---:|---:|",
        *timings, "",
        f"- Evidently against ours (the check): {'; '.join(ratios)}; the whole command on "
        f"`{first.scenario}`: {first.peer.seconds / whole.seconds:.1f}x.",
        *(_verdict_line(w) for w in windows),
        f"- The whole command on `{first.scenario}`: `{whole_verdict['status']}`, drifted "
        f"{whole_drifted}.",
        "- Per column both compute (the text column's content drift, the tabular columns):", "",
        "| window | column | ours: method | score | threshold | verdict | Evidently: method | "
        "score | threshold | verdict | same method, threshold and verdict |",
        "|---|---|---|---:|---:|---|---|---:|---:|---|---|",
        columns, "",
        f"- Methods, thresholds and verdicts identical to Evidently's on every column both "
        f"compute: **{'yes' if same else 'NO'}**; the text column's verdict (drifted or not) "
        f"in every window: **{'yes' if text_same else 'NO'}**. Its ROC AUC differs by the "
        f"sampling above: {text_auc}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
