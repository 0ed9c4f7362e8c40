"""Writing and reading the driftloop part of a version's bundle (spec, references, metrics)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from kernel.spec import DatasetSpec, spec_from_yaml
from kernel.text import TextProfile
from registry.port import BUNDLE_DIR, MODEL_DIR, NewVersion


def write_reference_files(new: NewVersion, directory: Path) -> Path:
    """Write spec.yaml, reference.parquet, validation.parquet, metrics.json and, when the
    version has them, calibration.json, classes.json and text_profiles.json."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spec.yaml").write_text(new.spec_yaml)
    new.reference.to_parquet(directory / "reference.parquet", index=False)
    new.validation.to_parquet(directory / "validation.parquet", index=False)
    (directory / "metrics.json").write_text(json.dumps(dict(new.metrics), indent=2, sort_keys=True))
    if new.calibration is not None:
        (directory / "calibration.json").write_text(json.dumps(dict(new.calibration)))
    if new.classes is not None:
        (directory / "classes.json").write_text(json.dumps([str(c) for c in new.classes]))
    if new.text_profiles:
        (directory / "text_profiles.json").write_text(
            json.dumps({k: dict(v) for k, v in new.text_profiles.items()}))
    return directory


@dataclass(frozen=True)
class Bundle:
    """A downloaded version, read lazily."""

    root: Path

    @property
    def model_dir(self) -> Path:
        return self.root / MODEL_DIR

    @cached_property
    def spec(self) -> DatasetSpec:
        return spec_from_yaml((self.root / BUNDLE_DIR / "spec.yaml").read_text())

    @cached_property
    def reference(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / BUNDLE_DIR / "reference.parquet")

    @cached_property
    def validation(self) -> pd.DataFrame:
        """Validation features plus ``label`` (0/1) and ``score`` (positive-class probability)."""
        return pd.read_parquet(self.root / BUNDLE_DIR / "validation.parquet")

    @cached_property
    def metrics(self) -> dict[str, float]:
        return json.loads((self.root / BUNDLE_DIR / "metrics.json").read_text())

    @cached_property
    def calibration(self) -> dict[str, Any] | None:
        """The score calibration (kernel/calibration.py), or None: versions trained before
        label-free estimates have none."""
        path = self.root / BUNDLE_DIR / "calibration.json"
        return json.loads(path.read_text()) if path.is_file() else None

    @cached_property
    def classes(self) -> list[str] | None:
        """A multi-class version's classes in its ``predict_proba`` column order (as text);
        None for a binary version."""
        path = self.root / BUNDLE_DIR / "classes.json"
        return [str(c) for c in json.loads(path.read_text())] if path.is_file() else None

    @cached_property
    def text_profiles(self) -> dict[str, TextProfile]:
        """Per text column, its vocabulary and OOD rule (kernel/text.py); empty without text."""
        path = self.root / BUNDLE_DIR / "text_profiles.json"
        if not path.is_file():
            return {}
        return {k: TextProfile.from_dict(v) for k, v in json.loads(path.read_text()).items()}

    def is_complete(self) -> bool:
        names = ("spec.yaml", "reference.parquet", "validation.parquet", "metrics.json")
        return self.model_dir.is_dir() and all((self.root / BUNDLE_DIR / n).is_file() for n in names)
