"""Evidence for the gate: live shadow pairs or an offline replay, one source per cycle.

- *shadow*: rows of the prediction log where the champion answered and the challenger was
  scored in shadow (``shadow_version == challenger``), once labelled: the pairs are
  (``score``, ``shadow_score``, label).
- *offline_replay*: both models scored here on recent labelled rows that the challenger was
  not trained on (at or after the cycle's holdout cut, or after the cycle started).

A challenger trained on the champion's data (equal ``driftloop.data_hash`` tags) is
``no_change`` before any evidence is read; one whose scores equal the champion's on every pair
is ``no_change`` from the gate (``controller.gate.same_scores``): neither is a promotion.

Before any of it, the challenger must load and return finite probabilities on the
champion's reference rows: otherwise it is rejected at once as broken. Its input schema must
accept every request the champion accepts (controller/compat.py): otherwise it is rejected
with the changes named, before any pairs are counted (only ``POST /promote`` with
``allow_schema_change`` naming them can promote it).

The source is chosen at the cycle's first look, from the configuration alone (offline replay
when it is allowed, else shadow), never from which source would decide: the choice is recorded
in the decision (``GateDecision.evidence``), the core keeps it in ``Cycle.evidence`` and every
later look of the cycle passes it back (``Evaluate.evidence``). Switching to whichever source
decides first ("evidence shopping") would be two tests looked at, with neither's error rate.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from controller import compat, gate, gate_classes, machine
from controller.gate import GatePolicy
from controller.machine import GateDecision
from controller.recent import label_array, labelled_rows
from kernel.spec import DatasetSpec
from monitoring.predlog import WindowReader
from registry import ALIAS_CHAMPION, TAG_PREFIX, ModelRegistry
from registry.bundle import Bundle

log = logging.getLogger(__name__)


@dataclass
class ModelCache:
    """Downloaded bundles and loaded models, by (model, version)."""

    registry: ModelRegistry
    root: Path

    def __post_init__(self) -> None:
        self._models: dict[tuple[str, int], Any] = {}

    def bundle(self, name: str, version: int) -> Bundle:
        dest = self.root / name / str(version)
        bundle = Bundle(dest)
        if not bundle.is_complete():
            if dest.exists():
                shutil.rmtree(dest)
            self.registry.download(name, version, dest)
        return bundle

    def features(self, name: str, version: int) -> list[str]:
        """The columns the version was trained on (from its own spec)."""
        return self.bundle(name, version).spec.features.all

    def model(self, name: str, version: int) -> Any:
        key = (name, version)
        if key not in self._models:
            self._models[key] = self.registry.load_model(self.bundle(name, version).root)
        return self._models[key]


def _scores(model: Any, frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    return np.asarray(model.predict_proba(frame[features])[:, 1], dtype=float)


def version_classes(bundle: Bundle, model: Any) -> list[str]:
    """A multi-class version's classes in its ``predict_proba`` order: as recorded with the
    version, else the estimator's own ``classes_`` (as text)."""
    recorded = bundle.classes
    return recorded if recorded is not None else [str(c) for c in model.classes_]


def _class_indices(labels: pd.Series, order: list[str]) -> np.ndarray:
    """Each logged label's index in ``order`` (-1 for a label no version knows)."""
    index = {c: i for i, c in enumerate(order)}
    return np.fromiter((index.get(str(v), -1) for v in labels), dtype=np.int64, count=len(labels))


def _matrix(column: pd.Series) -> np.ndarray:
    """A log column of probability lists as a matrix (NaN rows where one is missing)."""
    rows = [np.asarray(v, dtype=float) if v is not None and len(v) else None for v in column]
    width = max((len(r) for r in rows if r is not None), default=0)
    return np.vstack([r if r is not None and len(r) == width else np.full(width, np.nan)
                      for r in rows]) if rows else np.zeros((0, width))


