"""Shadow scoring and the hand-off of answered predictions to the prediction log.

Every answered prediction's row goes to the log exactly once. Without a challenger it is
appended at once. With one, a *uniform sample* of requests is shadowed: a request is
shadowed when the hash of its request id falls under the current sample rate (the prediction
log's own hash, ``keep_sample``, so a log sampled by request id keeps the shadowed rows).
Those go through a bounded queue to a worker thread that scores the challenger on the same
validated features, fills ``shadow_version`` and ``shadow_score`` (a multi-class
challenger: its top probability, and ``shadow_probabilities`` every class's in its own
version's class order, which the gate aligns by class name) and then appends the rows;
the others are appended at once. The response never waits for the challenger, and the worker
never takes more than its share of the process's CPU (the event loop's GIL): after each turn
it rests for as long as the turn took times ``(1 - cpu_share) / cpu_share``, so a slow or
new challenger costs the champion's requests at most that share even before the rate has
adapted.

The rate is derived from capacity, never from whether the queue happens to have room (which
shadowed quiet periods fully and bursts hardly at all, so the gate's pairs over-represented
quiet traffic). Every ``adjust_every`` seconds the worker measures the challenger's cost per
row and the offered load, and sets the rate to what the challenger can keep up with on
``cpu_share`` of one core (``DRIFTLOOP_SERVING_SHADOW_CPU_SHARE``), against the load
averaged over ``horizon`` seconds (a running mean until that much has been seen): slow
enough that a burst and the quiet after it are sampled at the same rate, the queue absorbing
the burst (a new challenger is measured afresh, from a rate of 1). The rate rises at most
25% per adjustment and halves while the queue is over half full (a safety valve, only hit
when the load itself rose). A request that still finds the queue full is dropped from the
sample (counted); ``driftloop_shadow_sample_rate`` is the share actually queued (averaged as
the load is), ``driftloop_shadow_target_rate`` the rate requests are drawn at.

A challenger whose schema refuses a request the champion accepted (serving/schema.py: a
dropped, added or retyped feature) is not scored on it: the row is logged without a shadow
score and counted in ``driftloop_shadow_refused_total``, the requests clients would see
refused after a promotion. ``close`` drains the queue, so rows answered before shutdown are
all logged.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from kernel.metrics import THRESHOLD
from monitoring.predlog import keep_sample
from serving.metrics import ServingMetrics
from serving.model import LoadedModel, top
from serving.schema import RecordError

log = logging.getLogger(__name__)

Row = dict[str, Any]
Item = tuple[list[Row], list[dict[str, Any]], Any]


class ShadowLogger:
    """The queue is a deque polled by the worker every ``interval`` seconds: appending
    takes no lock and wakes no thread, so the request path pays almost nothing for it.
    ``adaptive=False`` is the old behaviour (shadow everything the queue has room for),
    kept for comparison. ``clock`` is injectable so a test can simulate a slow challenger."""

    def __init__(self, sink: Callable[[Row], Any] | None, metrics: ServingMetrics | None, *,
                 queue_size: int = 10_000, interval: float = 0.02, adaptive: bool = True,
                 cpu_share: float = 0.02, horizon: float = 3600.0, adjust_every: float = 5.0,
                 min_rate: float = 0.001, batch: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sink = sink
        self.metrics = metrics
        self.queue_size = queue_size
        self.interval = interval
        self.adaptive = adaptive
        if not 0 < cpu_share <= 1:
            raise ValueError(f"cpu_share must be in (0, 1], got {cpu_share}")
        self.cpu_share = cpu_share
        self.horizon = horizon
        self.adjust_every = adjust_every
        self.min_rate = min_rate
        self.batch = batch
        self.clock = clock
        self.items: collections.deque[Item] = collections.deque()
        self.rate = 1.0              # the share of requests shadowed (by request-id hash)
        self.achieved: float | None = None  # the share queued, averaged over ``horizon``
        self.load: float | None = None  # offered rows per second, averaged over ``horizon``
        self.cost: float | None = None  # challenger seconds per row
        # running totals: the request path adds (one thread: the event loop), the worker reads
        self.offered = self.selected = self.dropped = 0
        self.scored = self.refused = 0
        self._busy = 0.0
        self._busy_rows = 0
        self._queued = 0.0  # queued rows per second, averaged as ``load``
        self._seen = 0.0
        self._last: float | None = None
        self._marks = (0, 0, 0, 0.0, 0)  # offered, selected, dropped, busy, busy rows
        self._challenger: Any = None  # the one submitted last; the one measured:
        self._measured: Any = None
        self._manual = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, *, thread: bool = True) -> ShadowLogger:
        """Start the worker; ``thread=False``: the caller drives it with :meth:`step`."""
        if not thread:
            self._manual = True
        elif self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
            self._thread.start()
        return self

    def submit(self, rows: list[Row], records: list[dict[str, Any]],
               challenger: LoadedModel | None) -> None:
        """Called on the request path: never blocks."""
        if challenger is None or (self._thread is None and not self._manual):
            self._emit(rows)
            return
        self.offered += len(rows)
        self._challenger = challenger
        rate = self.rate
        if rate < 1.0:
            keep = [i for i, r in enumerate(rows) if keep_sample(r["request_id"], rate)]
            if len(keep) < len(rows):
                kept = set(keep)
                self._emit([r for i, r in enumerate(rows) if i not in kept])
                if not keep:
                    return
                rows, records = [rows[i] for i in keep], [records[i] for i in keep]
        self.selected += len(rows)
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

    def adapt(self) -> None:
        """Every ``adjust_every`` seconds (the worker calls it each turn): measure the offered
        load and the challenger's cost, set the rate from them, publish the rates."""
        now = self.clock()
        if self._challenger is not self._measured:  # a new challenger: measure afresh
            self._measured = self._challenger
            self.rate, self.achieved, self.load, self.cost = 1.0, None, None, None
            self._seen, self._queued, self._last = 0.0, 0.0, None
        if self._last is None:
            self._last = now
            self._marks = (self.offered, self.selected, self.dropped, self._busy, self._busy_rows)
            return
        dt = now - self._last
        if dt < self.adjust_every:
            return
        offered, selected, dropped, busy, busy_rows = self._marks
        n = self.offered - offered
        queued = self.selected - selected - (self.dropped - dropped)
        self._seen += dt
        alpha = max(1.0 - math.exp(-dt / self.horizon), dt / self._seen)
        self.load = n / dt if self.load is None else self.load + alpha * (n / dt - self.load)
        self._queued = self._queued + alpha * (queued / dt - self._queued)
        if self.load > 0:
            self.achieved = self._queued / self.load
        if self._busy_rows > busy_rows:
            cost = (self._busy - busy) / (self._busy_rows - busy_rows)
            self.cost = cost if self.cost is None else self.cost + alpha * (cost - self.cost)
        self._last = now
        self._marks = (self.offered, self.selected, self.dropped, self._busy, self._busy_rows)
        if self.adaptive:
            self.rate = self._next_rate()
        if self.metrics:
            self.metrics.shadow_offered_child.inc(n)
            self.metrics.shadow_target_rate_child.set(self.rate)
            if self.achieved is not None:
                self.metrics.shadow_sample_rate_child.set(self.achieved)

    def _next_rate(self) -> float:
        target = 1.0
        if self.cost is not None and self.cost > 0 and self.load:
            target = min(1.0, self.cpu_share / (self.cost * self.load))
        depth = len(self.items) / self.queue_size
        if depth > 0.5:
            target = min(target, self.rate / 2)
        return max(self.min_rate, min(target, self.rate * 1.25))

    def _accepted(self, rows: list[Row], records: list[dict[str, Any]],
                  challenger: LoadedModel) -> tuple[list[Row], list[dict[str, Any]]]:
        """The rows and records the challenger's schema accepts; the others are counted."""
        schema = getattr(challenger, "schema", None)
        if schema is None:
            return rows, records
        accepted = []
        for i, record in enumerate(records):
            try:
                schema.parse(record, allow_request_id=False)
            except RecordError:
                continue
            accepted.append(i)
        refused = len(records) - len(accepted)
        if not refused:
            return rows, records
        self.refused += refused
        if self.metrics:
            self.metrics.shadow_refused_child.inc(refused)
        return [rows[i] for i in accepted], [records[i] for i in accepted]

    def _fill(self, rows: list[Row], records: list[dict[str, Any]], challenger: LoadedModel,
              *, strict: bool = False) -> tuple[int, int]:
        """Fill the rows' shadow columns; returns (rows scored, how many agree with the
        champion's class). A challenger whose answer is unusable leaves the rows without a
        shadow score: (0, 0), or raises with ``strict``."""
        if not rows:
            return 0, 0
        classes = getattr(challenger, "classes", None)
        try:
            if classes is not None:
                return self._fill_classes(rows, records, challenger, classes)
            scores = _scores(challenger, records)
            if len(scores) != len(rows):
                raise ValueError(f"{len(scores)} scores for {len(rows)} rows")
            agreed = sum(int(score > THRESHOLD) == row["prediction"]
                         for row, score in zip(rows, scores, strict=True))
        except Exception:
            if strict:
                raise
            log.exception("shadow scoring with %s v%s failed", challenger.name, challenger.version)
            return 0, 0
        for row, score in zip(rows, scores, strict=True):
            row["shadow_version"] = challenger.version
            row["shadow_score"] = score
        return len(rows), agreed

    @staticmethod
    def _fill_classes(rows: list[Row], records: list[dict[str, Any]], challenger: LoadedModel,
                      classes: tuple[str, ...]) -> tuple[int, int]:
        """A multi-class challenger: ``shadow_probabilities`` in its own version's class
        order, ``shadow_score`` the top one; it agrees when its top class (by name) is the
        champion's ``prediction``. Raises (the rows untouched) when its answer is unusable."""
        matrix = _probabilities(challenger, records)
        if len(matrix) != len(rows) or any(len(p) != len(classes) for p in matrix):
            raise ValueError(f"{len(matrix)} probability rows for {len(rows)} rows and "
                             f"{len(classes)} classes")
        best = [top(p) for p in matrix]
        agreed = sum(classes[i] == row["prediction"] for row, i in zip(rows, best, strict=True))
        for row, proba, i in zip(rows, matrix, best, strict=True):
            row["shadow_version"] = challenger.version
            row["shadow_score"] = proba[i]
            row["shadow_probabilities"] = proba
        return len(rows), agreed

    def _score(self, group: list[Item]) -> tuple[int, int]:
        """Score the queued items of one challenger: without a fast path in one vectorised
        call (item by item when that call fails, so one bad item spoils only itself)."""
        challenger = group[0][2]
        parts = [self._accepted(rows, records, challenger) for rows, records, _ in group]
        if len(parts) > 1 and getattr(challenger, "fast", None) is None:
            rows = [r for part, _ in parts for r in part]
            records = [r for _, part in parts for r in part]
            try:
                return self._fill(rows, records, challenger, strict=True)
            except Exception:
                log.warning("shadow scoring %d rows in one call failed; scoring them item by "
                            "item", len(rows), exc_info=True)
        scored = agreed = 0
        for rows, records in parts:
            done, agreeing = self._fill(rows, records, challenger)
            scored, agreed = scored + done, agreed + agreeing
        return scored, agreed

    def step(self, limit: int | None = None) -> int:
        """One turn of the worker: adapt the rate, then score and log up to ``limit`` queued
        items (all of them: ``None``), those of one challenger together, counting the
        metrics once per turn. Every item taken is logged, whatever scoring or the sink does
        with another."""
        self.adapt()
        count = len(self.items) if limit is None else min(limit, len(self.items))
        batch = [self.items.popleft() for _ in range(count)]
        scored = agreed = 0
        for group in _groups(batch):
            started = self.clock()
            try:
                done, agreeing = self._score(group)
            except Exception:  # _fill catches its own; this keeps the batch going regardless
                log.exception("shadow worker: scoring %d items failed", len(group))
                done = agreeing = 0
            self._busy += self.clock() - started
            rows = [r for item in group for r in item[0]]
            self._busy_rows += len(rows)
            scored += done
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
            started = time.thread_time()
            try:
                worked = self.step(self.batch)
            except Exception:  # the sink failed: keep going, the writer counts its own losses
                log.exception("shadow worker error")
                worked = 1
            spent = time.thread_time() - started
            self._stop.wait(rest_after(spent, self.cpu_share, self.interval) if worked
                            else self.interval)

    def close(self) -> None:
        """Score and log everything queued, then stop the worker."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        self._manual = False
        self.step()


def _groups(batch: list[Item]) -> list[list[Item]]:
    """Consecutive items of one challenger, grouped (scored together)."""
    out: list[list[Item]] = []
    for item in batch:
        if out and out[-1][0][2] is item[2]:
            out[-1].append(item)
        else:
            out.append([item])
    return out


def _scores(challenger: Any, records: list[dict[str, Any]]) -> list[float]:
    """The challenger's scores: row by row on its compiled fast path (tens of microseconds
    a row), else one vectorised ``predict_proba`` for the whole batch (one DataFrame)."""
    if getattr(challenger, "fast", None) is not None or len(records) == 1:
        return [float(challenger.score_one(r)) for r in records]
    return [float(s) for s in challenger.score_many(records)]


def _probabilities(challenger: Any, records: list[dict[str, Any]]) -> list[list[float]]:
    """A multi-class challenger's class probabilities, as ``_scores``: row by row on its
    fast path, else one ``predict_proba`` for the batch."""
    if getattr(challenger, "fast", None) is not None or len(records) == 1:
        return [[float(p) for p in challenger.proba_one(r)] for r in records]
    return [[float(p) for p in row] for row in challenger.proba_many(records).tolist()]


def rest_after(spent: float, cpu_share: float, interval: float) -> float:
    """Seconds the worker rests after a turn that took ``spent`` CPU seconds, so that it
    uses at most ``cpu_share`` of a core: ``spent / (spent + rest) <= cpu_share``."""
    return max(interval, spent * (1.0 - cpu_share) / cpu_share)
