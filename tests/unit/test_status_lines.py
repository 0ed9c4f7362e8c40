"""``driftloop status`` lines never say ``None`` where a version belongs: a cycle without a
challenger yet, a failed training (no versions), a rollback with no @previous, and a foreign
alias move, as the controller's /status and the registry fallback hand them over."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from controller.cli import status_lines
from registry import DecisionRecord

AT = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def record(**kw: object) -> dict:
    base = dict(model="churn", kind="gate", outcome="failed", cycle_id="churn-1", decided_at=AT)
    return json.loads(DecisionRecord(**{**base, **kw}).to_json())  # type: ignore[arg-type]


def test_no_none_where_a_version_belongs() -> None:
    data = {"churn": {
        "state": "training", "aliases": {"champion": 1},
        "cycle": {"id": "churn-2", "challenger": None, "reasons": ["drift"], "gate": None},
        "last_decisions": [
            record(reasons=("training failed: exit 1",)),
            record(kind="rollback", outcome="failed", champion_version=1, cycle_id="r-1",
                   reasons=("no @previous version to roll back to",)),
            record(kind="foreign", outcome="moved", alias="champion", champion_version=2,
                   new_champion_version=1, actor="unknown (outside driftloop)",
                   cycle_id="churn-foreign-champion-x")]}}
    lines = status_lines(data)
    text = "\n".join(lines)
    assert "None" not in text, text
    assert "churn: training  @champion=v1" in lines[0]
    assert "no challenger yet" in text
    assert "churn training failed" in text and "gate" not in text
    assert "churn@champion v2 -> v1 (moved outside driftloop)" in text
    registry_only: dict = {"churn": {"state": "unknown", "aliases": {}, "cycle": None,
                               "last_decisions": []}}
    assert status_lines(registry_only) == ["churn: no aliases"]
