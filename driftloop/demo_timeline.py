"""The demo's timeline: one row per simulated day, its table, its JSON and its plot.

Each row holds what happened *that* day: the traffic, the day's drift verdict, the controller's
state after it, the trigger of a cycle started that day and the decisions made that day
(promotion, rejection, rollback), each shown once, on its own day. Nothing in a row is a
wall-clock stamp: two runs with the same seed write the same rows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

LEGEND = (
    "  live: the version that answered most of the day's requests;  verdict: the day's drift "
    "check\n"
    "  drift: share of the feature columns that drifted;  AUC: realised ROC AUC of the live "
    "model\n"
    "    on the day's labels;  base: that version's validation AUC (its baseline)\n"
    "  controller: its state after the day;  trigger: why a cycle started that day;  event: "
    "the\n"
    "    day's decisions (promoted, rejected, rolled back), each on the day it was made"
)
#: The ticket demo's legend: macro-F1 for AUC, and the day's out-of-distribution share.
TEXT_LEGEND = (
    LEGEND.replace("AUC: realised ROC AUC", "F1: realised macro-F1")
    .replace("validation AUC", "validation macro-F1")
    + "\n  OOD: share of the day's ticket texts out of distribution by the live version's "
    "text profile\n    (the drift check's count, the serving app's driftloop_text_ood_total)"
)


@dataclass
class Event:
    """One decision, as the controller recorded it (simulated times)."""

    kind: str                     # gate | rollback | manual_promote | manual_rollback | ...
    outcome: str                  # promoted | rejected | rolled_back | no_change | failed | ...
    cycle_id: str
    decided_at: str
    champion: int | None          # the champion it judged (for a rollback: the one rolled back)
    challenger: int | None        # the challenger (for a rollback: the version restored)
    new_champion: int | None
    metric: str | None = None
    difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    evidence: str | None = None
    champion_metric: float | None = None
    challenger_metric: float | None = None
    margin: float | None = None
    reasons: list[str] = field(default_factory=list)

    @classmethod
    def from_decision(cls, d: dict[str, Any]) -> Event:
        return cls(kind=str(d.get("kind", "?")), outcome=str(d.get("outcome", "?")),
                   cycle_id=str(d.get("cycle_id", "")), decided_at=str(d.get("decided_at", "")),
                   champion=d.get("champion_version"), challenger=d.get("challenger_version"),
                   new_champion=d.get("new_champion_version"), metric=d.get("metric"),
                   difference=d.get("difference"), ci_low=d.get("ci_low"),
                   ci_high=d.get("ci_high"), n=d.get("n"), evidence=d.get("evidence"),
                   champion_metric=d.get("champion_metric"),
                   challenger_metric=d.get("challenger_metric"), margin=d.get("margin"),
                   reasons=[str(r) for r in d.get("reasons") or []])

    @property
    def rollback(self) -> bool:
        return self.kind in ("rollback", "manual_rollback")

    def short(self) -> str:
        """The table's event cell: ``promoted v2 over v1 (+0.271, n=240)``."""
        v = _v
        if self.rollback:
            if self.outcome != "rolled_back":
                return f"rollback of {v(self.champion)} {self.outcome}"
            return (f"rolled back {v(self.champion)} -> {v(self.new_champion)} (realised "
                    f"{_num(self.champion_metric)} vs {_num(self.challenger_metric)})")
        numbers = ", ".join(x for x in (_num(self.difference, "+.3f", ""),
                                        f"n={self.n}" if self.n else "") if x)
        numbers = f" ({numbers})" if numbers else ""
        if self.outcome == "promoted":
            return f"promoted {v(self.challenger)} over {v(self.champion)}{numbers}"
        if self.challenger is None:
            return f"cycle {self.outcome}"
        return f"{v(self.challenger)} {self.outcome}{numbers}"

    def long(self) -> str:
        """The summary's line: ``promoted v2 vs v1: roc_auc diff +0.271 CI [...] n=240 (...)``."""
        if self.rollback:
            text = (f"{self.outcome} v{self.champion} -> v{self.new_champion}: realised "
                    f"{self.metric or ''} {_num(self.champion_metric)} vs "
                    f"{_num(self.challenger_metric)} before it (margin {_num(self.margin)})")
        else:
            text = (f"{self.outcome} v{self.challenger} vs v{self.champion}: {self.metric or ''} "
                    f"diff {_num(self.difference, '+.3f')} CI [{_num(self.ci_low, '+.3f')}, "
                    f"{_num(self.ci_high, '+.3f')}] n={self.n} ({self.evidence})")
        if self.reasons:
            text += "\n    reasons: " + "; ".join(self.reasons)
        return text


@dataclass
class DayRow:
    day: int
    phase: str
    requests: int
    failed: int
    live_version: int | None
    status: str = "-"
    drift_share: float | None = None
    realised: float | None = None
    baseline: float | None = None
    trigger: str = "-"
    state: str = "-"
    events: list[Event] = field(default_factory=list)
    ood_share: float | None = None   # text models: the day's out-of-distribution share


