"""The HTML report of a check matches its verdict: the verdict and its reasons first, then
realised performance with the baseline, data quality, prediction drift, and Evidently's
data-drift panels (real MLflow sqlite, real Evidently)."""

from __future__ import annotations

import json
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from driftloop.cli import main
from kernel.settings import CommonSettings
from kernel.spec import DatasetSpec
from monitoring.predlog import LogStore
from monitoring.report_page import SECTIONS
from registry import open_registry
from tests.integration.test_drift_check import log_day
from training.generate import DEFAULT_START, Scenario, generate
from training.train import train

DAY = DEFAULT_START + timedelta(days=5)


class _Sections(HTMLParser):
    """The driftloop sections in page order, the status text, and where Evidently starts."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []
        self.text: dict[str, str] = {}
        self.status = ""
        self._in: str | None = None
        self._status = False
        self.evidently_after: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        marks = dict(attrs).get("data-driftloop")
        if tag == "section" and marks:
            self.order.append(marks)
            self._in = marks
        elif marks == "status":
            self._status = True
        elif tag == "script" and self.evidently_after is None and self.order:
            self.evidently_after = list(self.order)

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._in = None
        self._status = False

    def handle_data(self, data: str) -> None:
        if self._in:
            self.text[self._in] = self.text.get(self._in, "") + data
        if self._status:
            self.status += data


def test_a_degraded_days_report_shows_the_verdict_first(
        unique_model_spec: DatasetSpec, settings: CommonSettings, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    spec = unique_model_spec
    data = generate(6, scenario=Scenario("unit_bug", 5), rows_per_day=500, seed=4)
    path = tmp_path / "data.parquet"
    data.to_parquet(path, index=False)
    registry = open_registry(settings)
    version = train(spec, [path], registry, until=DAY, alias="champion").version.version
    model = registry.load_model(registry.download(spec.model_name, version, tmp_path / "b"))
    log_day(LogStore(settings.resolved_log_uri), spec, model, data[data.ts >= pd.Timestamp(DAY)],
            version)

    code = main(["drift-check", "--model", spec.model_name, "--since", DAY.isoformat(),
                 "--until", (DAY + timedelta(days=1)).isoformat()])
    capsys.readouterr()
    files = sorted((settings.reports_dir / spec.model_name).glob("verdict-*"))
    verdict = json.loads(files[1].read_text())
    assert code == 1 and verdict["status"] == "degraded"
    page = _Sections()
    page.feed(files[0].read_text())

    assert page.order == list(SECTIONS)
    assert page.status == verdict["status"]
    for reason in verdict["reasons"]:
        assert reason in page.text["verdict"]
    performance = verdict["performance"]
    assert performance["metric"] in page.text["performance"]
    assert f"{performance['value']:.4f}" in page.text["performance"]
    assert f"{performance['baseline']:.4f}" in page.text["performance"]
    assert "degraded" in page.text["performance"]
    for quality in verdict["data_quality"]:
        assert quality["column"] in page.text["data-quality"]
    if verdict["prediction_drift"] is not None:
        assert f"{verdict['prediction_drift']['score']:.4f}" in page.text["prediction-drift"]
    for column in verdict["drifted_columns"]:
        assert column in page.text["data-drift"]
    # Evidently's panels (its scripts) come after every driftloop section.
    assert page.evidently_after == list(SECTIONS)
