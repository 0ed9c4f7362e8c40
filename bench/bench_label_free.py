"""The drift check with label-free estimation (CBPE), the domain classifier and prediction drift
by itself (issue 17), against the same check without them, on 1,000,000 rows x 25 columns.

One window of 1,000,000 unlabelled scored rows x 25 features (the drift benchmark's columns:
20 numerical, 5 categorical, 8 of them shifted) against a 50,000-row reference whose
validation slice (20,000 scores with labels) is calibrated as training does
(``kernel.calibration.fit_calibration``). Each configuration runs ``check_frames`` in a fresh
process, timed with its peak memory (GNU time); the window is read from one Parquet file in
every run, so the difference between runs is what the options cost:

1. ``plain``: per-column drift, prediction drift reported, data quality (no calibration);
2. ``+ estimate``: the same with the version's calibration (CBPE: estimated ROC AUC and the
   other metrics, the expected confusion matrix, the band);
3. ``+ estimate + domain classifier``: ``drift.domain_classifier`` at its defaults (5,000
   rows a side, 3 folds; the reference's null AUCs computed in the run, as a first check of
   a version does);
4. ``+ all``: and ``drift.prediction_drift`` (60 resamples of the validation scores).

Verdicts are compared: the per-column results must be identical in every run (scores to 1e-12).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from bench.bench_drift import CATEGORICAL, NUMERICAL, _features, _label
from bench.common import load_average, machine, measure, write_section

RUN = '''
import json, sys, time
import numpy as np, pandas as pd
started = time.perf_counter()
from kernel.calibration import Calibration
from kernel.spec import parse_spec
from monitoring.check import Reference, check_frames
work, name = sys.argv[1], sys.argv[2]
spec = parse_spec(json.loads(open(f"{work}/spec-{name}.json").read()))
calibration = None
if name != "plain":
    calibration = Calibration.from_dict(json.loads(open(f"{work}/calibration.json").read()))
reference = Reference(spec, pd.read_parquet(f"{work}/reference.parquet"),
                      np.load(f"{work}/scores.npy"), {"roc_auc": float(open(f"{work}/auc").read())},
                      calibration)
current = pd.read_parquet(f"{work}/window.parquet")
read = time.perf_counter()
verdict = check_frames(reference, current, version=1)
done = time.perf_counter()
e, m, a = verdict.estimated, verdict.multivariate, verdict.prediction_alarm
print(json.dumps({"seconds": done - started, "read": read - started, "check": done - read,
                  "rows": verdict.rows, "status": verdict.status, "level": verdict.drift_level,
                  "columns": [[c.column, c.method, c.score, c.drifted] for c in verdict.columns],
                  "estimated": None if e is None or e.value is None else [e.value, e.lower, e.upper],
                  "multivariate": None if m is None else [m.auc, m.threshold, m.top_features[:3]],
                  "alarm": None if a is None else [a.value, a.threshold, a.drifted]}))
'''

CONFIGS: dict[str, dict[str, dict[str, object]]] = {
    "plain": {},
    "estimate": {},
    "estimate_domain": {"domain_classifier": {}},
    "all": {"domain_classifier": {}, "prediction_drift": {}},
}
LABELS = {"plain": "plain (no options)", "estimate": "+ estimate (CBPE)",
          "estimate_domain": "+ estimate + domain classifier",
          "all": "+ estimate + domain classifier + prediction drift"}


def same_columns(a: list[list], b: list[list], *, tolerance: float = 1e-12) -> bool:
    """The same columns, methods and judgements, scores equal to ``tolerance`` (a process that
    imported scikit-learn can sum the last bit differently)."""
    return len(a) == len(b) and all(
        x[0] == y[0] and x[1] == y[1] and x[3] == y[3] and abs(x[2] - y[2]) <= tolerance
        for x, y in zip(a, b, strict=True))


def _median(runs: list[dict]) -> dict:
    """The run of median wall time (its other figures with it)."""
    return sorted(runs, key=lambda r: r["wall"])[(len(runs) - 1) // 2]


def _score(frame: pd.DataFrame) -> np.ndarray:
    logit = 0.8 * frame["n00"] - 0.5 * frame["n04"] + 0.3 * (frame["c0"] == "v0") - 0.5
    return 1 / (1 + np.exp(-logit.to_numpy()))


def _prepare(work: Path, rows: int) -> float:
    from kernel.calibration import fit_calibration
    from kernel.metrics import metric_value

    rng = np.random.default_rng(17)
    _features(rng, 50_000, shift=False).to_parquet(work / "reference.parquet", index=False)
    validation = _features(rng, 20_000, shift=False)
    scores = _score(validation)
    y = _label(rng, validation)
    np.save(work / "scores.npy", scores)
    auc = metric_value("roc_auc", y, scores)
    (work / "auc").write_text(str(auc))
    (work / "calibration.json").write_text(json.dumps(
        fit_calibration(y, scores, metrics=["roc_auc"]).to_dict()))
    window = _features(rng, rows, shift=True)
    window["score"] = _score(window)
    window.to_parquet(work / "window.parquet", index=False)
    base = {"model_name": "bench-label-free", "target": "y", "timestamp_column": "ts",
            "features": {"numerical": NUMERICAL, "categorical": CATEGORICAL},
            "reference_rows": 50_000}
    for name, drift in CONFIGS.items():
        (work / f"spec-{name}.json").write_text(json.dumps({**base, "drift": drift}))
    return auc


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench --only label_free",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the "
                        "median run of each configuration is reported")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-label-free-") as tmp:
        work = Path(tmp)
        auc = _prepare(work, args.rows)
        load = load_average()
        runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
        for round_ in range(args.repeats):   # interleaved: a slow spell hits every config
            for name in CONFIGS:
                run = measure([sys.executable, "-c", RUN, str(work), name])
                if run.returncode != 0:
                    print(run.output[-3000:], file=sys.stderr)
                    return 1
                out = json.loads(next(line for line in run.output.splitlines()
                                      if line.startswith("{")))
                out["wall"], out["peak"] = run.seconds, run.peak_rss_mib
                runs[name].append(out)
                print(f"round {round_ + 1} {name}: {run.seconds:.1f} s, "
                      f"{run.peak_rss_mib:.0f} MiB", flush=True)
        results = {name: _median(r) for name, r in runs.items()}
    same = all(same_columns(r["columns"], results["plain"]["columns"]) for r in results.values())
    plain = results["plain"]
    rows = "\n".join(
        f"| {LABELS[n]} | {r['wall']:.1f} s | {r['check']:.1f} s | {r['peak']:,.0f} MiB | "
        f"{r['wall'] / plain['wall']:.2f}x | {r['peak'] / plain['peak']:.2f}x |"
        for n, r in results.items())
    full = results["all"]
    est, multi, alarm = full["estimated"], full["multivariate"], full["alarm"]
    text = f"""## Drift check with label-free estimates and the domain classifier (issue 17)

