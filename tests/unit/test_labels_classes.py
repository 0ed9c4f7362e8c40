"""The multi-class label decoder: class text, numeric aliases, refusals, indices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernel.labels import ClassCodec, LabelError, class_text
from kernel.spec import parse_spec


@pytest.mark.parametrize(("value", "text"), [("network", "network"), (3, "3"), (3.0, "3"),
                                             (np.int64(7), "7"), (2.5, "2.5")])
def test_class_text(value, text):
    assert class_text(value) == text


@pytest.mark.parametrize("value", [None, math.nan, math.inf, True, "", "  ", object()])
def test_class_text_refuses_what_is_no_class(value):
    assert class_text(value) is None


def test_numbered_classes_match_floats_and_their_text():
    codec = ClassCodec(("1", "2", "3"))
    assert [codec.canonical(v) for v in (1, 2.0, "3", "2.0", np.float64(1.0))] == \
        ["1", "2", "3", "2", "1"]


@pytest.mark.parametrize("value", [4, "4", True, "true", None, math.nan, "", " 1"])
def test_values_outside_the_classes_are_refused_by_name(value):
    with pytest.raises(LabelError, match="one of '1', '2', '3'"):
        ClassCodec(("1", "2", "3")).canonical(value)


def test_text_classes_match_exactly():
    codec = ClassCodec(("billing", "network"))
    assert codec.canonical("network") == "network"
    for value in ("Network", "network ", 1):
        with pytest.raises(LabelError):
            codec.canonical(value)


def test_inferred_classes_take_any_text_or_number():
    codec = ClassCodec(None)
    assert [codec.canonical(v) for v in ("net", 2.0, 5)] == ["net", "2", "5"]
    with pytest.raises(LabelError, match="any non-empty"):
        codec.canonical(None)
    with pytest.raises(ValueError, match="needs the classes"):
        codec.decode_many(["net"])


def test_many_decode_once_per_value_and_lenient_mode_marks_unknowns():
    codec = ClassCodec(("a", "b"))
    assert codec.canonical_many(["b", "a", "b"]).tolist() == ["b", "a", "b"]
    assert codec.decode_many(["a", "b", "c", None], strict=False).tolist() == [0, 1, -1, -1]
    assert codec.canonical_many(["a", "zz"], strict=False).tolist() == ["a", None]
    with pytest.raises(LabelError):
        codec.decode_many(["a", "zz"])
    with pytest.raises(LabelError):
        codec.canonical_many(["a", None])


def test_spec_codec_uses_the_versions_classes_over_the_listed_ones():
    spec = parse_spec({"model_name": "t", "target": "label", "timestamp_column": "ts",
                       "classes": ["billing", "network"], "features": {"text": ["body"]}})
    assert spec.class_codec().classes == ("billing", "network")
    assert spec.class_codec(["x", "y"]).classes == ("x", "y")
    inferred = spec.model_copy(update={"classes": "infer"})
    assert inferred.class_codec().classes is None
