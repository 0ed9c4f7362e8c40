"""The demo's timeline: each decision on its own day, rollbacks named as such, the champion's
moves (promotions and rollbacks) taken from the alias history, in simulated days."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from driftloop.demo_timeline import DayRow, Event, champion_moves, format_row, plot, write_json

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
PROMOTED = {"kind": "gate", "outcome": "promoted", "cycle_id": "churn-1", "champion_version": 1,
            "challenger_version": 2, "new_champion_version": 2, "metric": "roc_auc",
            "difference": 0.271, "ci_low": 0.1, "ci_high": 0.4, "n": 240,
            "evidence": "offline_replay", "decided_at": "2026-01-07T00:00:00+00:00"}
ROLLED_BACK = {"kind": "rollback", "outcome": "rolled_back", "cycle_id": "churn-rollback-2",
               "champion_version": 2, "challenger_version": 1, "new_champion_version": 1,
               "metric": "roc_auc", "champion_metric": 0.61, "challenger_metric": 0.8,
               "margin": 0.02, "decided_at": "2026-01-08T00:00:00+00:00"}


def test_events_say_what_happened() -> None:
    promoted, rolled = Event.from_decision(PROMOTED), Event.from_decision(ROLLED_BACK)
    assert promoted.short() == "promoted v2 over v1 (+0.271, n=240)"
    assert "promoted v2 vs v1: roc_auc diff +0.271 CI [+0.100, +0.400] n=240" in promoted.long()
    assert rolled.short() == "rolled back v2 -> v1 (realised 0.610 vs 0.800)"
    assert rolled.long().startswith("rolled_back v2 -> v1: realised roc_auc 0.610 vs 0.800")
    rejected = Event.from_decision({**PROMOTED, "outcome": "rejected", "difference": -0.02})
    assert rejected.short() == "v2 rejected (-0.020, n=240)"


def test_a_row_shows_its_own_events_and_no_other() -> None:
    quiet = DayRow(day=7, phase="drift", requests=800, failed=0, live_version=2, state="shadow")
    busy = DayRow(day=6, phase="drift", requests=800, failed=0, live_version=2,
                  events=[Event.from_decision(PROMOTED), Event.from_decision(ROLLED_BACK)])
    assert format_row(quiet).rstrip().endswith(" -")
    assert format_row(busy).endswith("promoted v2 over v1 (+0.271, n=240); rolled back v2 -> v1 "
                                     "(realised 0.610 vs 0.800)")


HISTORY = [
    {"at": "2025-12-30T10:00:00+00:00", "alias": "champion", "from_version": None,
     "to_version": 1, "kind": "bootstrap", "outcome": "bootstrap"},
    {"at": "2026-01-07T00:00:00+00:00", "alias": "champion", "from_version": 1,
     "to_version": 2, "kind": "gate", "outcome": "promoted"},
    {"at": "2026-01-07T00:00:00+00:00", "alias": "previous", "from_version": None,
     "to_version": 1, "kind": "gate", "outcome": "promoted"},
    {"at": "2026-01-08T00:00:00+00:00", "alias": "champion", "from_version": 2,
     "to_version": 1, "kind": "rollback", "outcome": "rolled_back"},
    {"at": "2026-01-09T00:00:00+00:00", "alias": "champion", "from_version": 1,
     "to_version": 3, "kind": "gate", "outcome": "promoted"},
]


def test_champion_moves_come_from_the_alias_history(tmp_path: Path) -> None:
    moves = champion_moves(HISTORY, day0=DAY0, since=datetime(2026, 1, 4, tzinfo=UTC))
    assert [(m["day"], m["from"], m["to"], m["kind"]) for m in moves] == [
        (6.0, 1, 2, "gate"), (7.0, 2, 1, "rollback"), (8.0, 1, 3, "gate")]
    rows = [DayRow(day=d, phase="drift", requests=1, failed=0, live_version=1, realised=0.7,
                   baseline=0.8) for d in range(3, 9)]
    path = plot(tmp_path / "plot.png", rows, moves, onset=5)
    assert path is not None and path.stat().st_size > 10_000
    write_json(tmp_path / "t.json", rows, seed=7, moves=moves)
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["seed"] == 7 and len(data["days"]) == 6 and data["champion_moves"] == moves


def test_the_ticket_timeline_shows_the_ood_share_in_its_own_column(tmp_path: Path) -> None:
    from driftloop.demo_timeline import header

    row = DayRow(day=5, phase="drift", requests=800, failed=0, live_version=1, status="drift",
                 drift_share=0.57, realised=0.805, baseline=0.862, ood_share=0.14)
    head, line = header("F1", text=True), format_row(row, text=True)
    assert head.split()[6:9] == ["drift", "OOD", "F1"]
    assert line.split()[6:10] == ["0.57", "0.140", "0.805", "0.862"]
    # the columns line up under their headings
    assert line.index("0.140") + len("0.140") == head.index("OOD") + len("OOD")
    assert "OOD" not in header() and "0.140" not in format_row(row)  # churn: as before
    rows = [DayRow(day=d, phase="drift", requests=1, failed=0, live_version=1, realised=0.8,
                   baseline=0.86, ood_share=0.01 * d) for d in range(3, 9)]
    path = plot(tmp_path / "tickets.png", rows, [], onset=5, metric="macro-F1", title="t")
    assert path is not None and path.stat().st_size > 10_000
