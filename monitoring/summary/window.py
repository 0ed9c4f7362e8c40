"""Summaries of a reference and of a window, and the verdict made from them.

``ReferenceSummary.of(reference)`` is computed once per version (and stored beside the log by
``monitoring.summary.stored``): each column's basis and the reference's own summaries.
``WindowSummary`` is what a window (or one partition of it) reduces to; ``merge`` is
associative. ``check_summary`` makes the same ``Verdict`` as ``monitoring.check.check_frames``
from them, ``engine`` naming the path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from monitoring import stats
from monitoring.check import SCORE_COLUMN, Reference, _reasons, _to_result
from monitoring.quality import MAX_LISTED_CATEGORIES, QualityThresholds
from monitoring.summary import methods
from monitoring.summary.sketch import (
    ALPHA,
    CategoricalBasis,
    CategoricalSummary,
    ColumnSummary,
    NumericBasis,
    NumericSummary,
    merge,
    numeric_basis,
)
from monitoring.verdict import ColumnQuality, Performance, Verdict

#: Bumped whenever a stored summary's meaning changes: stored ones of another format are
#: recomputed.
SUMMARY_FORMAT = 1

Basis = NumericBasis | CategoricalBasis


def _categorical_counts(values: pa.Array | pa.ChunkedArray | pd.Series
                        ) -> tuple[list[str], list[int], int]:
    if isinstance(values, pd.Series):
        counts = values.astype(object).dropna().astype(str).value_counts(sort=False)
        return [str(k) for k in counts.index], counts.astype(int).tolist(), int(values.isna().sum())
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
        values = values.cast(pa.string())
    nulls = values.null_count
    vc = pc.value_counts(pc.drop_null(values))
    keys = vc.field("values").to_pylist() if len(vc) else []
    return [str(k) for k in keys], (vc.field("counts").to_pylist() if len(vc) else []), nulls


def _numbers(values: pa.Array | pa.ChunkedArray | pd.Series | np.ndarray) -> np.ndarray:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        if pa.types.is_dictionary(values.type):
            values = values.cast(values.type.value_type)
        if not pa.types.is_floating(values.type):
            try:
                values = values.cast(pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                values = pc.cast(values.cast(pa.string()), pa.float64(), safe=False)
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
    return pd.to_numeric(pd.Series(values, copy=False), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan)


def empty_summary(basis: Basis) -> ColumnSummary:
    if isinstance(basis, CategoricalBasis):
        return CategoricalSummary(basis)
    return NumericSummary(basis)


def add_values(summary: ColumnSummary, values: Any) -> None:
    if isinstance(summary, CategoricalSummary):
        keys, counts, missing = _categorical_counts(values)
        summary.add_counts(keys, counts, missing)
    else:
        summary.add(_numbers(values))


@dataclass
class WindowSummary:
    """A window's (or a partition's) summaries: per feature, of the score, and its counts."""

    columns: dict[str, ColumnSummary]
    score: NumericSummary | None
    rows: int = 0
    ts_min: datetime | None = None
    ts_max: datetime | None = None

    def merge(self, other: WindowSummary) -> WindowSummary:
        score = self.score if other.score is None else (
            other.score if self.score is None else self.score.merge(other.score))
        stamps = [t for t in (self.ts_min, other.ts_min) if t is not None]
        ends = [t for t in (self.ts_max, other.ts_max) if t is not None]
        return WindowSummary({c: merge(s, other.columns[c]) for c, s in self.columns.items()},
                             score, self.rows + other.rows, min(stamps, default=None),
                             max(ends, default=None))

    def to_dict(self) -> dict[str, Any]:
        return {"columns": {c: s.to_dict() for c, s in self.columns.items()},
                "score": None if self.score is None else self.score.to_dict(),
                "rows": self.rows,
                "ts_min": None if self.ts_min is None else self.ts_min.isoformat(),
                "ts_max": None if self.ts_max is None else self.ts_max.isoformat()}


@dataclass
class ReferenceSummary:
    """A version's bases and its reference's summaries, computed once per version."""

    bases: dict[str, Basis]
    score_basis: NumericBasis | None
    summary: WindowSummary
    kinds: dict[str, stats.Kind] = field(default_factory=dict)

    @classmethod
    def of(cls, reference: Reference) -> ReferenceSummary:
        bases: dict[str, Basis] = {}
        for col in reference.spec.features.all:
            values = reference.features[col]
            if reference.kind(col) == "categorical":
                keys, _, _ = _categorical_counts(values)
                bases[col] = CategoricalBasis(frozenset(keys))
            else:
                bases[col] = numeric_basis(_numbers(values))
        scores = reference.validation_scores
        score_basis = None if scores is None else numeric_basis(np.asarray(scores, float))
        out = cls(bases, score_basis, WindowSummary({}, None),
                  {c: reference.kind(c) for c in reference.spec.features.all})
        summary = out.empty()
        for col in reference.spec.features.all:
            add_values(summary.columns[col], reference.features[col])
        if summary.score is not None and scores is not None:
            summary.score.add(np.asarray(scores, float))
        summary.rows = len(reference.features)
        out.summary = summary
        return out

    def empty(self) -> WindowSummary:
        return WindowSummary({c: empty_summary(b) for c, b in self.bases.items()},
                             None if self.score_basis is None else NumericSummary(self.score_basis))

    def summarise(self, batch: pa.Table | pa.RecordBatch | pd.DataFrame) -> WindowSummary:
        """One batch of current rows (features, optional score and ts) as a summary."""
        out = self.empty()
        names = list(batch.columns) if isinstance(batch, pd.DataFrame) else batch.schema.names
        rows = len(batch) if isinstance(batch, pd.DataFrame) else batch.num_rows
        for col, summary in out.columns.items():
            if col in names:
                add_values(summary, batch[col])
            else:
                summary.missing += rows
        if out.score is not None and SCORE_COLUMN in names:
            out.score.add(_numbers(batch[SCORE_COLUMN]))
        out.rows = rows
        if "ts" in names and rows:
            ts = batch["ts"]
            if isinstance(batch, pd.DataFrame):
                stamps = pd.to_datetime(ts, utc=True, errors="coerce").dropna()
                if len(stamps):
                    out.ts_min = stamps.min().to_pydatetime()
                    out.ts_max = stamps.max().to_pydatetime()
            else:
                low, high = pc.min_max(ts).values()
                out.ts_min, out.ts_max = low.as_py(), high.as_py()
        return out

    def load(self, d: Mapping[str, Any]) -> WindowSummary:
        columns: dict[str, ColumnSummary] = {}
        for col, basis in self.bases.items():
            if isinstance(basis, CategoricalBasis):
                columns[col] = CategoricalSummary.from_dict(basis, d["columns"][col])
            else:
                columns[col] = NumericSummary.from_dict(basis, d["columns"][col])
        score = None
        if self.score_basis is not None and d.get("score") is not None:
            score = NumericSummary.from_dict(self.score_basis, d["score"])
        elif self.score_basis is not None:
            score = NumericSummary(self.score_basis)
        return WindowSummary(columns, score, int(d["rows"]),
                             _stamp(d.get("ts_min")), _stamp(d.get("ts_max")))

    def to_dict(self) -> dict[str, Any]:
        """Everything but the reference's rows: ``from_dict`` gives back an equal summary
        (the same fingerprint), so a stored one is as good as a recomputed one."""
        return {"bases": {c: _basis_dict(b) for c, b in self.bases.items()},
                "score_basis": None if self.score_basis is None else _basis_dict(self.score_basis),
                "kinds": dict(self.kinds), "summary": self.summary.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceSummary:
        bases = {str(c): _basis_of(b) for c, b in d["bases"].items()}
        score = None if d["score_basis"] is None else _basis_of(d["score_basis"])
        if not isinstance(score, NumericBasis | None):
            raise ValueError("the score's basis is not numerical")
        out = cls(bases, score, WindowSummary({}, None), dict(d["kinds"]))
        out.summary = out.load(d["summary"])
        return out

    def fingerprint(self) -> str:
        """Changes with the format, the accuracy and every basis: stored summaries made
        against another are recomputed."""
        import hashlib

        text = repr((SUMMARY_FORMAT, ALPHA, sorted((c, _basis_key(b)) for c, b in
                                                    self.bases.items()),
                     None if self.score_basis is None else _basis_key(self.score_basis)))
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _basis_dict(b: Basis) -> dict[str, Any]:
    if isinstance(b, CategoricalBasis):
        return {"categories": sorted(b.categories)}
    return {"center": b.center, "scale": b.scale, "low": b.low, "high": b.high,
            "values": sorted(b.values)}


def _basis_of(d: Mapping[str, Any]) -> Basis:
    if "categories" in d:
        return CategoricalBasis(frozenset(str(c) for c in d["categories"]))
    return NumericBasis(float(d["center"]), float(d["scale"]), float(d["low"]),
                        float(d["high"]), frozenset(float(v) for v in d["values"]))


def _basis_key(b: Basis) -> tuple:
    if isinstance(b, CategoricalBasis):
        return ("c", sorted(b.categories))
    return ("n", b.center, b.scale, b.low, b.high, sorted(b.values))


def _stamp(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


# --- the verdict --------------------------------------------------------------------------


def feature_drift(reference: Reference, ref: ReferenceSummary, window: WindowSummary
                  ) -> list[methods.SummaryResult]:
    spec = reference.spec
    out = []
    for col in spec.features.all:
        override = spec.drift.per_column.get(col)
        try:
            out.append(methods.column_drift(
                col, ref.summary.columns[col], window.columns[col], reference.kind(col),
                method=override.method if override else None,
                threshold=override.threshold if override else None))
        except stats.UnsupportedMethod as exc:
            from kernel.errors import UsageError

            raise UsageError(f"column {col}: the summary engine does not compute {exc}; "
                             "use DRIFTLOOP_DRIFT_ENGINE=exact for this model") from None
    return out


def quality(reference: Reference, window: WindowSummary,
            thresholds: QualityThresholds = QualityThresholds()) -> list[ColumnQuality]:
    """``monitoring.quality.column_quality`` from summaries (the same shares: counts are exact)."""
    profile, rows, spec = reference.profile, window.rows, reference.spec
    out = []
    for col in [*spec.features.numerical, *spec.features.categorical]:
        s = window.columns[col]
        missing = s.missing / rows if rows else 0.0
        ref_missing = profile.missing.get(col, 0.0)
        unseen: list[str] = []
        unseen_share = out_of_range = 0.0
        if isinstance(s, CategoricalSummary) and col in profile.categories and rows:
            known = profile.categories[col]
            new = [(k, c) for k, c in s.values.counts.items() if k not in known]
            unseen = sorted(k for k, _ in new)[:MAX_LISTED_CATEGORIES]
            unseen_share = (sum(c for _, c in new) + s.values.other) / rows
        elif isinstance(s, NumericSummary) and col in profile.ranges and rows:
            out_of_range = float(s.outside + s.infinite) / rows
        flagged = (missing - ref_missing > thresholds.missing_increase
                   or unseen_share > thresholds.unseen_share
                   or out_of_range > thresholds.out_of_range_share)
        out.append(ColumnQuality(column=col, missing_share=missing,
                                 reference_missing_share=ref_missing, unseen_categories=unseen,
                                 unseen_share=unseen_share, out_of_range_share=out_of_range,
                                 flagged=flagged))
    return out


def check_summary(reference: Reference, ref: ReferenceSummary, window: WindowSummary, *,
                  model: str | None = None, version: int = 0,
                  window_start: datetime | None = None, window_end: datetime | None = None,
                  now: datetime | None = None, source: str = "prediction_log",
                  labelled_rows: int = 0, performance: Performance | None = None,
                  engine: str = "summary",
                  thresholds: QualityThresholds = QualityThresholds()) -> Verdict:
    """``check_frames``'s verdict from summaries. ``performance`` and ``labelled_rows`` come
    from the labelled rows (monitoring/summary/engine.py reads them exactly)."""
    spec = reference.spec
    now = now or datetime.now(UTC)
    start = window_start or window.ts_min or now
    end = window_end or window.ts_max or now
    base = dict(model=model or spec.model_name, version=int(version), window_start=start,
                window_end=end, created_at=now, rows=window.rows, labelled_rows=labelled_rows,
                drift_share_threshold=spec.drift.drift_share, source=source, engine=engine)
    if window.rows < spec.drift.min_rows:
        return Verdict(**base, status="insufficient_data",
                       reasons=[f"{window.rows} rows in the window, fewer than "
                                f"drift.min_rows={spec.drift.min_rows}: no verdict on drift"])
    found = feature_drift(reference, ref, window)
    results = [r.result for r in found]
    share = stats.drift_share(results)
    columns = [_to_result(r.result).model_copy(update={"score_bound": r.bound}) for r in found]
    drifted = [r.column for r in results if r.drifted]
    prediction = None
    if ref.summary.score is not None and window.score is not None and window.score.rows:
        pred = methods.column_drift(SCORE_COLUMN, ref.summary.score, window.score, "score")
        prediction = _to_result(pred.result).model_copy(update={"score_bound": pred.bound})
    quality_rows = quality(reference, window, thresholds)
    reasons = _reasons(share, spec.drift.drift_share, drifted, prediction, quality_rows,
                       performance)
    flagged = any(q.flagged for q in quality_rows)
    if performance is not None and performance.degraded:
        status = "degraded"
    elif share >= spec.drift.drift_share or flagged:
        status = "drift"
    else:
        status = "ok"
    return Verdict(**base, status=status, reasons=reasons, drift_share=share,
                   drifted_columns=drifted, columns=columns, prediction_drift=prediction,
                   data_quality=quality_rows, quality_flagged=flagged, performance=performance)
