"""The segment of each row (``drift.segments``): one pure function shared by the floors that
split rows by segment, so that training's coverage audit and monitoring's segmented drift
check put a row in the same segment.

Keys are text: ``weekend`` / ``weekday``; ``mon`` .. ``sun``; ``00-06`` .. ``18-24`` (an
hour bucket of ``hour_buckets`` hours, start inclusive, end exclusive); or the categorical
value's text. A missing or unparseable value is ``__missing__``. Timestamps are read as
UTC (naive ones are taken as UTC, as everywhere else).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kernel.errors import DataError, SpecError
from kernel.spec import DatasetSpec, SegmentSettings
from kernel.tables import to_utc

#: The key of a row whose segment value is missing (or whose timestamp is unparseable).
MISSING = "__missing__"

#: Day-of-week keys, Monday first (pandas' ``dayofweek`` order).
DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def hour_bucket(start: int, width: int) -> str:
    """The key of the hour bucket starting at ``start``: ``"06-12"`` for 6 and 6."""
    return f"{start:02d}-{start + width:02d}"


def time_segment_keys(settings: SegmentSettings) -> list[str] | None:
    """Every key a timestamp segmentation can give (without ``__missing__``), in calendar
    order; None for a categorical segmentation (its keys are the data's)."""
    if settings.by == "weekend":
        return ["weekday", "weekend"]
    if settings.by == "day_of_week":
        return list(DAYS)
    if settings.by == "hour_of_day":
        width = settings.hour_buckets
        return [hour_bucket(start, width) for start in range(0, 24, width)]
    return None


def segment_keys(frame: pd.DataFrame, spec: DatasetSpec,
                 column: str | None = None) -> pd.Series:
    """The segment key of each row of ``frame`` (same index, object dtype, name
    ``segment``), by the spec's ``drift.segments``.

    ``column`` names the column holding the timestamp when it is not the spec's
    ``timestamp_column`` (the prediction log carries the event time as ``ts``); it is
    ignored for a categorical segmentation. Raises SpecError when the spec has no
    ``drift.segments`` and DataError when the column is absent from ``frame``.
    """
    settings = spec.drift.segments
    if settings is None:
        raise SpecError(f"{spec.model_name}: the spec sets no drift.segments")
    by = settings.by
    name = by if time_segment_keys(settings) is None else (column or spec.timestamp_column)
    if name not in frame.columns:
        raise DataError(f"segments by {by}: column {name!r} is not in the rows")
    values = frame[name]
    if by == "weekend":
        stamps = to_utc(values)
        keys = np.where(stamps.dt.dayofweek >= 5, "weekend", "weekday").astype(object)
        return _with_missing(keys, stamps.isna(), frame.index)
    if by == "day_of_week":
        stamps = to_utc(values)
        days = stamps.dt.dayofweek.fillna(0).astype(int).to_numpy()
        return _with_missing(np.asarray(DAYS, dtype=object)[days], stamps.isna(), frame.index)
    if by == "hour_of_day":
        stamps = to_utc(values)
        width = settings.hour_buckets
        buckets = time_segment_keys(settings) or []
        hours = stamps.dt.hour.fillna(0).astype(int).to_numpy()
        keys = np.asarray(buckets, dtype=object)[hours // width]
        return _with_missing(keys, stamps.isna(), frame.index)
    texts = values.to_numpy(dtype=object, copy=True)
    missing = pd.isna(texts)
    return _with_missing(np.array([str(v) for v in texts], dtype=object), missing, frame.index)


def _with_missing(keys: np.ndarray, missing: pd.Series | np.ndarray,
                  index: pd.Index) -> pd.Series:
    out = np.asarray(keys, dtype=object).copy()
    out[np.asarray(missing, dtype=bool)] = MISSING
    return pd.Series(out, index=index, name="segment", dtype=object)
