"""Request validation names every bad field; observation counts what is served anyway."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from serving.schema import RecordError, RecordSchema, lone_surrogate

SCHEMA = RecordSchema(("age", "income"), ("city",), {"age": (18.0, 90.0)},
                      {"city": frozenset({"paris", "oslo"})})
GOOD = {"age": 30, "income": 1.5, "city": "paris"}


def problems(data: object) -> dict[str, str]:
    with pytest.raises(RecordError) as caught:
        SCHEMA.parse(data)
    return caught.value.problems


def test_valid_record_and_request_id() -> None:
    record, rid = SCHEMA.parse(GOOD | {"request_id": "abc"})
    assert record == {"age": 30.0, "income": 1.5, "city": "paris"} and rid == "abc"
    record, rid = SCHEMA.parse({"age": None, "income": 2, "city": None})
    assert record["age"] is None and rid is None


@pytest.mark.parametrize("data,expected", [
    ({"income": 1.0, "city": "x"}, {"age"}),
    (GOOD | {"age": "30"}, {"age"}),
    (GOOD | {"age": True}, {"age"}),
    (GOOD | {"age": math.nan, "income": math.inf}, {"age", "income"}),
    (GOOD | {"city": 3}, {"city"}),
    (GOOD | {"zip": "x", "extra": 1}, {"zip", "extra"}),
    (GOOD | {"request_id": 7}, {"request_id"}),
    ({"city": 1, "surprise": 2}, {"age", "income", "city", "surprise"}),
])
def test_invalid_records_name_the_fields(data: dict, expected: set[str]) -> None:
    assert set(problems(data)) == expected


def test_not_an_object() -> None:
    assert problems([GOOD]) == {"record": "expected a JSON object, got array"}


def test_observe_unseen_out_of_range_missing() -> None:
    seen = SCHEMA.observe({"age": 120.0, "income": None, "city": "rome"})
    assert seen.out_of_range == ("age",) and seen.missing == ("income",)
    assert seen.unseen == ("city",)
    assert SCHEMA.observe({"age": 30.0, "income": 9e9, "city": "oslo"}).unseen == ()


def test_schema_from_reference(churn_spec, churn_frame: pd.DataFrame) -> None:
    schema = RecordSchema.from_spec(churn_spec, churn_frame)
    assert schema.features == tuple(churn_spec.features.all)
    low, high = schema.ranges["tenure_months"]
    assert low <= churn_frame["tenure_months"].min() and high >= churn_frame["tenure_months"].max()
    assert "month-to-month" in schema.categories["contract_type"]


SURROGATE = json.loads('"\\ud800"')  # a lone surrogate, as JSON can carry one


@pytest.mark.parametrize("data,field", [
    (GOOD | {"city": "par" + SURROGATE}, "city"),
    (GOOD | {"request_id": SURROGATE}, "request_id"),
    (GOOD | {"age": 10 ** 400}, "age"),
    (GOOD | {"income": -(10 ** 400)}, "income"),
])
def test_hostile_values_name_the_field(data: dict, field: str) -> None:
    assert set(problems(data)) == {field}


def test_a_key_with_a_lone_surrogate_is_named_escaped() -> None:
    found = problems(GOOD | {"x" + SURROGATE: 1})
    assert found == {"x\\ud800": "unknown field (its name holds a lone surrogate "
                                  "(not valid Unicode text))"}
    json.dumps(found).encode("utf-8")  # the answer itself is valid text


def test_valid_non_ascii_text_is_kept() -> None:
    record, _ = SCHEMA.parse(GOOD | {"city": "Zürich 🏔", "request_id": "é"})
    assert record["city"] == "Zürich 🏔"
    assert lone_surrogate(SURROGATE) and not lone_surrogate("🏔") and not lone_surrogate("a")
