"""A retrain's data: the history and the recent labelled production rows, in a window.

The window (the spec's ``retrain.window``, docs/spec.md): with ``auto`` (the default) a cycle
triggered by a drift verdict or a degraded performance verdict trains on the rows from the
detected change onward (the earliest window start of the alarms on the champion that led
to it: :func:`change_start`), history included only from there; with fewer than
``retrain.min_rows`` labelled rows since the change it waits for labels (up to
``retrain.max_wait_hours``, then fails) instead of training on the old world. Scheduled,
new-labels, manual and Alertmanager retrains (no located change) keep the controller's
window (``retrain_window_days`` when set, else every row). ``all`` and ``N days`` apply to
every retrain. :class:`Window` says which and why; the version's tags and the decision keep it.

A retrain trains on the history (the spec's ``history:`` files or, when it has none, the
files the champion records it was trained on) plus the labelled rows of the prediction log;
the newest ``holdout_fraction`` of those is kept out of training so that the offline replay of
champion and challenger never judges the challenger on rows it was trained on.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from controller.store import TriggerRow
from kernel.spec import DatasetSpec
from monitoring.predlog import WindowReader
from registry import TAG_PREFIX, VersionInfo
from training.data import RECENT, SOURCE_COLUMN

#: Trigger sources whose verdicts locate a change: a drift verdict, a degraded performance one.
CHANGE_SOURCES = frozenset({"verdict", "performance"})

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
                  until: datetime, labels_as_of: datetime | None = None) -> pd.DataFrame:
    """Predictions in ``[since, until)`` that have a label by ``labels_as_of`` (default
    ``until``), ordered by time."""
    frame = reader.window(spec.model_name, since, until, labels_as_of=labels_as_of or until)
    if frame.empty or "label" not in frame:
        return frame.iloc[0:0]
    frame = frame[frame["label"].notna()]
    if spec.is_multiclass:  # classes are the versions' (evidence.py decodes against them)
        return frame.sort_values("ts", kind="stable").reset_index(drop=True)
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
    """The spec's own label values (what a training file holds), from the logged labels: a
    multi-class model's logged label is its class's text, which training decodes again."""
    if spec.is_multiclass:
        return frame["label"].astype(str)
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
    labelled: int = 0              # labelled rows in the window, holdout included


def write_retrain_rows(reader: WindowReader, spec: DatasetSpec, *, now: datetime,
                       days: float, holdout_fraction: float, dest: Path,
                       since: datetime | None = None, labels_as_of: datetime | None = None,
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
    rows = labelled_rows(reader, spec, start, now, labels_as_of)
    if rows.empty:
        return RetrainData(None, 0, None)
    labelled = len(rows)
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
        return RetrainData(None, 0, holdout_from, note, labelled)
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
    return RetrainData(dest, len(out), holdout_from, note, labelled)


@dataclass(frozen=True)
class Window:
    kind: str                    # change | all | days | controller
    since: datetime | None       # train on rows at or after this (None: every row)
    reason: str

    def tags(self) -> dict[str, str]:
        return {TAG_PREFIX + "window": self.kind, TAG_PREFIX + "window_reason": self.reason[:500],
                **({TAG_PREFIX + "window_since": self.since.isoformat()} if self.since else {})}


def alarm_start(key: str | None) -> datetime | None:
    """The window start of the verdict behind a trigger, from its dedup key (controller/intake.py
    writes ``verdict:<model>:<version>:<window_start>:<window_end>:<drift|performance>``)."""
    if not key or not key.startswith("verdict:"):
        return None
    parts = key.split(":", 3)
    if len(parts) < 4:
        return None
    rest = parts[3].rsplit(":", 1)[0]  # "<window_start>:<window_end>"
    for i, ch in enumerate(rest):
        if ch != ":":
            continue
        try:
            start, end = datetime.fromisoformat(rest[:i]), datetime.fromisoformat(rest[i + 1:])
        except ValueError:
            continue
        if start <= end:
            return start
    return None


def change_start(triggers: Iterable[TriggerRow], *, champion: int | None, before: datetime,
                 lookback: timedelta) -> datetime | None:
    """Where the change the alarms point at began: the earliest window start, within
    ``[before - lookback, before]``, of the drift and degraded-performance verdicts on
    ``champion`` (None: no alarm locates one). The verdicts' own windows, not when they were
    received: an intake stamped by another clock must not move the change."""
    starts = [start for t in triggers
              if t.version == champion
              and ((t.source == "verdict" and t.action == "retrain")
                   or (t.source == "performance" and t.action == "degraded"))
              and (start := alarm_start(t.dedup_key)) is not None
              and before - lookback <= start <= before]
    return min(starts) if starts else None


def choose_window(spec: DatasetSpec, sources: Iterable[str], *, now: datetime,
                  change: datetime | None, controller_days: float | None) -> Window:
    """The cycle's training window by the spec's ``retrain.window`` (module docstring)."""
    setting = spec.retrain.window
    if setting == "all":
        return Window("all", None, "retrain.window all: every row")
    if not isinstance(setting, str):
        return Window("days", now - timedelta(days=setting), f"retrain.window {setting:g} days")
    alarmed = sorted(set(sources) & CHANGE_SOURCES)
    if alarmed and change is not None:
        return Window("change", change, f"retrain.window auto: {'/'.join(alarmed)} alarm; "
                      f"rows from the detected change at {change.isoformat()} on")
    why = ("no verdict located a change (or recent_days 0: no production rows)" if alarmed else
           f"a {'/'.join(sorted(set(sources))) or 'manual'} retrain")
    if controller_days:
        return Window("controller", now - timedelta(days=controller_days),
                      f"retrain.window auto: {why}: the controller's window "
                      f"(retrain_window_days {controller_days:g})")
    return Window("controller", None, f"retrain.window auto: {why}: every row")
