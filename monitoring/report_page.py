"""The verdict on the report's own page, above Evidently's data-drift panels.

Evidently renders what it measured (per-column drift); the verdict is driftloop's. A reader
opening the HTML of a "degraded" day must see that first: the verdict and its reasons, then
realised performance against the version's baseline (and the label-free estimate), data
quality, prediction drift, the multivariate (domain-classifier) result, and only then the
data-drift panels (with each segment's result when the spec segments windows). Each section
is a ``<section data-driftloop="...">`` so a test (or a script) can find it.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from monitoring.verdict import Verdict

SECTIONS = ("verdict", "performance", "data-quality", "prediction-drift", "multivariate",
            "data-drift")

_COLOURS = {"ok": "#d1e7dd", "insufficient_data": "#e2e3e5", "drift": "#fff3cd",
            "degraded": "#f8d7da", "estimated_degraded": "#ffe5d0"}
_STYLE = ("font-family:sans-serif;padding:8px 16px;margin:0;border-bottom:1px solid #ccc")


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th style='text-align:left;padding:2px 12px'>{escape(h)}</th>"
                    for h in head)
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 12px'>{escape(c)}</td>"
                                    for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _section(name: str, title: str, body: str, colour: str = "#fff") -> str:
    return (f'<section data-driftloop="{name}" style="{_STYLE};background:{colour}">'
            f"<h2>{escape(title)}</h2>{body}</section>")


def _verdict(v: Verdict) -> str:
    reasons = "".join(f"<li>{escape(r)}</li>" for r in v.reasons) or "<li>no finding</li>"
    body = (f'<p>driftloop verdict for {escape(v.model)} v{v.version}: <strong '
            f'data-driftloop="status">{escape(v.status)}</strong> ({v.rows} rows, '
            f"{v.labelled_rows} labelled; window {v.window_start.isoformat()} to "
            f"{v.window_end.isoformat()}; {escape(v.engine)} engine)</p><ul>{reasons}</ul>")
    return _section("verdict", "Verdict", body, _COLOURS.get(v.status, "#fff"))


def _estimated(v: Verdict) -> str:
    e = v.estimated
    if e is None:
        return ""
    if e.value is None:
        return f"<h3>Estimated (no labels)</h3><p>{escape(e.note or 'no estimate')}</p>"
    judgement = ("reported (realised decides)" if e.superseded
                 else f"degraded ({e.action})" if e.degraded else "within tolerance")
    rows = [[e.metric, _num(e.value), f"[{_num(e.lower)}, {_num(e.upper)}]", _num(e.baseline),
             str(e.rows), judgement]]
    others = ", ".join(f"{k} {val:.4f}" for k, val in e.metrics.items() if k != e.metric)
    return ("<h3>Estimated from the scores (CBPE, no labels)</h3>"
            + _table(["metric", "estimated", f"band (+/-{e.band_sigmas:g} sampling errors)",
                      "baseline (validation)", "scored rows", "judgement"], rows)
            + (f"<p>also estimated: {escape(others)}</p>" if others else ""))


def _performance(v: Verdict) -> str:
    p = v.performance
    if p is None:
        return _section("performance", "Performance",
                        "<p>no labels in the window: realised performance not measured</p>"
                        + _estimated(v))
    direction = "lower is better" if p.lower_is_better else "higher is better"
    rows = [[p.metric, _num(p.value), _num(p.baseline), _num(p.tolerance),
             str(p.labelled_rows), "degraded" if p.degraded else "within tolerance"]]
    body = (_table(["metric", "realised", "baseline (validation)", "tolerance", "labelled rows",
                    "judgement"], rows) + f"<p>{direction}</p>" + _estimated(v))
    return _section("performance", "Performance", body)


def _quality(v: Verdict) -> str:
    if not v.data_quality:
        return _section("data-quality", "Data quality", "<p>no data-quality findings</p>")
    rows = [[q.column, _num(q.missing_share, 3), _num(q.reference_missing_share, 3),
             _num(q.out_of_range_share, 3), ", ".join(q.unseen_categories) or "-",
             "flagged" if q.flagged else "-"] for q in v.data_quality]
    return _section("data-quality", "Data quality", _table(
        ["column", "missing", "missing (reference)", "out of range", "unseen categories",
         "flag"], rows))


def _prediction(v: Verdict) -> str:
    d = v.prediction_drift
    if d is None:
        return _section("prediction-drift", "Prediction drift",
                        "<p>no prediction-drift reference for this version</p>")
    rows = [[d.column, d.method, _num(d.score), _num(d.threshold),
             "drifted" if d.drifted else "not drifted"]]
    body = _table(["column", "method", "score", "threshold", "judgement"], rows)
    a = v.prediction_alarm
    if a is not None:
        body += ("<h3>Against its own threshold (drift.prediction_drift)</h3>" + _table(
            ["statistic", "value", "threshold", "validation resamples", "rows", "judgement"],
            [[a.statistic, _num(a.value), _num(a.threshold),
              f"{_num(a.null_mean)} + {a.sigmas:g} x {_num(a.null_std)}", str(a.rows),
              f"drifted: {a.level}" if a.drifted else "not drifted"]]))
    else:
        body += "<p>reported only: drift.prediction_drift is not set</p>"
    return _section("prediction-drift", "Prediction drift", body)


def _multivariate(v: Verdict) -> str:
    m = v.multivariate
    if m is None:
        return _section("multivariate", "Multivariate drift",
                        "<p>not run: drift.domain_classifier is not set (or too few rows)</p>")
    rows = [[m.method, _num(m.auc), _num(m.threshold),
             f"{_num(m.null_auc_mean)} +/- {_num(m.null_auc_std)}", str(m.rows_per_side),
             "drifted" if m.drifted else "not drifted"]]
    top = ", ".join(f"{name} ({drop:+.3f})" for name, drop in zip(m.top_features, m.auc_drops,
                                                                   strict=False))
    return _section("multivariate", "Multivariate drift", _table(
        ["method", "ROC AUC", "threshold", "reference vs reference", "rows a side",
         "judgement"], rows) + f"<p>most separating (AUC lost when permuted): "
        f"{escape(top or '-')}</p>")


def _data_drift(v: Verdict) -> str:
    share = "n/a" if v.drift_share is None else f"{v.drift_share:.2f}"
    drifted = ", ".join(v.drifted_columns) or "none"
    body = (f"<p>drift share {share} (dataset drift at {v.drift_share_threshold:.2f}); drifted "
            f"columns: {escape(drifted)}. Evidently's per-column panels follow.</p>")
    if v.segmented_by is not None and v.segments:
        rows = [[s.segment, str(s.rows), str(s.reference_rows),
                 "skipped" if s.drift_share is None else f"{s.drift_share:.2f}",
                 s.skipped or (s.level or "-"), ", ".join(s.drifted_columns) or "-"]
                for s in v.segments]
        body += (f"<h3>Segments by {escape(v.segmented_by)} (each against its own "
                 "reference; the largest share speaks)</h3>" + _table(
                     ["segment", "rows", "reference rows", "drift share", "level",
                      "drifted columns"], rows))
    return _section("data-drift", "Data drift", body)


def verdict_header(verdict: Verdict) -> str:
    """The sections, in order, as one HTML fragment."""
    return "".join([_verdict(verdict), _performance(verdict), _quality(verdict),
                    _prediction(verdict), _multivariate(verdict), _data_drift(verdict)])


def prepend_verdict(path: Path, verdict: Verdict) -> None:
    """Put the verdict's sections at the top of the report's ``<body>``."""
    text = path.read_text()
    at = text.find("<body>")
    header = verdict_header(verdict)
    text = text[: at + 6] + header + text[at + 6:] if at >= 0 else header + text
    path.write_text(text)
