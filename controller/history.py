"""The promotion history, rebuilt from the registry's own records.

Every decision leaves two records in the registry: its decision run (``driftloop-decisions``)
and, on each model version it judged, one tag of its own, ``driftloop.decision.<cycle_id>``,
holding that decision as JSON with the version's role in it (promoted, rejected, replaced,
rolled_back, restored, ...). A cycle id is used once, so a later decision never overwrites an
earlier one; the plain ``driftloop.decision`` / ``driftloop.gate_*`` tags stay as the summary
of the *latest* decision, and the version's description says it in words.

``rebuild`` replays those records in time order into alias moves (champion, previous,
challenger): who, when, from, to, why and the numbers. It needs no controller database, so
the history survives losing it. An alias found where the replay does not put it was moved
outside driftloop: it is listed with an unknown time.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from registry import (
    ALIAS_CHALLENGER,
    ALIAS_CHAMPION,
    ALIAS_PREVIOUS,
    TAG_PREFIX,
    DecisionRecord,
    ModelRegistry,
    VersionInfo,
)
from registry.port import decision_title, signed, version_label

DECISION_TAG_PREFIX: Final = TAG_PREFIX + "decision."
DESCRIPTION_MARK: Final = "\n\n---\n**Latest decision**"


def roles(r: DecisionRecord) -> dict[int, str]:
    """Each version a decision judged, and what the decision made of it."""
    out: dict[int, str] = {}
    if r.kind == "foreign":
        if r.champion_version is not None:
            out[r.champion_version] = f"left_{r.alias}_outside_driftloop"
        if r.new_champion_version is not None:
            out[r.new_champion_version] = f"{r.alias}_outside_driftloop"
        return out
    rollback = r.kind in ("rollback", "manual_rollback")
    first, second = r.champion_version, r.challenger_version
    if rollback:
        if first is not None:
            out[first] = "rolled_back" if r.outcome == "rolled_back" else "kept"
        if second is not None and second != first:
            out[second] = "restored" if r.outcome == "rolled_back" else "not_restored"
        return out
    if first is not None and first != second and r.outcome in ("promoted", "rejected"):
        out[first] = "replaced" if r.outcome == "promoted" else "defended"
    if second is not None:
        won = {"promoted": "promoted", "rejected": "rejected"}.get(r.outcome, r.outcome)
        out[second] = ("manually_" + won) if r.kind == "manual_promote" else won
    return out


def version_tags(r: DecisionRecord) -> dict[int, dict[str, str]]:
    """Per version, the one immutable tag of this decision (same cycle: same key, same value)."""
    short = replace(r, reasons=tuple(x[:500] for x in r.reasons[-3:]),
                    triggers=tuple(x[:300] for x in r.triggers[:5]))
    body = json.loads(short.to_json())
    key = DECISION_TAG_PREFIX + r.cycle_id
    return {v: {key: json.dumps({"role": role, **body}, sort_keys=True, separators=(",", ":"))}
            for v, role in roles(r).items()}


def numbers(r: DecisionRecord, *, title: bool = False) -> str:
    """``+0.271, CI [+0.2, +0.3], n=812 roc_auc``; empty when the decision had none. With
    ``title``, what the decision's title already says (a gate's difference) is left out."""
    parts = []
    if r.difference is not None and not (title and r.kind == "gate"):
        parts.append(signed(r.difference))
    if r.ci_low is not None and r.ci_high is not None:
        parts.append(f"CI [{signed(r.ci_low)}, {signed(r.ci_high)}]")
    if r.n is not None:
        parts.append(f"n={r.n}" + (f" {r.metric}" if r.metric else ""))
    parts += [f"{k} {v:.4f}" for k, v in sorted(r.extra.items())]
    return ", ".join(parts)


def description(r: DecisionRecord, version: int, role: str, before: str | None) -> str:
    """The version's description: what it had (its training note), then its latest decision."""
    base = (before or "").split(DESCRIPTION_MARK)[0]
    said = numbers(r)
    return (f"{base}{DESCRIPTION_MARK} ({r.decided_at.isoformat(timespec='seconds')}): "
            f"v{version} **{role.replace('_', ' ')}** in {decision_title(r)}"
            + (f" [{said}]" if said else "")
            + f", by {r.actor}, cycle `{r.cycle_id}`."
            + (f" Why: {r.reasons[-1][:400]}" if r.reasons else ""))


def record_on_versions(registry: ModelRegistry, r: DecisionRecord) -> None:
    """Write the decision's immutable tag and the latest-decision description on each version
    it judged. Idempotent: safe to repeat after a crash."""
    for version, tags in version_tags(r).items():
        registry.set_tags(r.model, version, tags)
        info = registry.get_version(r.model, version)
        registry.set_description(r.model, version,
                                 description(r, version, roles(r)[version], info.description))


