"""The report page shows the estimate beside realised performance, the multivariate result,
prediction drift against its own threshold and each segment (monitoring/report_page.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from kernel.spec import load_spec, parse_spec
from monitoring.check import Reference, check_frames
from monitoring.report_page import SECTIONS, verdict_header
from tests.conftest import CHURN_SPEC
from training.generate import Scenario, generate

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _spec(**drift: object):  # noqa: ANN202
    data = load_spec(CHURN_SPEC).model_dump(exclude={"source"})
    data["drift"] = {**data["drift"], **drift}
    return parse_spec(data)


def _section(html: str, name: str) -> str:
    start = html.index(f'data-driftloop="{name}"')
    return html[start: html.index("</section>", start)]


def test_every_section_in_order_and_the_new_results_in_theirs() -> None:
    spec = _spec(segments={"by": "weekend"}, prediction_drift={},
                 domain_classifier={"sample_rows": 400, "folds": 2})
    history = generate(14, scenario=Scenario("weekend", 0), rows_per_day=300, seed=3)
    rng = np.random.default_rng(0)
    reference = Reference(spec, history[[*spec.features.all, "ts"]].reset_index(drop=True),
                          validation_scores=rng.beta(2, 5, 2000), metrics={"roc_auc": 0.8})
    window = generate(17, scenario=Scenario("covariate", 16), rows_per_day=600, seed=5)
    window = window[window["ts"] >= pd.Timestamp("2026-01-17", tz="UTC")].copy()  # a Saturday
    window["score"] = rng.beta(3, 5, len(window))
    verdict = check_frames(reference, window, now=NOW)
    html = verdict_header(verdict)
    assert [html.index(f'data-driftloop="{s}"') for s in SECTIONS] == sorted(
        html.index(f'data-driftloop="{s}"') for s in SECTIONS)
    assert verdict.multivariate is not None and verdict.prediction_alarm is not None
    multivariate = _section(html, "multivariate")
    assert f"{verdict.multivariate.auc:.4f}" in multivariate
    assert verdict.multivariate.top_features[0] in multivariate
    prediction = _section(html, "prediction-drift")
    assert f"{verdict.prediction_alarm.threshold:.4f}" in prediction
    assert ("drifted: ticket" if verdict.prediction_alarm.drifted else "not drifted") in prediction
    drift = _section(html, "data-drift")
    assert "Segments by weekend" in drift
    (segment,) = verdict.segments
    assert segment.segment == "weekend" and f"{segment.drift_share:.2f}" in drift


def test_without_the_options_the_sections_say_what_is_off() -> None:
    spec = _spec()
    history = generate(3, rows_per_day=400, seed=1)
    verdict = check_frames(Reference(spec, history[spec.features.all]), history, now=NOW)
    html = verdict_header(verdict)
    assert "drift.domain_classifier is not set" in _section(html, "multivariate")
    assert "Segments" not in _section(html, "data-drift")
