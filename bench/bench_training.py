"""Training on 100k demo rows including MLflow logging and registration: wall time and peak
memory, `driftloop train` side by side with the plain MLflow way of doing the same
(`mlflow.sklearn.log_model(..., registered_model_name=...)` with MLflow's defaults: skops
format, pip requirements inferred)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.common import BIN, ROOT, machine, measure, write_section

PEER = '''
import sys, time, mlflow, mlflow.sklearn, pandas as pd
from kernel.spec import load_spec
from training.data import load_frames
from training.train import split, fit
spec = load_spec(sys.argv[1]); data = load_frames([sys.argv[2]], spec)
parts = split(data, spec); model = fit(parts, spec).model
mlflow.set_tracking_uri(sys.argv[3]); mlflow.set_experiment("peer")
with mlflow.start_run():
    x = parts.train[spec.features.all].head(5)
    mlflow.sklearn.log_model(model, name="model", input_example=x, registered_model_name="peer",
        skops_trusted_types=["numpy.dtype"])
'''


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_training", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    spec = ROOT / "examples" / "churn" / "spec.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        days = max(1, args.rows // 5000)
        data = work / "churn.parquet"
        gen = measure([str(BIN / "driftloop"), "generate", "--days", str(days), "--rows-per-day",
                       str(args.rows // days), "--out", str(data)])
        assert gen.returncode == 0, gen.output
        env = {"DRIFTLOOP_HOME": str(work / "home")}
        ours = measure([str(BIN / "driftloop"), "train", "--spec", str(spec), "--data", str(data),
                        "--alias", "champion"], env=env)
        assert ours.returncode == 0, ours.output
        peer = measure([sys.executable, "-c", PEER, str(spec), str(data),
                        f"sqlite:///{work / 'peer.db'}"], cwd=work)
        assert peer.returncode == 0, peer.output
    command = f"python -m bench --only training  # rows={args.rows}"
    text = f"""## Training (issue 2)

`{command}` on {machine()}.

Fit a logistic-regression pipeline on {args.rows:,} demo rows, evaluate on the time-ordered
validation slice, log the run with the model, its signature, the reference sample and the
validation scores, and register a version. Each command runs in a fresh process (imports
included); peak memory is the resident set of the process and its children (GNU time).

| command | wall time | peak memory |
|---|---:|---:|
| `driftloop train --alias champion` | {ours.seconds:.1f} s | {ours.peak_rss_mib:.0f} MiB |
| plain `mlflow.sklearn.log_model(registered_model_name=...)` (MLflow defaults) | {peer.seconds:.1f} s | {peer.peak_rss_mib:.0f} MiB |

Ratio (plain MLflow / driftloop): {peer.seconds / ours.seconds:.2f}x the wall time. The plain
way spends seconds inferring pip requirements in a subprocess; driftloop pins them explicitly
(training/train.py `pip_requirements`) and saves with cloudpickle.
"""
    print(write_section("training", text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
