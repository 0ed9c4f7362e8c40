"""`driftloop generate` and `driftloop train` as a user runs them, on a real sqlite store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop.cli import main
from kernel.settings import CommonSettings
from registry import open_registry
from tests.conftest import CHURN_SPEC


def run(*args: str) -> int:
    return main(list(args))


@pytest.fixture
def data_file(home: Path, tmp_path: Path) -> Path:
    out = tmp_path / "churn.parquet"
    assert run("generate", "--days", "4", "--rows-per-day", "500", "--out", str(out)) == 0
    return out


def test_generate_then_train_bootstraps_champion_and_then_leaves_it(data_file, capsys):
    assert run("train", "--spec", str(CHURN_SPEC), "--data", str(data_file),
               "--alias", "champion", "--tag", "trigger=bootstrap") == 0
    assert "registered churn version 1" in capsys.readouterr().out
    assert run("train", "--spec", str(CHURN_SPEC), "--data", str(data_file)) == 0
    registry = open_registry(CommonSettings())
    assert registry.aliases("churn") == {"champion": 1}
    v1 = registry.get_version("churn", 1)
    assert v1.tags["driftloop.trigger"] == "bootstrap"
    assert v1.tags["driftloop.metric"] == "roc_auc"
    assert float(v1.tags["driftloop.validation_roc_auc"]) > 0.7
    assert registry.get_version("churn", 2).tags["driftloop.data_hash"] == v1.tags[
        "driftloop.data_hash"]


def test_several_inputs_and_a_window(data_file, tmp_path, capsys):
    extra = tmp_path / "extra.csv"
    frame = pd.read_parquet(data_file)
    frame.tail(300).assign(customer_id=lambda f: "x" + f["customer_id"]).to_csv(extra, index=False)
    assert run("train", "--spec", str(CHURN_SPEC), "--data", str(data_file), "--data", str(extra),
               "--since", "2026-01-02", "--until", "2026-01-04T12:00:00") == 0
    out = capsys.readouterr().out
    # days 2 and 3 (1000 rows) plus the half day of day 4 (~250) and none of the extra rows' ids
    rows = int(out.split(" rows")[0].rsplit(", ", 1)[1])
    assert 1100 < rows < 1500


def _train_expecting_error(spec: Path, data: Path, capsys) -> str:
    code = run("train", "--spec", str(spec), "--data", str(data), "--alias", "champion")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err
    return err


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda f: f.drop(columns=["support_tickets"]), "missing columns ['support_tickets']"),
        (lambda f: f.assign(churned=0), "one class only"),
        (lambda f: f.assign(tenure_months=f["tenure_months"].astype(str).where(
            f.index % 50 != 0, "lots")), "non-numeric"),
        (lambda f: f.assign(ts="not a time"), "unparseable 'ts'"),
    ],
)
def test_bad_data_is_one_line_and_registers_nothing(data_file, tmp_path, capsys, mutate, expected):
    bad = tmp_path / "bad.csv"
    mutate(pd.read_parquet(data_file)).to_csv(bad, index=False)
    assert expected in _train_expecting_error(CHURN_SPEC, bad, capsys)
    registry = open_registry(CommonSettings())
    assert registry.aliases("churn") == {}
    assert registry.find_versions("churn", {}) == []


def test_empty_window_and_missing_file(data_file, tmp_path, capsys):
    code = run("train", "--spec", str(CHURN_SPEC), "--data", str(data_file), "--since", "2030-01-01")
    assert code == 2 and "no rows in the window" in capsys.readouterr().err
    assert "data file not found" in _train_expecting_error(CHURN_SPEC, tmp_path / "no.csv", capsys)


def test_wrong_spec_is_one_line_exit_2(data_file, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(CHURN_SPEC.read_text().replace("metric: roc_auc", "metric: mape"))
    err = _train_expecting_error(spec, data_file, capsys)
    assert "metric" in err and "roc_auc" in err


def test_console_script_exit_codes(home, tmp_path):
    """The installed entry point, in a fresh process: help, and a bad spec's exit code."""
    exe = Path(sys.executable).parent / "driftloop"
    shown = subprocess.run([exe, "train", "--help"], capture_output=True, text=True, check=True)
    assert "--spec" in shown.stdout and "--alias" in shown.stdout
    spec = tmp_path / "s.yaml"
    spec.write_text("model_name: x\n")
    failed = subprocess.run([exe, "train", "--spec", spec, "--data", spec],
                            capture_output=True, text=True)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [f"error: {spec}: target: Field required "
                                                  "(and 2 more)"]


@pytest.mark.parametrize("argv", [["generate", "--days", "0", "--out", "x.csv"],
                                  ["train", "--spec"], ["no-such-command"]])
def test_usage_errors_are_short_and_exit_2(argv, capsys):
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_train_records_where_its_data_came_from(data_file, monkeypatch):
    monkeypatch.chdir(data_file.parent)  # a relative --data is recorded as an absolute path
    assert run("train", "--spec", str(CHURN_SPEC), "--data", data_file.name,
               "--since", "2026-01-02") == 0
    tags = open_registry(CommonSettings()).get_version("churn", 1).tags
    assert json.loads(tags["driftloop.data_sources"]) == [str(data_file.resolve())]
    assert tags["driftloop.data_since"] == "2026-01-02T00:00:00+00:00"
    assert "driftloop.data_until" not in tags
    assert tags["driftloop.train_rows_recent"] == "0"
    assert tags["driftloop.train_rows_history"] == tags["driftloop.train_rows"]
    assert tags["driftloop.reference"] == "window" and tags["driftloop.useless"] == "false"


@pytest.mark.parametrize(("shuffle", "floor", "expected"), [
    (True, None, "is at chance level (<= 0.55)"),
    (False, 0.99, "is worse than min_validation_metric 0.99"),
])
def test_a_useless_model_is_warned_in_one_line_and_tagged(data_file, tmp_path, capsys, shuffle,
                                                          floor, expected):
    data, spec = data_file, CHURN_SPEC
    if shuffle:
        frame = pd.read_parquet(data_file)
        frame["churned"] = np.random.default_rng(0).permutation(frame["churned"].to_numpy())
        data = tmp_path / "shuffled.parquet"
        frame.to_parquet(data, index=False)
    if floor is not None:
        spec = tmp_path / "spec.yaml"
        spec.write_text(CHURN_SPEC.read_text() + f"min_validation_metric: {floor}\n")
    assert run("train", "--spec", str(spec), "--data", str(data)) == 0
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("warning: churn version 1 is useless: ") and expected in line
    tags = open_registry(CommonSettings()).get_version("churn", 1).tags
    assert tags["driftloop.useless"] == "true" and expected in tags["driftloop.useless_reason"]