<!-- written by bench/bench_label_free.py -->
`python -m bench --only label_free` ({machine()}; load average before the runs {load}).
A window of {plain['rows']:,} unlabelled scored rows x 25 features (20 numerical, 5
categorical, 8 shifted) against a 50,000-row reference with a calibrated 20,000-row
validation slice (validation ROC AUC {auc:.4f}); each row is a fresh process running
`check_frames` (reading the window from one Parquet file included), timed with its peak memory
by GNU time, in {args.repeats} interleaved rounds; each row is the configuration's median run.
The ratio columns compare each with the plain check of the same run.

| check | wall | of it the check | peak memory | time vs plain | memory vs plain |
|---|---:|---:|---:|---:|---:|
{rows}

Per-column results identical in every run (scores to 1e-12): {"yes" if same else "NO"}. Status of the full
check: `{full['status']}` (level `{full['level']}`). The estimate: ROC AUC
{est[0]:.4f}, band [{est[1]:.4f}, {est[2]:.4f}]. The domain classifier: AUC {multi[0]:.3f}
against a threshold of {multi[1]:.3f}, most separating {", ".join(multi[2])}. Prediction drift
by itself: normed Wasserstein {alarm[0]:.4f} against {alarm[1]:.4f}
({"drifted" if alarm[2] else "not drifted"}). The domain classifier's reference-vs-reference
threshold is computed in the run (a version's first check; later checks of the same process
reuse it).
"""
    print(f"wrote {write_section('label_free', text)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