@dataclass
class Evaluator:
    registry: ModelRegistry
    reader: WindowReader
    cache: ModelCache
    policy: GatePolicy = GatePolicy()
    offline_replay: bool = True  # False: only live shadow pairs may decide

    def source(self) -> str:
        """The evidence a cycle entering evaluation uses (then kept for the whole cycle)."""
        return "offline_replay" if self.offline_replay else "shadow"

    def evaluate(self, spec: DatasetSpec, challenger: int, *, shadow_since: datetime,
                 holdout_from: datetime | None, now: datetime,
                 evidence: str | None = None) -> tuple[GateDecision, int | None]:
        """The gate's decision and the champion it compared against, on ``evidence`` (the
        cycle's recorded source; ``None`` at its first look: :meth:`source` chooses)."""
        metric = spec.metric
        name = spec.model_name
        champion_info = self.registry.get_alias(name, ALIAS_CHAMPION)
        champion = None if champion_info is None else champion_info.version
        if champion is not None and champion != challenger:
            same = self._same_data(name, champion, challenger)
            if same is not None:
                return GateDecision("no_change", (same,), metric, 0), champion
        try:
            candidate = self.cache.model(name, challenger)
        except Exception as exc:  # a challenger that does not load is broken, whatever the cause
            return machine.broken(metric, f"v{challenger} failed to load: {exc}"), champion
        if champion is None:
            return GateDecision("promote", (f"no champion yet: v{challenger} becomes the "
                                            "first champion",), metric, 0), None
        if champion == challenger:
            return GateDecision("reject", (f"v{challenger} is already the champion",),
                                metric, 0), champion
        bundles = self.cache.bundle(name, champion), self.cache.bundle(name, challenger)
        try:
            schema = compat.check(*bundles)
        except Exception as exc:  # a spec or reference sample that cannot be read
            return machine.broken(metric, f"the input schemas of v{champion} and v{challenger} "
                                  f"cannot be compared: {exc}"), champion
        if not schema.compatible:  # before any pairs: clients would see 422s (controller/compat.py)
            return GateDecision("reject", (schema.reason(challenger, champion),), metric, 0,
                                evidence=evidence or self.source()), champion
        probe = self.cache.bundle(name, champion).reference.head(200)
        try:
            probe_scores = _scores(candidate, probe, self.cache.features(name, challenger))
        except Exception as exc:
            return machine.broken(metric, f"v{challenger} breaks the input schema: {exc}"), champion
        if not np.isfinite(probe_scores).all():
            return machine.broken(metric, f"v{challenger} returns non-finite scores on the "
                               "champion's reference rows"), champion
        if (evidence or self.source()) == "offline_replay":
            return self._replay(spec, champion, challenger, holdout_from or shadow_since,
                                now), champion
        return self._shadow(spec, champion, challenger, shadow_since, now), champion

    def _same_data(self, name: str, champion: int, challenger: int) -> str | None:
        """Why the challenger changes nothing, when it was trained on the champion's data
        (equal ``driftloop.data_hash`` tags); ``None`` otherwise or when either has none."""
        tag = TAG_PREFIX + "data_hash"
        ours = self.registry.get_version(name, challenger).tags.get(tag)
        theirs = self.registry.get_version(name, champion).tags.get(tag)
        if not ours or ours != theirs:
            return None
        return (f"no_change: v{challenger} was trained on the same data as champion "
                f"v{champion} (data hash {ours[:12]}): nothing to promote")

    def _classes(self, spec: DatasetSpec, rows: pd.DataFrame, champion: int, challenger: int,
                 old: np.ndarray | None, new: np.ndarray | None, evidence: str) -> GateDecision:
        """The multi-class gate on both versions' class probabilities (columns in their own
        orders), put in one order: the champion's classes, then any the challenger adds.
        ``None`` probabilities: too few rows to score (the gate says it waits)."""
        name = spec.model_name
        mine = version_classes(self.cache.bundle(name, champion), self.cache.model(name, champion))
        theirs = version_classes(self.cache.bundle(name, challenger),
                                 self.cache.model(name, challenger))
        order = [*mine, *(c for c in theirs if c not in mine)]
        y = _class_indices(rows["label"], order) if len(rows) else np.zeros(0, dtype=np.int64)
        if old is None or new is None:
            old = np.full((len(y), len(mine)), 1 / len(mine))
            new = np.full((len(y), len(theirs)), 1 / len(theirs))
        known = y >= 0
        decision = gate_classes.evaluate(
            y[known], gate_classes.aligned(old[known], mine, order),
            gate_classes.aligned(new[known], theirs, order), metric=spec.metric,
            policy=self.policy, evidence=evidence)
        if not known.all():
            decision = decision.with_reason(f"{int((~known).sum())} labelled rows left out: "
                                            f"their class is neither version's ({order})")
        return decision

    def _shadow(self, spec: DatasetSpec, champion: int, challenger: int, since: datetime,
                now: datetime) -> GateDecision:
        rows = labelled_rows(self.reader, spec, since, now)
        if not rows.empty:
            rows = rows[(rows["shadow_version"] == challenger) & (rows["model_version"] == champion)]
        if spec.is_multiclass:
            if rows.empty or "probabilities" not in rows or "shadow_probabilities" not in rows:
                return self._classes(spec, rows.iloc[0:0], champion, challenger, None, None,
                                     "shadow")
            return self._classes(spec, rows, champion, challenger, _matrix(rows["probabilities"]),
                                 _matrix(rows["shadow_probabilities"]), "shadow")
        if rows.empty:
            return gate.evaluate(np.zeros(0), np.zeros(0), np.zeros(0), metric=spec.metric,
                                 policy=self.policy, evidence="shadow")
        return gate.evaluate(label_array(rows, spec), rows["score"].to_numpy(float),
                             rows["shadow_score"].to_numpy(float), metric=spec.metric,
                             policy=self.policy, evidence="shadow")

    def _replay(self, spec: DatasetSpec, champion: int, challenger: int, since: datetime,
                now: datetime) -> GateDecision:
        rows = labelled_rows(self.reader, spec, since, now)
        if spec.is_multiclass:
            return self._replay_classes(spec, champion, challenger, rows)
        y = label_array(rows, spec) if not rows.empty else np.zeros(0, dtype=np.int64)
        if len(rows) < self.policy.min_pairs:
            return gate.evaluate(y, np.zeros(len(y)), np.zeros(len(y)), metric=spec.metric,
                                 policy=self.policy, evidence="offline_replay")
        name = spec.model_name
        old = _scores(self.cache.model(name, champion), rows, self.cache.features(name, champion))
        try:
            new = _scores(self.cache.model(name, challenger), rows,
                          self.cache.features(name, challenger))
        except Exception as exc:
            return machine.broken(spec.metric, f"v{challenger} fails on production rows: {exc}",
                               evidence="offline_replay", n=len(rows))
        return gate.evaluate(y, old, new, metric=spec.metric, policy=self.policy,
                             evidence="offline_replay")

    def _replay_classes(self, spec: DatasetSpec, champion: int, challenger: int,
                        rows: pd.DataFrame) -> GateDecision:
        name = spec.model_name
        if len(rows) < self.policy.min_pairs:
            return self._classes(spec, rows, champion, challenger, None, None,
                                 "offline_replay")
        old = self.cache.model(name, champion).predict_proba(
            rows[self.cache.features(name, champion)])
        try:
            new = self.cache.model(name, challenger).predict_proba(
                rows[self.cache.features(name, challenger)])
        except Exception as exc:
            return machine.broken(spec.metric, f"v{challenger} fails on production rows: {exc}",
                                  evidence="offline_replay", n=len(rows))
        return self._classes(spec, rows, champion, challenger, np.asarray(old, dtype=float),
                             np.asarray(new, dtype=float), "offline_replay")
