"""Decision titles and ``driftloop status`` lines: readable, and never ``vNone``."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from controller.cli import status_lines
from registry import DecisionRecord

AT = datetime(2026, 3, 1, 9, tzinfo=UTC)


@pytest.mark.parametrize(("kind", "outcome", "versions", "difference", "actor", "title"), [
    ("gate", "promoted", (1, 2, 2), 0.2712, "controller", "churn v2 -> champion (promoted, +0.271)"),
    ("gate", "rejected", (1, 3, 1), -0.0131, "controller", "churn v3 rejected (-0.013)"),
    ("gate", "rejected", (1, 3, 1), None, "controller", "churn v3 rejected"),
    ("gate", "failed", (1, None, 1), None, "controller", "churn training failed"),
    ("gate", "failed", (None, None, None), None, "controller", "churn training failed"),
    ("rollback", "rolled_back", (2, 1, 1), 0.1, "controller", "churn rolled back v2 -> v1"),
    ("manual_rollback", "rolled_back", (2, 1, 1), None, "ana",
     "churn rolled back v2 -> v1 (manual, by ana)"),
    ("rollback", "failed", (2, None, 2), None, "controller", "churn rollback from v2 failed"),
    ("manual_promote", "promoted", (1, 4, 4), None, "ana",
     "churn v4 -> champion (manual, by ana)"),
])
def test_titles(kind: str, outcome: str, versions: tuple, difference: float | None, actor: str,
                title: str) -> None:
    champion, challenger, new = versions
    record = DecisionRecord("churn", kind, outcome, "c", AT, champion, challenger, new,
                            difference=difference, actor=actor)
    assert record.title == title
    assert "None" not in record.title


def test_status_lines_never_print_none_for_a_version() -> None:
    failed = DecisionRecord("churn", "gate", "failed", "c1", AT, None, None, None,
                            reasons=("no training data",))
    data = {"churn": {"state": "training", "aliases": {},
                      "cycle": {"id": "c2", "challenger": None, "reasons": ["drift"],
                                "gate": None},
                      "last_decisions": [json.loads(failed.to_json())]}}
    lines = status_lines(data)
    assert lines[0] == "churn: training  no aliases"
    assert lines[1] == "  cycle c2: no challenger yet, reasons: drift"
    assert "churn training failed" in lines[-1] and "gate failed" not in lines[-1]
    assert not [line for line in lines if "vNone" in line or "None" in line]


def test_old_records_read_and_new_fields_ignored_by_older_readers() -> None:
    data = json.loads(DecisionRecord("churn", "gate", "promoted", "c", AT, 1, 2, 2).to_json())
    data.pop("extra")
    data["from_the_future"] = 1
    assert DecisionRecord.from_json(json.dumps(data)).extra == {}