def header(metric: str = "AUC", *, text: bool = False) -> str:
    """The table's header; ``text`` adds the OOD column (the ticket demo)."""
    ood = f" {'OOD':>5}" if text else ""
    return (f"{'day':>3}  {'phase':<7} {'reqs':>5} {'fail':>4}  {'live':>4}  {'verdict':<17} "
            f"{'drift':>5}{ood}  {metric:>5} {'base':>5}  {'controller':<10} {'trigger':<22} "
            "event")


HEADER = header()


def format_row(r: DayRow, *, text: bool = False) -> str:
    flagged = "!" if r.status in ("drift", "degraded") else " "
    events = "; ".join(e.short() for e in r.events) or "-"
    ood = f" {_num(r.ood_share, '.3f'):>5}" if text else ""
    return (f"{r.day:>3}  {r.phase:<7} {r.requests:>5} {r.failed:>4}  {_v(r.live_version):>4}  "
            f"{flagged}{r.status:<16} {_num(r.drift_share, '.2f'):>5}{ood}  "
            f"{_num(r.realised):>5} {_num(r.baseline):>5}  {r.state:<10} {r.trigger[:22]:<22} "
            f"{events}")


def write_json(path: Path, rows: list[DayRow], *, seed: int, moves: list[dict[str, Any]]) -> None:
    """``<home>/reports/demo-timeline.json``: the rows and the champion's moves, no wall time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"seed": seed, "days": [asdict(r) for r in rows],
                                "champion_moves": moves}, indent=2, sort_keys=True) + "\n")


def champion_moves(history: list[dict[str, Any]], *, day0: datetime,
                   since: datetime) -> list[dict[str, Any]]:
    """The @champion moves of ``driftloop history --json`` made from ``since`` on, each with
    its simulated day counted from ``day0`` (a decision at the end of day d is at d + 1)."""
    out = []
    for m in history:
        if m.get("alias") != "champion" or m.get("from_version") is None or not m.get("at"):
            continue
        at = datetime.fromisoformat(m["at"])
        if at < since:
            continue
        out.append({"day": (at - day0).total_seconds() / 86_400, "at": m["at"],
                    "from": m["from_version"], "to": m.get("to_version"),
                    "kind": m.get("kind"), "outcome": m.get("outcome")})
    return out


def plot(path: Path, rows: list[DayRow], moves: list[dict[str, Any]], *,
         onset: int, metric: str = "ROC AUC",
         title: str = "driftloop demo: concept drift, retrain, shadow gate, promotion",
         ) -> Path | None:
    """The realised metric per day, the live version's baseline, the onset, and a marker at
    each promotion and rollback, at the end of the day it was decided on; when the rows carry
    an OOD share (text models), that too, on its own axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(r.day, r.realised) for r in rows if r.realised is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
            label=f"realised {metric} of the live model")
    base = [(r.day, r.baseline) for r in rows if r.baseline is not None]
    if base:
        ax.step([b[0] for b in base], [b[1] for b in base], where="mid", color="grey",
                linestyle=":", label=f"the live version's validation {metric} (baseline)")
    ax.axvline(onset - 0.5, color="red", linestyle="--", label="drift onset")
    for m in moves:
        x = m["day"] - 0.5  # decided at the end of day d: between d and d + 1
        rollback = "rollback" in str(m.get("kind")) or m.get("outcome") == "rolled_back"
        ax.axvline(x, color="darkorange" if rollback else "green",
                   linestyle=":" if rollback else "-.",
                   label=f"{'rollback' if rollback else 'promotion'}: v{m['from']} -> v{m['to']}")
    ax.set_xlabel("simulated day")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ood = [(r.day, r.ood_share) for r in rows if r.ood_share is not None]
    if not ood:
        ax.legend(loc="lower left", fontsize=8)
    else:
        share = ax.twinx()
        share.bar([o[0] for o in ood], [o[1] for o in ood], width=0.4, alpha=0.3,
                  color="purple", label="out-of-distribution share of the day's texts")
        share.set_ylabel("OOD share")
        share.set_ylim(0, max(0.05, 1.5 * max(o[1] for o in ood)))
        ax.set_zorder(share.get_zorder() + 1)  # the lines over the bars
        ax.patch.set_visible(False)
        handles, labels = ax.get_legend_handles_labels()
        more, names = share.get_legend_handles_labels()
        fig.set_size_inches(8, 5.2)
        ax.legend(handles + more, labels + names, loc="upper center", fontsize=8, ncol=2,
                  bbox_to_anchor=(0.5, -0.14))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _v(version: int | None) -> str:
    return "-" if version is None else f"v{version}"


def _num(x: float | None, fmt: str = ".3f", missing: str = "-") -> str:
    return missing if x is None else format(x, fmt)
