from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kernel.errors import SpecError
from kernel.spec import load_spec, parse_spec

GOOD = {
    "model_name": "m",
    "target": "y",
    "timestamp_column": "ts",
    "features": {"numerical": ["a"], "categorical": ["b"]},
}


def test_example_spec_loads(churn_spec):
    assert churn_spec.model_name == "churn"
    assert churn_spec.metric == "roc_auc"
    assert churn_spec.features.all[:2] == ["tenure_months", "monthly_charges"]
    assert not churn_spec.lower_is_better


def test_defaults():
    spec = parse_spec(GOOD)
    assert spec.metric == "roc_auc"
    assert spec.estimator.kind == "logistic_regression"
    assert spec.drift.drift_share == 0.3


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"metric": "mape"}, "metric"),
        ({"estimator": {"kind": "xgboost"}}, "estimator.kind"),
        ({"features": {"numerical": [], "categorical": []}}, "features"),
        ({"features": {"numerical": ["a", "a"]}}, "features"),
        ({"features": {"numerical": ["score"]}}, "features"),
        ({"features": {"numerical": ["y"]}}, "spec"),
        ({"surprise": 1}, "surprise"),
        ({"model_name": "bad name!"}, "model_name"),
        ({"validation_fraction": 1.5}, "validation_fraction"),
        ({"drift": {"per_column": {"zzz": {"method": "ks"}}}}, "spec"),
    ],
)
def test_wrong_specs_name_the_field(change, field):
    with pytest.raises(SpecError) as err:
        parse_spec({**GOOD, **change})
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(field) or f" {field}" in message or field in message


def test_missing_required_field():
    data = dict(GOOD)
    del data["target"]
    with pytest.raises(SpecError, match="^target: Field required"):
        parse_spec(data)


def test_not_a_mapping_and_bad_yaml(tmp_path: Path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("model_name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(tmp_path / "bad.yaml")
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "nope.yaml")


def test_round_trip_through_yaml(churn_spec):
    again = parse_spec(yaml.safe_load(churn_spec.to_yaml()))
    assert again.model_dump(exclude={"source"}) == churn_spec.model_dump(exclude={"source"})


TEXT = {**GOOD, "features": {"text": ["body"], "categorical": ["channel"]},
        "classes": ["network", "billing", "account"]}


def test_text_and_multiclass_spec():
    spec = parse_spec(TEXT)
    assert spec.is_multiclass and spec.metric == "macro_f1"
    assert spec.listed_classes == ["network", "billing", "account"]
    assert spec.features.all == ["channel", "body"] and spec.features.tabular == ["channel"]
    assert spec.text.analyzer == "word+char"
    again = parse_spec(yaml.safe_load(spec.to_yaml()))
    assert again == spec
    inferred = parse_spec({**TEXT, "classes": "infer"})
    assert inferred.is_multiclass and inferred.listed_classes is None


def test_tabular_spec_yaml_has_no_text_keys():
    text = parse_spec(GOOD).to_yaml()
    assert "text" not in yaml.safe_load(text) and "text" not in yaml.safe_load(text)["features"]
    assert not parse_spec(GOOD).is_multiclass


@pytest.mark.parametrize(("change", "message"), [
    ({"metric": "roc_auc"}, "metric roc_auc is binary"),
    ({"estimator": {"kind": "hist_gradient_boosting"}}, "cannot take text features"),
    ({"classes": ["a", "a"]}, "classes listed twice"),
    ({"classes": ["a"]}, "at least two"),
    ({"negative_label": 0}, "negative_label is for binary specs"),
    ({"text": {"ood_patterns": ["("]}}, "not a regular expression"),
    ({"text": {"word_ngrams": [2, 1]}}, "n-gram range"),
])
def test_bad_text_and_multiclass_specs(change, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({**TEXT, **change})


@pytest.mark.parametrize(("field", "value"), [
    ("positive_label", 1),          # even its default: set explicitly, it is refused
    ("positive_label", "billing"),
    ("negative_label", 0),
    ("negative_label", None),
])
def test_multiclass_spec_refuses_binary_label_fields(field, value):
    with pytest.raises(SpecError) as caught:
        parse_spec({**TEXT, field: value})
    message = str(caught.value)
    assert "\n" not in message
    assert f"{field} is for binary specs; classes: lists them all" in message
    # a binary spec takes both
    binary = parse_spec({**GOOD, field: value})
    assert getattr(binary, field) == value


def test_multiclass_spec_yaml_round_trips_without_binary_fields():
    from kernel.spec import spec_from_yaml

    spec = parse_spec(TEXT)
    data = yaml.safe_load(spec.to_yaml())
    assert "positive_label" not in data and "negative_label" not in data
    assert parse_spec(data) == spec
    # a version stored before the refusal carries the default positive_label: 1
    stored = yaml.safe_dump({**data, "positive_label": 1})
    assert spec_from_yaml(stored) == spec
    with pytest.raises(SpecError, match="positive_label is for binary specs"):
        spec_from_yaml(yaml.safe_dump({**data, "positive_label": "billing"}))


def test_macro_f1_needs_classes():
    with pytest.raises(SpecError, match="macro_f1 needs classes"):
        parse_spec({**GOOD, "metric": "macro_f1"})
