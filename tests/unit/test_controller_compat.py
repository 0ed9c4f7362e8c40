"""Schema compatibility (controller/compat.py): what of the champion's accepted requests a
challenger's schema would refuse, decided from what serving refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.compat import Compatibility, InputSchema, SchemaChange, compare, signature_kinds

CHAMPION = InputSchema({"tenure": "numerical", "tickets": "numerical", "plan": "categorical"},
                       {"plan": frozenset({"basic", "pro", "max"})})


def schema(kinds: dict, categories: dict | None = None, signature: dict | None = None):
    return InputSchema(kinds, categories or {}, signature)


@pytest.mark.parametrize(("challenger", "names"), [
    (CHAMPION, ()),
    (schema({"tenure": "numerical", "plan": "categorical"}), ("dropped:tickets",)),
    (schema({"tenure": "numerical", "tickets": "numerical", "plan": "categorical",
             "region": "categorical"}), ("added:region",)),
    (schema({"tenure": "numerical", "tickets": "numerical", "plan_name": "categorical"}),
     ("renamed:plan->plan_name",)),
    (schema({"tenure": "numerical", "tickets": "categorical", "plan": "categorical"}),
     ("retyped:tickets:numerical->categorical",)),
    (schema({"tenure": "numerical", "calls": "numerical", "region": "numerical",
             "plan": "categorical"}), ("dropped:tickets", "added:calls", "added:region")),
    (schema({"tickets": "numerical", "plan": "categorical", "region": "categorical"}),
     ("dropped:tenure", "added:region")),  # different kinds: not a rename
])
def test_changes_that_would_refuse_the_champions_requests(challenger: InputSchema,
                                                          names: tuple[str, ...]) -> None:
    result = compare(CHAMPION, challenger)
    assert result.names == names
    assert result.compatible == (names == ())


def test_narrowed_categories_are_served_so_only_noted() -> None:
    narrow = schema(dict(CHAMPION.kinds), {"plan": frozenset({"basic", "pro"})})
    result = compare(CHAMPION, narrow)
    assert result.compatible
    assert result.notes == ("categories of 'plan' narrowed by 1 (served as unseen, counted)",)


def test_signatures_find_a_retype_the_specs_do_not_show() -> None:
    old = schema(dict(CHAMPION.kinds), signature={"tenure": "numerical", "tickets": "numerical"})
    new = schema(dict(CHAMPION.kinds), signature={"tenure": "numerical",
                                                  "tickets": "categorical"})
    assert compare(old, new).names == ("retyped:tickets:numerical->categorical",)
    assert compare(old, schema(dict(CHAMPION.kinds))).compatible  # one signature: specs decide


def test_reason_names_every_change_and_how_to_promote_anyway() -> None:
    result = Compatibility((SchemaChange("dropped", "tickets"),
                            SchemaChange("added", "region")))
    reason = result.reason(3, 2)
    assert reason.startswith("v3 would refuse requests champion v2 accepts: feature 'tickets' "
                             "dropped")
    assert "allow_schema_change='dropped:tickets,added:region'" in reason
    assert result.unacknowledged(["dropped:tickets"]) == (SchemaChange("added", "region"),)
    assert result.unacknowledged(["dropped:tickets", "added:region"]) == ()


def test_signature_of_an_mlflow_model_file(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text(
        "signature:\n  inputs: '[{\"type\": \"double\", \"name\": \"tenure\", \"required\": true},"
        " {\"type\": \"string\", \"name\": \"plan\", \"required\": true}]'\n")
    assert signature_kinds(tmp_path) == {"tenure": "numerical", "plan": "categorical"}
    assert signature_kinds(tmp_path / "missing") is None
