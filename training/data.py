"""Reading and checking tabular data against a dataset spec."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from driftloop.errors import DataError
from driftloop.frames import none_for_missing
from driftloop.spec import DatasetSpec


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
    for col in spec.features.categorical:
        out[col] = none_for_missing(out[col])
        out[col] = out[col].map(lambda v: v if v is None else str(v))
    return out


def labels_of(frame: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """Binary 0/1 labels from the target column (1 = the spec's positive label)."""
    target = frame[spec.target]
    if target.isna().any():
        raise DataError(f"target {spec.target!r} has {int(target.isna().sum())} missing values")
    positive = spec.positive_label
    as_str = target.astype(str)
    return (as_str == str(positive)).to_numpy(dtype=np.int64)


def load_frames(paths: Sequence[str | Path], spec: DatasetSpec, *,
                since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
    """Read, conform, concatenate and window several inputs, ordered by time."""
    if not paths:
        raise DataError("no --data given")
    frames = [conform(read_table(p), spec, name=str(p)) for p in paths]
    data = pd.concat(frames, ignore_index=True, sort=False)
    ts = data[spec.timestamp_column]
    if since is not None:
        data = data[ts >= pd.Timestamp(since)]
        ts = data[spec.timestamp_column]
    if until is not None:
        data = data[ts < pd.Timestamp(until)]
    if data.empty:
        raise DataError(f"no rows in the window since={since} until={until}")
    if spec.id_column and spec.id_column in data.columns:
        data = data.drop_duplicates(subset=[spec.id_column], keep="last")
    return data.sort_values(spec.timestamp_column, kind="stable").reset_index(drop=True)


def data_hash(frame: pd.DataFrame, columns: Sequence[str]) -> str:
    """A content hash of the training rows (order-sensitive), for lineage tags."""
    hashed = pd.util.hash_pandas_object(frame[list(columns)], index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]
