"""Recent labelled production rows from the prediction log, for retraining and replay.

A retrain trains on the spec's history plus these rows; the newest ``holdout_fraction`` of
them is kept out of training so that the offline replay of champion and challenger never
judges the challenger on rows it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from driftloop.spec import DatasetSpec
from monitoring.predlog import PredictionLogReader


def labelled_rows(reader: PredictionLogReader, spec: DatasetSpec, since: datetime,
                  until: datetime) -> pd.DataFrame:
    """Predictions in ``[since, until)`` that have a label, ordered by time."""
    frame = reader.window(spec.model_name, since, until, labels_as_of=until)
    if frame.empty or "label" not in frame:
        return frame.iloc[0:0]
    return frame[frame["label"].notna()].sort_values("ts", kind="stable").reset_index(drop=True)


def label_array(frame: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """0/1 from the log's text labels (1 = the spec's positive label)."""
    return (frame["label"].astype(str) == str(spec.positive_label)).to_numpy(dtype=np.int64)


def _target_values(labels: pd.Series) -> pd.Series:
    numeric = pd.to_numeric(labels, errors="coerce")
    return numeric if numeric.notna().all() else labels.astype(str)


@dataclass(frozen=True)
class RetrainData:
    path: Path | None             # Parquet with features + timestamp + target (+ id); None: no rows
    rows: int
    holdout_from: datetime | None  # rows at or after this were kept out of training


def write_retrain_rows(reader: PredictionLogReader, spec: DatasetSpec, *, now: datetime,
                       days: float, holdout_fraction: float, dest: Path) -> RetrainData:
    if days <= 0:
        return RetrainData(None, 0, None)
    rows = labelled_rows(reader, spec, now - timedelta(days=days), now)
    if rows.empty:
        return RetrainData(None, 0, None)
    keep = int(len(rows) * (1 - holdout_fraction))
    holdout_from = rows["ts"].iloc[keep].to_pydatetime() if keep < len(rows) else None
    train = rows.iloc[:keep]
    if train.empty:
        return RetrainData(None, 0, holdout_from)
    out = train[[c for c in spec.features.all if c in train.columns]].copy()
    out[spec.timestamp_column] = train["ts"]
    out[spec.target] = _target_values(train["label"])
    if spec.id_column:
        out[spec.id_column] = train["request_id"].astype(str)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    out.to_parquet(tmp, index=False)
    tmp.replace(dest)
    return RetrainData(dest, len(out), holdout_from)
