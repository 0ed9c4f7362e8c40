"""The fast path against Evidently itself: same methods, scores and verdicts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring import stats
from monitoring.drift import column_drift, evidently_drift, render_report

NUMERICAL = ["x", "ints", "few", "two", "wide"]
CATEGORICAL = ["c", "b2"]


def _frame(rng: np.random.Generator, n: int, shift: float = 0.0, new_category: bool = False,
           nan: float = 0.0) -> pd.DataFrame:
    cats = ["a", "b", "c", "d", "e"] if new_category else ["a", "b", "c", "d"]
    frame = pd.DataFrame({
        "x": rng.normal(shift, 1, n), "ints": rng.poisson(1.2 + shift, n).astype(float),
        "few": rng.choice([0.0, 1.0, 2.0], n), "two": rng.choice([0.0, 1.0], n),
        "wide": rng.exponential(10, n).round(1),
        "c": rng.choice(cats, n), "b2": rng.choice(["y", "n"], n)})
    if nan:
        frame.loc[rng.random(n) < nan, ["x", "c"]] = None
    return frame


def _fast(reference: pd.DataFrame, current: pd.DataFrame, overrides: dict[str, str]
          ) -> list[stats.ColumnResult]:
    out = []
    for col in NUMERICAL + CATEGORICAL:
        kind = "categorical" if col in CATEGORICAL else "numerical"
        out.append(stats.column_drift(col, stats.sample_of(reference[col], kind),
                                      stats.sample_of(current[col], kind), kind,
                                      method=overrides.get(col)))
    return out


CASES = [  # reference rows, current rows, shift, new category, NaN share, overrides
    (800, 300, 0.0, False, 0.0, {}),                     # small: ks / chisquare / z
    (800, 500, 0.4, True, 0.1, {}),
    (5000, 2000, 0.0, False, 0.0, {}),                   # large: wasserstein / jensenshannon
    (5000, 3000, 0.3, True, 0.1, {}),
    (3000, 700, 0.2, True, 0.0, {"x": "ks", "c": "chisquare", "wide": "jensenshannon"}),
    (900, 900, 0.1, False, 0.05, {"x": "wasserstein", "wide": "jensenshannon"}),
]


@pytest.mark.parametrize(("n_ref", "n_cur", "shift", "new", "nan", "overrides"), CASES)
def test_fast_statistics_equal_evidently(n_ref: int, n_cur: int, shift: float, new: bool,
                                         nan: float, overrides: dict[str, str]) -> None:
    rng = np.random.default_rng(n_ref + n_cur)
    reference, current = _frame(rng, n_ref), _frame(rng, n_cur, shift, new, nan)
    theirs = evidently_drift(reference, current, numerical=NUMERICAL, categorical=CATEGORICAL,
                             drift_share=0.3, per_column_method=overrides)
    ours = _fast(reference, current, overrides)
    assert [(r.column, r.method, r.threshold, r.drifted) for r in ours] == [
        (r.column, r.method, r.threshold, r.drifted) for r in theirs.columns]
    for mine, evidently in zip(ours, theirs.columns, strict=True):
        assert mine.score == pytest.approx(evidently.score, rel=1e-12, abs=1e-300), mine.column
    assert stats.drift_share(ours) == pytest.approx(theirs.share)
    assert sum(r.drifted for r in ours) == theirs.drifted_count


def test_methods_the_fast_path_lacks_go_through_evidently() -> None:
    rng = np.random.default_rng(3)
    reference, current = _frame(rng, 2000), _frame(rng, 800, shift=0.5)
    with pytest.raises(stats.UnsupportedMethod):
        stats.column_drift("x", stats.sample_of(reference["x"], "numerical"),
                           stats.sample_of(current["x"], "numerical"), "numerical",
                           method="kl_div")
    result = column_drift("x", reference["x"], current["x"], "numerical", method="kl_div",
                          threshold=None)
    theirs = evidently_drift(reference, current, numerical=["x"], categorical=[],
                             per_column_method={"x": "kl_div"}).columns[0]
    assert (result.method, result.score, result.threshold, result.drifted) == (
        "kl_div", pytest.approx(theirs.score), theirs.threshold, theirs.drifted)
    assert result.drifted


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_fast_psi_is_evidentlys_psi(shift: float) -> None:
    """Numerical (Sturges bins of both sides), categorical with a category only one side has
    and a few-valued numerical column with a value only one side has (Evidently's filling of
    empty bins)."""
    rng = np.random.default_rng(8)
    reference, current = _frame(rng, 2000), _frame(rng, 900, shift=shift)
    current.loc[current.index[:40], "c"] = "new"
    current["few"] = rng.integers(0, 4, len(current)).astype(float)   # 3.0: reference has none
    theirs = evidently_drift(reference, current, numerical=NUMERICAL, categorical=CATEGORICAL,
                             per_column_method={c: "psi" for c in NUMERICAL + CATEGORICAL})
    for col in theirs.columns:
        kind = "categorical" if col.column in CATEGORICAL else "numerical"
        ours = stats.column_drift(col.column, stats.sample_of(reference[col.column], kind),
                                  stats.sample_of(current[col.column], kind), kind, method="psi")
        assert (ours.method, ours.threshold, ours.drifted) == ("psi", col.threshold, col.drifted)
        assert ours.score == pytest.approx(col.score, rel=1e-9), col.column


def test_report_names_drifted_columns_and_says_when_sampled(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    reference, current = _frame(rng, 3000), _frame(rng, 3000, shift=1.0)
    path = tmp_path / "report.html"
    sampled = render_report(reference, current, path, numerical=NUMERICAL,
                            categorical=CATEGORICAL, drift_share=0.3,
                            reference_scores=rng.random(2000), current_scores=rng.random(3000),
                            max_rows=1000)
    html = path.read_text()
    assert sampled == 1000
    assert "random sample of at most 1000 rows" in html
    assert "wide" in html and "ints" in html


def _page_text(browser: str, page: Path) -> str:
    """The text a person sees: the page after its scripts ran, in headless Chromium."""
    import html
    import re
    import subprocess

    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                          "--virtual-time-budget=30000",
                          "--dump-dom", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=180, check=True).stdout
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


def test_report_opened_in_a_browser_shows_the_drifted_columns(tmp_path: Path) -> None:
    import shutil

    from tests.conftest import require_binary

    # Debian's headless shell (.ci/ensure-binaries installs it), or a full Chrome/Chromium.
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                   "google-chrome"))), None) \
        or require_binary("chromium-headless-shell", "chromium-headless-shell")
    rng = np.random.default_rng(4)
    reference, current = _frame(rng, 3000), _frame(rng, 3000, shift=1.0)
    verdicts = {r.column: r.drifted for r in _fast(reference, current, {})}
    assert any(verdicts.values()) and not all(verdicts.values())  # both kinds on the page
    path = tmp_path / "report.html"
    render_report(reference, current, path, numerical=NUMERICAL, categorical=CATEGORICAL,
                  drift_share=0.3, reference_scores=rng.random(2000),
                  current_scores=rng.random(3000), max_rows=5000)
    text = _page_text(browser, path)
    raw = re.sub(r"\s+", " ", path.read_text())
    for column, drifted in verdicts.items():
        said = "Data drift detected." if drifted else "Data drift not detected."
        assert f"Drift in column '{column}' {said}" in text, column
        # The file is a script bundle with JSON inside: the title and its sentence meet only
        # on the rendered page, so this checks what the browser shows, not the file's text.
        assert f"Drift in column '{column}' {said}" not in raw
    assert f"Count of Drifted Columns: count {float(sum(verdicts.values()))}" in text
    assert "Drift in column 'score'" in text


def test_every_method_a_spec_may_name_is_in_evidentlys_public_stat_tests() -> None:
    from typing import get_args

    from kernel.spec import ColumnDriftSettings, DriftMethod
    from monitoring.drift import _method_ids

    ids = _method_ids()
    # "energy_distance" is the spec's alias of Evidently's "ed" (ColumnDriftSettings maps it)
    assert set(get_args(DriftMethod)) - set(ids.values()) == {"energy_distance"}
    assert ColumnDriftSettings(method="energy_distance").method == "ed"
    assert ids["K-S p_value"] == "ks" and ids["PSI"] == "psi"