@dataclass(frozen=True)
class AliasMove:
    at: datetime | None                  # None: seen moved, time unknown (outside driftloop)
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str
    why: str
    kind: str                            # gate | rollback | manual_* | training | bootstrap | foreign
    outcome: str
    cycle_id: str | None = None
    run_id: str | None = None
    numbers: dict[str, Any] = field(default_factory=dict)
    decision: str = ""                   # the decision run's name, e.g. "churn v2 rejected"
    said: str = ""                       # its numbers in words: "+0.271, CI [...], n=812 ..."

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = None if self.at is None else self.at.isoformat()
        return data


def decisions(registry: ModelRegistry, name: str,
              versions: list[VersionInfo] | None = None) -> list[DecisionRecord]:
    """Every decision on ``name``, oldest first: the decision runs, and any decision known only
    from a version's tags (its run lost)."""
    found: dict[tuple[str, str], DecisionRecord] = {}
    for info in versions if versions is not None else registry.find_versions(name, {}):
        for key, value in info.tags.items():
            if key.startswith(DECISION_TAG_PREFIX):
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    r = DecisionRecord.from_json(value)
                    found.setdefault((r.cycle_id, r.kind), r)
    for r in registry.list_decisions(name, limit=10_000):
        found[(r.cycle_id, r.kind)] = r
    return sorted(found.values(), key=lambda r: r.decided_at)


def _numbers(r: DecisionRecord) -> dict[str, Any]:
    keys = ("metric", "evidence", "n", "champion_metric", "challenger_metric", "difference",
            "ci_low", "ci_high", "margin")
    out = {k: getattr(r, k) for k in keys if getattr(r, k) is not None}
    return {**out, **r.extra}


class _Replay:
    """Aliases as the recorded events move them, one event at a time."""

    def __init__(self, name: str, by_version: dict[int, VersionInfo]) -> None:
        self.name, self.by_version = name, by_version
        self.current: dict[str, int] = {}
        self.moves: list[AliasMove] = []
        self.last: DecisionRecord | None = None          # the latest decision replayed

    def move(self, at: datetime | None, alias: str, to: int | None, **how: Any) -> None:
        before = self.current.get(alias)
        if before == to:
            return
        if to is None:
            self.current.pop(alias, None)
        else:
            self.current[alias] = to
        self.moves.append(AliasMove(at, alias, before, to, **how))

    def bootstrap(self, version: int, by: datetime | None = None) -> None:
        """The first champion, set when its version was made (not after ``by``)."""
        first = self.by_version.get(version)
        at = first.created_at if first is not None else None
        if by is not None and (at is None or at > by):
            at = by
        self.move(at, ALIAS_CHAMPION, version,
                  actor="driftloop train", kind="bootstrap", outcome="set",
                  decision=f"{self.name} v{version} -> champion (bootstrap)",
                  why="first champion (train --alias champion); no decision recorded")

    def trained(self, at: datetime, item: VersionInfo) -> None:
        self.move(at, ALIAS_CHALLENGER, item.version, actor="controller", kind="training",
                  outcome="trained", decision=f"{self.name} v{item.version} trained as challenger",
                  cycle_id=item.tags[TAG_PREFIX + "cycle_id"],
                  run_id=item.run_id, why=item.tags.get(TAG_PREFIX + "trigger", "retrain"))

    def decided(self, r: DecisionRecord) -> None:
        how = {"actor": r.actor, "kind": r.kind, "outcome": r.outcome, "cycle_id": r.cycle_id,
               "run_id": r.run_id, "numbers": _numbers(r), "decision": decision_title(r),
               "said": numbers(r, title=True),
               "why": (r.reasons[-1] if r.reasons else "")[:500]}
        if r.kind == "foreign":                  # recorded by the controller: time known
            if r.alias == ALIAS_CHAMPION and not self.seen(ALIAS_CHAMPION) \
                    and r.champion_version is not None:
                self.bootstrap(r.champion_version, by=r.decided_at)
            if r.alias:
                if r.alias not in self.current and r.champion_version is not None:
                    self.current[r.alias] = r.champion_version   # where it was found first
                self.move(r.decided_at, r.alias, r.new_champion_version, **how)
            return
        if ALIAS_CHAMPION not in self.current and r.champion_version is not None \
                and not any(m.alias == ALIAS_CHAMPION for m in self.moves):
            self.bootstrap(r.champion_version)
        self.last = r
        if r.outcome in ("promoted", "rolled_back") and r.new_champion_version != r.champion_version:
            self.move(r.decided_at, ALIAS_CHAMPION, r.new_champion_version, **how)
            if r.champion_version is not None:
                self.move(r.decided_at, ALIAS_PREVIOUS, r.champion_version, **how)
        elif r.outcome == "failed" and r.new_champion_version not in (None, r.champion_version):
            # a move half done, recorded as it stands: @champion moved, @previous may not have
            self.move(r.decided_at, ALIAS_CHAMPION, r.new_champion_version, **how)
        # the shell drops @challenger when it promotes it (any kind) or rejects it (the gate)
        if r.challenger_version is not None \
                and self.current.get(ALIAS_CHALLENGER) == r.challenger_version \
                and (r.outcome == "promoted" or (r.kind == "gate" and r.outcome in (
                    "rejected", "no_change"))):
            self.move(r.decided_at, ALIAS_CHALLENGER, None, **how)

    def seen(self, alias: str) -> bool:
        return any(m.alias == alias for m in self.moves)

    def unexplained(self, now: dict[str, int], first: int | None = None,
                    ) -> list[tuple[str, int | None, int | None]]:
        """(alias, replayed, actual) for each alias the records do not put where it is. With
        no record of a champion, ``first`` (default: the current one) was set before any
        record (``train --alias champion``): not a move made outside."""
        first = now.get(ALIAS_CHAMPION) if first is None else first
        if not self.seen(ALIAS_CHAMPION) and first is not None:
            self.bootstrap(first)
        r = self.last            # after a failed decision, its half-done moves are its own
        named = {None} if r is None or r.outcome != "failed" else {
            None, r.champion_version, r.challenger_version, r.new_champion_version}
        return [(alias, self.current.get(alias), now.get(alias))
                for alias in sorted(set(now) | set(self.current))
                if now.get(alias) != self.current.get(alias)
                and not (self.current.get(alias) in named and now.get(alias) in named
                         and len(named) > 1)]

    def reconcile(self, now: dict[str, int]) -> None:
        """Moves the records do not explain: the first champion, moves made outside."""
        for alias, _, actual in self.unexplained(now):
            self.move(None, alias, actual, actor="unknown", kind="foreign",
                      outcome="moved", decision=f"{self.name}@{alias} moved outside driftloop",
                      why="moved outside driftloop (time unknown: seen when the history "
                      "was read)")


