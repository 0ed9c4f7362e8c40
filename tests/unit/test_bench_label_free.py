"""The label-free benchmark's set-up and per-run script on a small window (no timing):
every configuration's spec parses with the options it names, and the full run reports the
estimate, the domain classifier and prediction drift with the plain run's column results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.bench_label_free import CONFIGS, RUN, _prepare, same_columns
from kernel.spec import parse_spec


def test_each_configuration_runs_and_only_adds_its_options(tmp_path: Path) -> None:
    auc = _prepare(tmp_path, 3000)
    assert 0.6 < auc < 0.9
    specs = {n: parse_spec(json.loads((tmp_path / f"spec-{n}.json").read_text())) for n in CONFIGS}
    assert specs["plain"].drift.domain_classifier is None
    assert specs["all"].drift.domain_classifier is not None
    assert specs["all"].drift.prediction_drift is not None
    out = {}
    for name in ("plain", "all"):
        run = subprocess.run([sys.executable, "-c", RUN, str(tmp_path), name], check=True,
                             capture_output=True, text=True)
        out[name] = json.loads(run.stdout.splitlines()[-1])
    assert out["plain"]["estimated"] is None and out["plain"]["multivariate"] is None
    assert same_columns(out["all"]["columns"], out["plain"]["columns"])
    assert out["all"]["rows"] == 3000
    moved = [[c, m, s + 1e-9, d] for c, m, s, d in out["plain"]["columns"]]
    assert not same_columns(moved, out["plain"]["columns"])
    low, value, high = out["all"]["estimated"][1], out["all"]["estimated"][0], \
        out["all"]["estimated"][2]
    assert low <= value <= high
    assert out["all"]["multivariate"][0] > out["all"]["multivariate"][1]   # 8 columns shifted
    assert isinstance(out["all"]["alarm"][2], bool)
