"""``retrain.refit``: after validation the same estimator is refitted on every row of the
window and that is what serves; the validation metric stays the first fit's (on rows it did
not see), and the version says which (in-memory registry, generated data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kernel.spec import DatasetSpec
from registry import TAG_PREFIX as TAG
from registry.memory import InMemoryRegistry
from training.generate import Scenario, generate
from training.train import train


def _spec(spec: DatasetSpec, refit: bool) -> DatasetSpec:
    return spec.model_copy(update={"retrain": spec.retrain.model_copy(update={"refit": refit})})


def test_refit_serves_a_model_of_every_row_and_keeps_the_validation_metric(
        tmp_path: Path, churn_spec: DatasetSpec) -> None:
    data = tmp_path / "rows.parquet"
    frame = generate(4, scenario=Scenario("none", 0), rows_per_day=800, seed=5)
    frame.to_parquet(data, index=False)
    registry = InMemoryRegistry()
    kept = train(_spec(churn_spec, False), [data], registry)
    refitted = train(_spec(churn_spec, True), [data], registry)
    assert churn_spec.retrain.refit is True  # the default
    assert kept.metrics == refitted.metrics  # the first fit's validation, both times
    old = registry.get_version(churn_spec.model_name, kept.version.version).tags
    new = registry.get_version(churn_spec.model_name, refitted.version.version).tags
    assert (old[TAG + "refit"], new[TAG + "refit"]) == ("false", "true")
    assert int(new[TAG + "served_rows"]) == len(frame)
    assert int(old[TAG + "served_rows"]) == int(old[TAG + "train_rows"]) < len(frame)
    assert refitted.details["refit"] is True and kept.details["refit"] is False
    rows = frame[churn_spec.features.all]
    scores = []
    for result in (kept, refitted):
        bundle = registry.download(churn_spec.model_name, result.version.version,
                                   tmp_path / str(result.version.version))
        scores.append(registry.load_model(bundle).predict_proba(rows)[:, 1])
    assert not np.allclose(scores[0], scores[1])  # what serves learned the validation rows too
