"""kernel.segments: the segment key of each row, by day of week, hour bucket, weekend or a
categorical feature, UTC, missing values as ``__missing__``."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from kernel.errors import DataError, SpecError
from kernel.segments import MISSING, segment_keys, time_segment_keys
from kernel.spec import DatasetSpec, SegmentSettings, parse_spec

BASE: dict[str, Any] = dict(model_name="m", target="y", timestamp_column="t",
                            features={"numerical": ["a"], "categorical": ["plan"]})


def _spec(**segments: Any) -> DatasetSpec:
    return parse_spec({**BASE, "drift": {"segments": segments}})


# 2026-11-30 is a Monday; 2026-12-05 a Saturday, 2026-12-06 a Sunday.
STAMPS = ["2026-11-30T00:00:00Z", "2026-12-01T05:59:59Z", "2026-12-02T06:00:00Z",
          "2026-12-03T13:30:00", "2026-12-04T23:59:59+00:00", "2026-12-05T12:00:00Z",
          "2026-12-06T18:00:00Z", None, "not a time"]


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"t": STAMPS, "a": range(len(STAMPS)),
                         "plan": ["basic", "pro", None, "basic", 3, "pro", "basic", "pro",
                                  float("nan")]},
                        index=range(10, 10 + len(STAMPS)))


def test_weekend_against_weekday() -> None:
    keys = segment_keys(_frame(), _spec(by="weekend"))
    assert list(keys) == ["weekday"] * 5 + ["weekend"] * 2 + [MISSING] * 2
    assert list(keys.index) == list(_frame().index) and keys.name == "segment"


def test_day_of_week() -> None:
    keys = segment_keys(_frame(), _spec(by="day_of_week"))
    assert list(keys) == ["mon", "tue", "wed", "thu", "fri", "sat", "sun", MISSING, MISSING]


def test_hour_buckets() -> None:
    keys = segment_keys(_frame(), _spec(by="hour_of_day", hour_buckets=6))
    assert list(keys) == ["00-06", "00-06", "06-12", "12-18", "18-24", "12-18", "18-24",
                          MISSING, MISSING]
    hourly = segment_keys(_frame(), _spec(by="hour_of_day", hour_buckets=1))
    assert list(hourly[:5]) == ["00-01", "05-06", "06-07", "13-14", "23-24"]


def test_timestamps_in_another_zone_are_read_as_utc() -> None:
    # 23:30 on Friday in UTC-5 is 04:30 on Saturday in UTC.
    frame = pd.DataFrame({"t": ["2026-12-04T23:30:00-05:00"]})
    assert list(segment_keys(frame, _spec(by="weekend"))) == ["weekend"]
    assert list(segment_keys(frame, _spec(by="hour_of_day"))) == ["00-06"]


def test_parsed_timestamps_and_another_column() -> None:
    frame = pd.DataFrame({"ts": pd.to_datetime(["2026-12-05T01:00:00", "2026-12-07T09:00:00"],
                                               utc=True)})
    assert list(segment_keys(frame, _spec(by="day_of_week"), column="ts")) == ["sat", "mon"]


def test_categorical_values_as_text() -> None:
    keys = segment_keys(_frame(), _spec(by="plan"), column="ignored")
    assert list(keys) == ["basic", "pro", MISSING, "basic", "3", "pro", "basic", "pro", MISSING]


def test_every_time_key() -> None:
    assert time_segment_keys(SegmentSettings(by="hour_of_day", hour_buckets=8)) == [
        "00-08", "08-16", "16-24"]
    assert time_segment_keys(SegmentSettings(by="weekend")) == ["weekday", "weekend"]
    assert time_segment_keys(SegmentSettings(by="plan")) is None


def test_refusals_name_what_is_missing() -> None:
    with pytest.raises(SpecError, match="no drift.segments"):
        segment_keys(_frame(), parse_spec(BASE))
    with pytest.raises(DataError, match="'ts' is not in the rows"):
        segment_keys(_frame(), _spec(by="weekend"), column="ts")
