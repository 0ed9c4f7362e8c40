"""Training data: several inputs loaded, conformed and windowed; labels; a content hash."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from kernel.errors import DataError
from kernel.labels import LabelError
from kernel.spec import DatasetSpec
from kernel.tables import conform, read_table


def labels_of(frame: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """Binary 0/1 labels from the target column, by the spec's one decoder (kernel/labels.py):
    a missing or undefined label is a DataError naming it, never a silent negative."""
    target = frame[spec.target]
    if target.isna().any():
        raise DataError(f"target {spec.target!r} has {int(target.isna().sum())} missing values")
    try:
        return spec.labels.decode_many(target)
    except LabelError as exc:
        raise DataError(f"target {spec.target!r}: {exc}") from None


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
