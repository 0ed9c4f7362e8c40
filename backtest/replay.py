"""The backtest's prediction log: the replayed rows, served in time order, behind a clock.

:class:`ReplayLog` answers the same questions as ``monitoring.predlog.PredictionLogReader``
(``window``, ``predictions``, ``labels``), so the live controller's shell, its evaluator and
``controller.recent`` read it unchanged. It holds every row of the replayed history up
front, but it only ever shows what existed at the simulated ``clock()``:

- a prediction is visible once it was served (``ts < clock()`` and scored);
- a label is visible once it arrived (``label_at <= clock()``), whatever ``labels_as_of``
  the caller passes; ``labels_as_of`` can only hide more.

That is the time-travel guard: nothing in the decision path can read a label before it
would have arrived live. Every read is audited (``audit``) so tests can check it.

A multi-class model's rows read as serving logs them (monitoring/predlog/schema.py):
``prediction`` the predicted class as text, ``score`` its probability, ``probabilities``
every class's probability in the serving version's class order and ``shadow_probabilities``
the challenger's in its own; labels are class texts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from kernel.metrics import THRESHOLD
from kernel.spec import DatasetSpec


@dataclass(frozen=True)
class Read:
    """One read of the log: when, the label cut used, the newest label time it returned."""

    now: datetime
    labels_as_of: datetime
    newest_label: datetime | None
    labelled: int


class SimClock:
    """The simulated clock of a replay (only ever moves forward)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, to: datetime) -> None:
        if to < self.now:
            raise ValueError(f"the clock cannot go back from {self.now} to {to}")
        self.now = to


