"""A retrain's data: the history and the recent labelled production rows.

A retrain trains on the history (the spec's ``history:`` files or, when it has none, the
files the champion records it was trained on) plus the labelled rows of the prediction log;
the newest ``holdout_fraction`` of those is kept out of training so that the offline replay of
champion and challenger never judges the challenger on rows it was trained on.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from kernel.spec import DatasetSpec
from monitoring.predlog import WindowReader
from registry import TAG_PREFIX, VersionInfo
from training.data import RECENT, SOURCE_COLUMN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class History:
    paths: tuple[Path, ...]
    since: datetime | None = None   # the window start the champion was trained with
    note: str = ""                  # where the paths came from, or why there are none


def history_of(spec: DatasetSpec, champion: VersionInfo | None) -> History:
    """The spec's existing ``history:`` files; with none declared, the readable files the
    champion records in ``driftloop.data_sources`` (and its ``driftloop.data_since``)."""
    if spec.history:
        return History(tuple(p for p in spec.history_paths() if p.exists()), None, "spec history")
    if champion is None:
        return History((), None, "no champion to take the history from")
    raw = champion.tags.get(TAG_PREFIX + "data_sources")
    try:
        listed = [Path(p) for p in json.loads(raw)] if raw else []
    except (ValueError, TypeError):
        listed = []
    usable = tuple(p for p in listed if p.is_file() and os.access(p, os.R_OK))
    gone = [str(p) for p in listed if p not in usable]
    note = (f"champion v{champion.version}'s data: {len(usable)} of {len(listed)} files"
            + (f" (unreadable or gone: {', '.join(gone)[:300]})" if gone else ""))
    since_text = champion.tags.get(TAG_PREFIX + "data_since")
    try:
        since = datetime.fromisoformat(since_text) if since_text else None
    except ValueError:
        since = None
    return History(usable, since, note)


def labelled_rows(reader: WindowReader, spec: DatasetSpec, since: datetime,
                  until: datetime) -> pd.DataFrame:
    """Predictions in ``[since, until)`` that have a label, ordered by time."""
    frame = reader.window(spec.model_name, since, until, labels_as_of=until)
    if frame.empty or "label" not in frame:
        return frame.iloc[0:0]
    frame = frame[frame["label"].notna()]
    known = spec.labels.decode_many(frame["label"], strict=False) >= 0
    if not known.all():  # written by an older driftloop that stored labels as sent
        log.warning("%s: %d logged labels are not the spec's labels (%s); left out",
                    spec.model_name, int((~known).sum()), spec.labels.expected)
        frame = frame[known]
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def label_array(frame: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """0/1 from the log's labels, by the spec's one decoder (kernel/labels.py)."""
    return spec.labels.decode_many(frame["label"])


def _target_values(frame: pd.DataFrame, spec: DatasetSpec) -> pd.Series:
    """The spec's own label values (what a training file holds), from the logged labels."""
    y = label_array(frame, spec)
    negative = spec.labels.negative
    if negative is None:  # an undeclared negative label: the logged text, as sent
        return pd.Series(np.where(y == 1, spec.positive_label, frame["label"].astype(str)),
                         index=frame.index)
    return pd.Series(np.where(y == 1, spec.positive_label, negative), index=frame.index)


# Below this many labelled rows in the training window (before the cut), a holdout would
# starve the retrain: train on all of them and let the replay wait for rows after the cycle.
MIN_TRAIN_ROWS = 100


@dataclass(frozen=True)
class RetrainData:
    path: Path | None             # Parquet with features + timestamp + target (+ id); None: no rows
    rows: int
    holdout_from: datetime | None  # rows at or after this were kept out of training
    note: str | None = None        # why there is no holdout, when there is none


def write_retrain_rows(reader: WindowReader, spec: DatasetSpec, *, now: datetime,
                       days: float, holdout_fraction: float, dest: Path,
                       since: datetime | None = None,
                       min_train_rows: int = MIN_TRAIN_ROWS) -> RetrainData:
    """Write the labelled log rows of ``[max(now - days, since), now)`` minus the holdout.

    ``since`` is the start of the training window (``--since``): the holdout is the newest
    ``holdout_fraction`` of the rows *inside* that window, so the cut (``--until``) always
    falls after ``since`` and the retrain keeps rows to train on. When a window is given and
    would keep fewer than ``min_train_rows`` rows before the cut (or the cut leaves none), there
    is no holdout (``note`` says so): the retrain uses them all and the offline replay waits
    for rows of predictions made after the cycle start.
    """
    if days <= 0:
        return RetrainData(None, 0, None)
    start = now - timedelta(days=days)
    if since is not None and since > start:
        start = since
    rows = labelled_rows(reader, spec, start, now)
    if rows.empty:
        return RetrainData(None, 0, None)
    keep = int(len(rows) * (1 - holdout_fraction))
    holdout_from = rows["ts"].iloc[keep].to_pydatetime() if keep < len(rows) else None
    note = None
    if holdout_from is not None:
        before = int((rows["ts"] < pd.Timestamp(holdout_from)).sum())  # what --until leaves
        if before == 0 or (since is not None and before < min_train_rows):
            note = (f"no holdout: {len(rows)} labelled rows since {start.isoformat()} would "
                    f"leave {before} to train on before the cut (need {min_train_rows}); "
                    "training on all of them, the replay uses rows after the cycle start")
            holdout_from, keep = None, len(rows)
    train = rows.iloc[:keep]
    if train.empty:
        return RetrainData(None, 0, holdout_from, note)
    out = train[[c for c in spec.features.all if c in train.columns]].copy()
    out[spec.timestamp_column] = train["ts"]
    out[spec.target] = _target_values(train, spec)
    if spec.id_column:
        out[spec.id_column] = train["request_id"].astype(str)
    out[SOURCE_COLUMN] = RECENT  # training counts them and draws the drift reference from them
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    out.to_parquet(tmp, index=False)
    tmp.replace(dest)
    return RetrainData(dest, len(out), holdout_from, note)
