"""Shadow scoring and the hand-off of answered predictions to the prediction log.

Every answered prediction's row goes to the log exactly once. Without a challenger it is
appended at once. With one, the row goes through a bounded queue to a worker thread that
scores the challenger on the same validated features, fills ``shadow_version`` and
``shadow_score`` and then appends it; the response never waits for that. A full queue
drops the shadow sample (counted) and logs the row without a shadow score. ``close``
drains the queue, so rows answered before shutdown are all logged.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from serving.metrics import ServingMetrics
from serving.model import LoadedModel

log = logging.getLogger(__name__)

Row = dict[str, Any]
_STOP = object()


class ShadowLogger:
    def __init__(self, sink: Callable[[Row], Any] | None, metrics: ServingMetrics | None, *,
                 queue_size: int = 10_000) -> None:
        self.sink = sink
        self.metrics = metrics
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.scored = 0
        self.dropped = 0
        self._thread: threading.Thread | None = None

    def start(self) -> ShadowLogger:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
            self._thread.start()
        return self

    def submit(self, rows: list[Row], records: list[dict[str, Any]],
               challenger: LoadedModel | None) -> None:
        """Called on the request path: never blocks."""
        if challenger is not None and self._thread is not None:
            try:
                self.queue.put_nowait((rows, records, challenger))
                return
            except queue.Full:
                self.dropped += len(rows)
                if self.metrics:
                    self.metrics.shadow_dropped_child.inc(len(rows))
        self._emit(rows)

    def _emit(self, rows: list[Row]) -> None:
        if self.sink is not None:
            for row in rows:
                self.sink(row)

    def _score(self, rows: list[Row], records: list[dict[str, Any]],
               challenger: LoadedModel) -> None:
        try:
            if len(records) == 1:
                scores = [challenger.score_one(records[0])]
            else:
                scores = [float(s) for s in challenger.score_many(records)]
        except Exception:
            log.exception("shadow scoring with %s v%s failed", challenger.name, challenger.version)
            return
        agreed = 0
        for row, score in zip(rows, scores, strict=True):
            row["shadow_version"] = challenger.version
            row["shadow_score"] = score
            agreed += int(score > 0.5) == row["prediction"]
        self.scored += len(rows)
        if self.metrics:
            self.metrics.shadow_scored_child.inc(len(rows))
            if agreed:
                self.metrics.shadow_agreed_child.inc(agreed)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            rows, records, challenger = item
            try:
                self._score(rows, records, challenger)
            finally:
                self._emit(rows)

    def close(self) -> None:
        """Score and log everything queued, then stop the worker."""
        if self._thread is not None:
            self.queue.put(_STOP)
            self._thread.join(timeout=60)
            self._thread = None
        while True:  # anything left (the worker died or timed out): log it unscored
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                self._emit(item[0])
