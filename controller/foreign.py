"""Alias moves made outside driftloop (the MLflow UI, ``MlflowClient``, another tool), found
and recorded once.

Two ways in: an MLflow registry webhook (``POST /webhooks/mlflow``, controller/webhooks.py)
reports a move as it happens, with its time and delivery id; and the reconcile pass compares
the registry's aliases with what the registry's own records explain (controller/history.py's
replay) whenever the aliases changed since it last looked. Either way the move is checked
against the records, so the controller's own moves (which MLflow reports too) are never
taken for foreign ones, and a move is recorded once: as a decision of kind ``foreign``
(a decision run and a tag on the versions), which the replay then explains, across restarts.

Only ``@champion`` and ``@previous`` are watched: ``@challenger`` is the controller's working
alias (set again on every shadow pass, dropped after a decision). The check is skipped while a
decision is being carried out (phase ``deciding``, an override pending): the records lag the
aliases then.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.history import record_on_versions, replay
from controller.webhooks import AliasEvent
from registry import ALIAS_CHAMPION, ALIAS_PREVIOUS, DecisionRecord, ModelRegistry
from registry.port import version_label as _v

log = logging.getLogger(__name__)
WATCHED = (ALIAS_CHAMPION, ALIAS_PREVIOUS)
ACTOR = "unknown (outside driftloop)"


@dataclass(frozen=True)
class Found:
    model: str
    alias: str
    before: int | None
    after: int | None
    reported: AliasEvent | None         # the webhook delivery that reported it, if one did
    not_before: datetime | None = None  # the last recorded move (MLflow's time is in seconds)


class ForeignMoves:
    def __init__(self, registry: ModelRegistry, clock: Callable[[], datetime],
                 every: float = 300.0) -> None:
        self.registry, self.clock, self.every = registry, clock, every
        self._last: dict[str, float] = {}                # model: when last checked (monotonic)
        self._seen: dict[str, dict[str, int]] = {}       # model: aliases when last checked
        self._reported: dict[tuple[str, str], AliasEvent] = {}
        self._dirty: set[str] = set()                     # models a webhook reported on
        self._ours: dict[str, dict[str, int | None]] = {}
        self._lock = threading.Lock()

    def reported(self, event: AliasEvent) -> None:
        """A webhook's report: the next check looks, and dates the move by it."""
        with self._lock:
            self._reported[(event.model, event.alias)] = event
            self._dirty.add(event.model)

    def ours(self, model: str, aliases: dict[str, int | None]) -> None:
        """Where the controller itself just put these aliases (in memory: after a restart,
        the first look adopts what it finds)."""
        with self._lock:
            self._ours.setdefault(model, {}).update(aliases)

    def check(self, model: str, *, busy: bool) -> list[Found]:
        """Record every watched alias of ``model`` the records do not explain; nothing while
        ``busy`` (a decision under way), nor where an alias is where the controller itself
        put it (``ours``: a move whose record was given up). Looks when a
        webhook reported a move, else every ``every`` seconds; one read when the aliases did
        not change since the last look."""
        if busy:
            return []
        now = time.monotonic()      # a period of the process, not of the decision clock
        with self._lock:
            last = self._last.get(model)
            due = model in self._dirty or last is None or now - last >= self.every
        if not due:
            return []
        aliases = self.registry.aliases(model)
        with self._lock:
            self._last[model] = now
            before = self._seen.get(model)
            if before == aliases and model not in self._dirty:
                return []
            self._dirty.discard(model)
        # no record of a champion yet: the first one is the one seen first (at start-up: now)
        first = (before if before is not None else aliases).get(ALIAS_CHAMPION)
        found = []
        replayed = replay(self.registry, model)
        latest = max((m.at for m in replayed.moves if m.at is not None), default=None)
        odd = {alias: was for alias, was, _ in replayed.unexplained(aliases, first)}
        for alias in WATCHED:            # an adopted alias (no record of it) moved since
            if alias not in odd and not replayed.seen(alias) and before is not None \
                    and before.get(alias) != aliases.get(alias):
                odd[alias] = before.get(alias)
        for alias, was in sorted(odd.items()):
            after = aliases.get(alias)
            if alias not in WATCHED or self._ours.get(model, {}).get(alias, -1) == after:
                continue                                   # the controller's own move
            if before is None and not replayed.seen(alias):
                continue             # found at the first look, no record of it: adopted
            if before is not None and before.get(alias) == after:
                continue             # as at the last look: judged then already
            if not replayed.seen(alias) and before is not None:
                was = before.get(alias)          # the adopted version it moved from
            with self._lock:
                event = self._reported.pop((model, alias), None)
            found.append(Found(model, alias, was, after, event, latest))
        for f in found:
            self._record(f)
        with self._lock:
            self._seen[model] = aliases
            for key in [k for k in self._reported if k[0] == model]:
                del self._reported[key]                  # explained by the records
        return found

    def _record(self, f: Found) -> None:
        now = self.clock()
        e = f.reported
        if e is not None and e.version == f.after:
            after_last = f.not_before + timedelta(milliseconds=1) if f.not_before else e.at
            at, key = max(e.at, after_last), e.delivery_id
            how = (f"reported by an MLflow registry webhook (delivery {e.delivery_id}, "
                   f"sent {e.at.isoformat()}); MLflow does not say who moved it")
        else:
            at, key = now, uuid.uuid4().hex[:12]
            how = (f"noticed by the controller's reconcile pass at {now.isoformat()} (no "
                   "webhook reported it: the move happened before that)")
        record = DecisionRecord(
            model=f.model, kind="foreign", outcome="moved", alias=f.alias,
            cycle_id=f"{f.model}-foreign-{f.alias}-{key}", decided_at=at,
            champion_version=f.before, new_champion_version=f.after, actor=ACTOR,
            triggers=(f"@{f.alias} found at {_v(f.after)} where driftloop's records put "
                      f"{_v(f.before)}",),
            reasons=(f"@{f.alias} moved outside driftloop: {_v(f.before)} -> {_v(f.after)}; "
                     f"{how}",))
        saved = self.registry.record_decision(record)
        record_on_versions(self.registry, saved)
        log.warning("%s@%s moved outside driftloop: %s -> %s (recorded as %s)", f.model,
                    f.alias, _v(f.before), _v(f.after), saved.cycle_id)