def replay(registry: ModelRegistry, name: str) -> _Replay:
    """The aliases as the registry's records move them (before comparing with the aliases)."""
    versions = registry.find_versions(name, {})
    events: list[tuple[datetime, int, Any]] = []
    for info in versions:
        if info.created_at is not None and TAG_PREFIX + "cycle_id" in info.tags:
            events.append((info.created_at, 0, info))      # a retrain's version: @challenger
    events += [(r.decided_at, 1, r) for r in decisions(registry, name, versions)]
    events.sort(key=lambda e: (e[0], e[1]))
    replayed = _Replay(name, {v.version: v for v in versions})
    for at, _, item in events:
        if isinstance(item, VersionInfo):
            replayed.trained(at, item)
        else:
            replayed.decided(item)
    return replayed


def rebuild(registry: ModelRegistry, name: str) -> list[AliasMove]:
    """Every alias move of ``name``, oldest first (moves of unknown time last)."""
    replayed = replay(registry, name)
    replayed.reconcile(registry.aliases(name))
    never = datetime.min.replace(tzinfo=UTC)
    return sorted(replayed.moves, key=lambda m: (m.at is None, m.at or never))  # stable


def champion_at(moves: list[AliasMove], at: datetime) -> int | None:
    """The version @champion pointed at, at time ``at``, by the history."""
    champion = None
    for m in moves:
        if m.alias == ALIAS_CHAMPION and m.at is not None and m.at <= at:
            champion = m.to_version
    return champion


def format_move(m: AliasMove) -> str:
    when = "time unknown       " if m.at is None else \
        m.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    line = (f"{when}  @{m.alias:<10} {version_label(m.from_version):>4} -> "
            f"{version_label(m.to_version):<4}  by {m.actor}: "
            f"{m.decision or (m.kind + ' ' + m.outcome)}")
    if m.said:
        line += f" [{m.said}]"
    if m.why:
        line += f"; why: {m.why}"
    if m.cycle_id:
        line += f" (cycle {m.cycle_id})"
    return line


def describe(d: dict[str, Any]) -> str:
    """One stored decision (a ``DecisionRecord`` as JSON) as one readable line."""
    with contextlib.suppress(ValueError, TypeError, KeyError):
        r = DecisionRecord.from_json(json.dumps(d))
        said = numbers(r, title=True)
        return (f"{r.decided_at.isoformat(timespec='seconds')[:19]} {decision_title(r)}"
                + (f" [{said}]" if said else "") + f" by {r.actor}"
                + (f"; {r.reasons[-1]}" if r.reasons else ""))
    return str(d)