class ReplayLog:
    """Replayed rows (sorted by ``ts``) with their serving columns filled as they are served."""

    def __init__(self, spec: DatasetSpec, rows: pd.DataFrame, label_text: pd.Series,
                 label_at: pd.Series, request_ids: pd.Series, y: np.ndarray,
                 clock: Callable[[], datetime]):
        self.spec = spec
        self.clock = clock
        # microseconds, as the prediction log stores them (and as datetime can hold)
        ts = pd.to_datetime(rows[spec.timestamp_column], utc=True).dt.floor("us")
        ts = ts.astype("datetime64[us, UTC]").reset_index(drop=True)
        n = len(rows)
        frame = pd.DataFrame({"ts": ts, "request_id": request_ids.astype(str).to_numpy(),
                              "model_name": spec.model_name})
        for col in spec.features.all:
            frame[col] = rows[col].to_numpy()
        self._frame = frame
        self._ts = ts.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
        self._label = label_text.astype(str).to_numpy(dtype=object)
        self._label_at = pd.to_datetime(label_at, utc=True).dt.ceil("us").dt.tz_convert(
            None).to_numpy(dtype="datetime64[ns]")
        self.version = np.zeros(n, dtype=np.int64)
        self.score = np.full(n, np.nan)
        self.shadow_version = np.full(n, np.nan)
        self.shadow_score = np.full(n, np.nan)
        self.served = 0                      # rows [0, served) have been served
        # multi-class: each version's full-length probabilities (its class order) and classes
        self.multiclass = spec.is_multiclass
        self.prediction = np.full(n, None, dtype=object)
        self._probabilities: dict[int, np.ndarray] = {}
        self._classes: dict[int, tuple[str, ...]] = {}
        self.audit: list[Read] = []
        self._y = np.asarray(y, dtype=np.int64)

    def labelled_by(self, when: datetime, rows: slice = slice(None)) -> np.ndarray:
        """For ``rows``: True where a label exists and is visible at ``when``."""
        cut = np.datetime64(pd.Timestamp(when).tz_convert(None))
        return (self._label_at[rows] <= cut) & (self._y[rows] >= 0)

    def __len__(self) -> int:
        return len(self._frame)

    # -- serving -----------------------------------------------------------------------------

    def index_before(self, when: datetime) -> int:
        return int(np.searchsorted(self._ts, _ns(when), side="left"))

    def add_classes(self, version: int, classes: Sequence[str],
                    probabilities: np.ndarray) -> None:
        """A multi-class version's classes (its ``predict_proba`` order) and its
        probabilities on every row, before it serves or shadows."""
        matrix = np.asarray(probabilities, dtype=float)
        if matrix.shape != (len(self), len(classes)):
            raise ValueError(f"v{version}: probabilities of shape {matrix.shape}, expected "
                             f"{(len(self), len(classes))}")
        self._classes[version] = tuple(str(c) for c in classes)
        self._probabilities[version] = matrix

    def probabilities_of(self, version: int) -> tuple[tuple[str, ...], np.ndarray]:
        """A multi-class version's classes and probabilities given by :meth:`add_classes`."""
        return self._classes[version], self._probabilities[version]

    def serve(self, until: datetime, champion: int, scores: np.ndarray,
              challenger: int | None = None, shadow: np.ndarray | None = None) -> slice:
        """Serve the rows with ``ts < until`` not served yet: ``scores`` / ``shadow`` are
        the full-length score arrays of the champion and the challenger (multi-class: their
        top probabilities; :meth:`add_classes` gave their probabilities)."""
        stop = self.index_before(until)
        part = slice(self.served, stop)
        self.version[part] = champion
        self.score[part] = scores[part]
        if self.multiclass:
            top = self._probabilities[champion][part].argmax(axis=1)
            self.prediction[part] = np.asarray(self._classes[champion], dtype=object)[top]
        if challenger is not None and shadow is not None:
            self.shadow_version[part] = challenger
            self.shadow_score[part] = shadow[part]
        self.served = max(self.served, stop)
        return part

    def _lists(self, versions: np.ndarray, start: int, index: pd.Index) -> pd.Series:
        """Per row from ``start``: its ``versions`` entry's probabilities as a list (None
        where no version, NaN or 0, is set)."""
        out: list[list[float] | None] = []
        for i, v in enumerate(versions):
            matrix = self._probabilities.get(int(v)) if np.isfinite(v) and v > 0 else None
            out.append(None if matrix is None else matrix[start + i].tolist())
        return pd.Series(out, index=index, dtype=object)

    # -- reading (the PredictionLogReader interface) -------------------------------------------

    def _cut(self, when: datetime | None) -> np.datetime64:
        now = self.clock()
        return _ns(now if when is None or when > now else when)

    def predictions(self, model: str, since: datetime, until: datetime, *,
                    version: int | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        return self._window(model, since, until, version, None, labels=False)

    def window(self, model: str, since: datetime, until: datetime, *, version: int | None = None,
               labels_as_of: datetime | None = None) -> pd.DataFrame:
        return self._window(model, since, until, version, labels_as_of, labels=True)

    def labels(self, *, since: datetime | None = None, as_of: datetime | None = None) -> pd.DataFrame:
        cut = self._cut(as_of)
        seen = self._label_at[: self.served] <= cut
        if since is not None:
            seen &= self._label_at[: self.served] >= _ns(since)
        idx = np.flatnonzero(seen)
        return pd.DataFrame({"request_id": self._frame["request_id"].to_numpy()[idx],
                             "label": self._label[idx],
                             "received_at": pd.to_datetime(self._label_at[idx], utc=True)})

    def count_labels(self, model: str, since: datetime, until: datetime, *,
                     received_since: datetime, as_of: datetime | None = None) -> int:
        """Labels of the served predictions in ``[since, until)`` that arrived in
        ``[received_since, as_of]``: what the controller's labelled-rows trigger counts,
        without building the window's frame (each tick of a replay asks; audited)."""
        now = self.clock()
        if model != self.spec.model_name:
            return 0
        start = self.index_before(since)
        stop = max(start, min(self.index_before(min(until, now)), self.served))
        cut = self._cut(as_of)
        at = self._label_at[start:stop]
        seen = at <= cut
        fresh = int((seen & (at >= _ns(received_since))).sum())
        newest = at[seen].max() if seen.any() else None
        self.audit.append(Read(now, pd.Timestamp(cut, tz="UTC").to_pydatetime(),
                               None if newest is None
                               else pd.Timestamp(newest, tz="UTC").to_pydatetime(),
                               int(seen.sum())))
        return fresh

    def _window(self, model: str, since: datetime, until: datetime, version: int | None,
                labels_as_of: datetime | None, *, labels: bool) -> pd.DataFrame:
        now = self.clock()
        if model != self.spec.model_name:
            return self._frame.iloc[0:0].copy()
        start = self.index_before(since)
        stop = min(self.index_before(min(until, now)), self.served)
        stop = max(stop, start)
        frame = self._frame.iloc[start:stop].copy()
        frame["model_version"] = self.version[start:stop]
        frame["score"] = self.score[start:stop]
        frame["shadow_version"] = self.shadow_version[start:stop]
        frame["shadow_score"] = self.shadow_score[start:stop]
        if self.multiclass:  # as serving logs a multi-class model's rows
            frame["prediction"] = self.prediction[start:stop]
            frame["probabilities"] = self._lists(self.version[start:stop].astype(float), start,
                                                 frame.index)
            frame["shadow_probabilities"] = self._lists(self.shadow_version[start:stop], start,
                                                        frame.index)
        else:
            frame["prediction"] = (frame["score"] > THRESHOLD).astype(np.int64)  # as serving
        frame["latency_ms"] = 0.0
        if labels:
            cut = self._cut(labels_as_of)
            at = self._label_at[start:stop]
            seen = at <= cut
            label = np.array(self._label[start:stop], dtype=object)
            label[~seen] = None
            frame["label"] = label
            frame["label_received_at"] = pd.to_datetime(np.where(seen, at, np.datetime64("NaT")),
                                                        utc=True)
            newest = at[seen].max() if seen.any() else None
            self.audit.append(Read(now, pd.Timestamp(cut, tz="UTC").to_pydatetime(),
                                   None if newest is None
                                   else pd.Timestamp(newest, tz="UTC").to_pydatetime(),
                                   int(seen.sum())))
        if version is not None:
            frame = frame[frame["model_version"] == int(version)]
        return frame.reset_index(drop=True)

    # -- hindsight (reports only; never on the decision path) ----------------------------------

    def truth(self, part: slice | np.ndarray) -> np.ndarray:
        """Labels of rows (0/1; multi-class: the class index in the history's class
        order; -1 unlabelled), for the report's realised metrics (hindsight)."""
        return self._y[part]


def _ns(when: datetime) -> np.datetime64:
    return pd.Timestamp(when).tz_convert("UTC").tz_localize(None).to_datetime64().astype(
        "datetime64[ns]")
