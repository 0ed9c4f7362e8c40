"""Training data: several inputs loaded, conformed and windowed; labels; a content hash.

Rows carry their source in :data:`SOURCE_COLUMN`: ``recent`` for the labelled production
rows the controller writes for a retrain (controller/recent.py puts the column in that
file), ``history`` for every other input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
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


def class_labels_of(frame: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """A multi-class target as class texts (object array), by the spec's class decoder
    (kernel/labels.py ClassCodec): a missing label or one outside ``classes:`` is a
    DataError naming it."""
    target = frame[spec.target]
    if target.isna().any():
        raise DataError(f"target {spec.target!r} has {int(target.isna().sum())} missing values")
    try:
        return spec.class_codec().canonical_many(target)
    except LabelError as exc:
        raise DataError(f"target {spec.target!r}: {exc}") from None


SOURCE_COLUMN = "driftloop_source"
HISTORY, RECENT = "history", "recent"


@dataclass(frozen=True)
class Loaded:
    data: pd.DataFrame               # conformed, windowed, by time, with SOURCE_COLUMN
    history_paths: tuple[str, ...]   # absolute paths of the inputs without a source column


def load_frames(paths: Sequence[str | Path], spec: DatasetSpec, *,
                since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
    """Read, conform, concatenate and window several inputs, ordered by time."""
    return load_inputs(paths, spec, since=since, until=until).data


def _with_source(frame: pd.DataFrame) -> pd.DataFrame:
    if SOURCE_COLUMN in frame.columns:
        frame[SOURCE_COLUMN] = np.where(frame[SOURCE_COLUMN].astype(str) == RECENT, RECENT,
                                        HISTORY)
    else:
        frame[SOURCE_COLUMN] = HISTORY
    return frame


def load_inputs(paths: Sequence[str | Path], spec: DatasetSpec, *,
                since: datetime | None = None, until: datetime | None = None) -> Loaded:
    """:func:`load_frames` plus where the rows came from (the history inputs' paths)."""
    if not paths:
        raise DataError("no --data given")
    raw = [(str(Path(p).resolve()), read_table(p)) for p in paths]
    history = tuple(name for name, frame in raw if SOURCE_COLUMN not in frame.columns)
    frames = [_with_source(conform(frame, spec, name=str(p)))
              for p, (_, frame) in zip(paths, raw, strict=True)]
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
    data = data.sort_values(spec.timestamp_column, kind="stable").reset_index(drop=True)
    return Loaded(data, history)


def data_hash(frame: pd.DataFrame, columns: Sequence[str]) -> str:
    """A content hash of the training rows (order-sensitive), for lineage tags."""
    hashed = pd.util.hash_pandas_object(frame[list(columns)], index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]
