"""`driftloop promote --allow-schema-change` sends the named changes with the override."""

from __future__ import annotations

from typing import Any

import pytest

from controller import cli


def test_allow_schema_change_is_sent_only_when_given(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(cli, "_call", lambda method, path, body=None: sent.append(body) or {})
    monkeypatch.setattr(cli, "_report", lambda answer: None)
    cli.promote(3, reason="new feature set", model="churn", actor="ana",
                allow_schema_change="dropped:support_tickets")
    cli.promote(3, reason="plain", model="churn", actor="ana")
    assert sent[0]["allow_schema_change"] == "dropped:support_tickets"
    assert sent[0]["version"] == 3 and sent[0]["actor"] == "ana"
    assert "allow_schema_change" not in sent[1]
