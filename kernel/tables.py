"""Tabular files and the spec's columns: read and write CSV/Parquet, parse timestamps, and
conform a frame to a dataset spec (typed features, UTC timestamps).

In the kernel because three floors need the same reading: training (its ``--data``), the
drift check (a file of production rows) and the backtest (a labelled history).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kernel.errors import DataError
from kernel.frames import none_for_missing
from kernel.spec import DatasetSpec


def read_table(path: str | Path) -> pd.DataFrame:
    """Read one CSV or Parquet file (chosen by extension)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        if suffix in {".csv", ".gz"}:
            return pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    raise DataError(f"{path}: unsupported extension {suffix!r} (use .csv or .parquet)")


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in {".parquet", ".pq"}:
        frame.to_parquet(path, index=False)
    elif path.suffix.lower() == ".csv":
        frame.to_csv(path, index=False)
    else:
        raise DataError(f"{path}: unsupported extension (use .csv or .parquet)")
    return path


def to_utc(values: pd.Series) -> pd.Series:
    """Parse timestamps to tz-aware UTC; naive values are taken as UTC."""
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    return parsed


def conform(frame: pd.DataFrame, spec: DatasetSpec, *, require_target: bool = True,
            name: str = "data") -> pd.DataFrame:
    """Check columns and types; return a copy with parsed timestamps and typed features.

    Raises DataError naming what is wrong.
    """
    needed = [spec.timestamp_column, *spec.features.all]
    if require_target:
        needed.append(spec.target)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{name}: missing columns {missing}")
    out = frame.copy()
    out[spec.timestamp_column] = to_utc(out[spec.timestamp_column])
    bad_ts = int(out[spec.timestamp_column].isna().sum())
    if bad_ts:
        raise DataError(f"{name}: {bad_ts} rows have an unparseable {spec.timestamp_column!r}")
    for col in spec.features.numerical:
        if not pd.api.types.is_numeric_dtype(out[col]):
            coerced = pd.to_numeric(out[col], errors="coerce")
            bad = int((coerced.isna() & out[col].notna()).sum())
            if bad:
                example = out.loc[coerced.isna() & out[col].notna(), col].iloc[0]
                raise DataError(f"{name}: numerical column {col!r} has {bad} non-numeric "
                                f"values (e.g. {example!r})")
            out[col] = coerced
        out[col] = out[col].astype("float64")
    for col in (*spec.features.categorical, *spec.features.text):
        out[col] = none_for_missing(out[col])
        out[col] = out[col].map(lambda v: v if v is None else str(v))
    return out
