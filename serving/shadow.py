"""Shadow scoring and the hand-off of answered predictions to the prediction log.

Every answered prediction's row goes to the log exactly once. Without a challenger it is
appended at once. With one, the row goes through a bounded queue to a worker thread that
scores the challenger on the same validated features, fills ``shadow_version`` and
``shadow_score`` and then appends it; the response never waits for that. A full queue
drops the shadow sample (counted) and logs the row without a shadow score. ``close``
drains the queue, so rows answered before shutdown are all logged.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

from kernel.metrics import THRESHOLD
from serving.metrics import ServingMetrics
from serving.model import LoadedModel

log = logging.getLogger(__name__)

Row = dict[str, Any]


class ShadowLogger:
    """The queue is a deque polled by the worker every ``interval`` seconds: appending
    takes no lock and wakes no thread, so the request path pays almost nothing for it."""

    def __init__(self, sink: Callable[[Row], Any] | None, metrics: ServingMetrics | None, *,
                 queue_size: int = 10_000, interval: float = 0.02) -> None:
        self.sink = sink
        self.metrics = metrics
        self.queue_size = queue_size
        self.interval = interval
        self.items: collections.deque[tuple[list[Row], list[dict[str, Any]], Any]] = (
            collections.deque())
        self.scored = 0
        self.dropped = 0
        self._stop = threading.Event()
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
            if len(self.items) < self.queue_size:
                self.items.append((rows, records, challenger))
                return
            self.dropped += len(rows)
            if self.metrics:
                self.metrics.shadow_dropped_child.inc(len(rows))
        self._emit(rows)

    def _emit(self, rows: list[Row]) -> None:
        if self.sink is not None:
            for row in rows:
                self.sink(row)

    def _score(self, rows: list[Row], records: list[dict[str, Any]],
               challenger: LoadedModel) -> int:
        """Fill the rows' shadow columns; returns how many agree with the champion's class,
        or -1 (rows left without a shadow score) when the challenger's answer is unusable."""
        try:
            if len(records) == 1:
                scores = [float(challenger.score_one(records[0]))]
            else:
                scores = [float(s) for s in challenger.score_many(records)]
            if len(scores) != len(rows):
                raise ValueError(f"{len(scores)} scores for {len(rows)} rows")
            agreed = sum(int(score > THRESHOLD) == row["prediction"]
                         for row, score in zip(rows, scores, strict=True))
        except Exception:
            log.exception("shadow scoring with %s v%s failed", challenger.name, challenger.version)
            return -1
        for row, score in zip(rows, scores, strict=True):
            row["shadow_version"] = challenger.version
            row["shadow_score"] = score
        return agreed

    def _drain(self) -> int:
        """Score and log everything queued now, counting the metrics once per batch. Every
        item taken is logged, whatever scoring or the sink does with another."""
        batch = [self.items.popleft() for _ in range(len(self.items))]
        scored = agreed = 0
        for rows, records, challenger in batch:
            try:
                agreeing = self._score(rows, records, challenger)
            except Exception:  # _score catches its own; this keeps the batch going regardless
                log.exception("shadow worker: scoring %d rows failed", len(rows))
                agreeing = -1
            if agreeing >= 0:
                scored += len(rows)
                agreed += agreeing
            try:
                self._emit(rows)
            except Exception:  # the writer counts its own losses; keep the rest
                log.exception("shadow worker: logging %d rows failed", len(rows))
        if scored:
            self.scored += scored
            if self.metrics:
                self.metrics.shadow_scored_child.inc(scored)
                if agreed:
                    self.metrics.shadow_agreed_child.inc(agreed)
        return len(batch)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._drain():
                    self._stop.wait(self.interval)
            except Exception:  # the sink failed: keep going, the writer counts its own losses
                log.exception("shadow worker error")

    def close(self) -> None:
        """Score and log everything queued, then stop the worker."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        self._drain()
