"""Schema compatibility of a challenger with the champion: would it refuse requests the
champion accepts?

What serving refuses decides it (serving/schema.py, not imported: serving and the controller
are siblings): every feature of a version's spec is a required field (``null`` allowed),
numerical features take JSON numbers and categorical ones strings, and unknown fields are
refused. Categories the reference sample never saw and numbers outside its range are
*served* (and counted), so a narrower category set or range is compatible, only noted. A
client that sends everything the champion accepts is refused by the challenger when:

- ``dropped:F``: the champion requires ``F``, the challenger does not know it (unknown field);
- ``added:F``: the challenger requires ``F``, which the champion's clients do not send;
- ``renamed:A->B``: one feature dropped and one of the same kind added (both of the above);
- ``retyped:F:numerical->categorical`` (or back): the value's JSON type is refused.

Each change has a ``name`` (as above): an operator who promotes such a version on purpose
names every change (``POST /promote`` with ``allow_schema_change``). The versions' MLflow
signatures, when their bundles carry one (``model/MLmodel``), are compared too: a column
whose type class (number or string) differs is a retype even if the specs agree.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from kernel.spec import DatasetSpec
from registry.bundle import Bundle

log = logging.getLogger(__name__)

Kind = Literal["numerical", "categorical"]
ChangeKind = Literal["dropped", "added", "renamed", "retyped"]

#: MLflow signature column types that serving takes as JSON strings; the others are numbers.
_STRING_TYPES = frozenset({"string", "str", "object", "binary"})


@dataclass(frozen=True)
class SchemaChange:
    kind: ChangeKind
    feature: str
    to: str = ""  # renamed: the new name; retyped: "numerical->categorical"

    @property
    def name(self) -> str:
        if self.kind == "renamed":
            return f"renamed:{self.feature}->{self.to}"
        if self.kind == "retyped":
            return f"retyped:{self.feature}:{self.to}"
        return f"{self.kind}:{self.feature}"

    @property
    def reason(self) -> str:
        return {
            "dropped": f"feature {self.feature!r} dropped (requests carrying it would be "
                       "refused as an unknown field)",
            "added": f"new required feature {self.feature!r} (requests without it would be "
                     "refused)",
            "renamed": f"feature {self.feature!r} renamed to {self.to!r} (requests carrying "
                       "the old name would be refused)",
            "retyped": f"feature {self.feature!r} retyped {self.to} (its values would be "
                       "refused)",
        }[self.kind]


@dataclass(frozen=True)
class InputSchema:
    """A version's request fields and their kinds, plus what it observes but serves."""

    kinds: Mapping[str, Kind]
    categories: Mapping[str, frozenset[str]]
    signature: Mapping[str, Kind] | None = None

    @classmethod
    def of(cls, spec: DatasetSpec, categories: Mapping[str, frozenset[str]] | None = None,
           signature: Mapping[str, Kind] | None = None) -> InputSchema:
        kinds: dict[str, Kind] = {name: "numerical" for name in spec.features.numerical}
        kinds.update({name: "categorical" for name in spec.features.categorical})
        return cls(kinds, dict(categories or {}), signature)


@dataclass(frozen=True)
class Compatibility:
    changes: tuple[SchemaChange, ...] = ()
    notes: tuple[str, ...] = ()  # compatible differences (narrowed categories: served)

    @property
    def compatible(self) -> bool:
        return not self.changes

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.changes)

    def reason(self, challenger: int, champion: int) -> str:
        return (f"v{challenger} would refuse requests champion v{champion} accepts: "
                + "; ".join(c.reason for c in self.changes)
                + f" (to promote it anyway: POST /promote with allow_schema_change="
                  f"{','.join(self.names)!r})")

    def unacknowledged(self, allowed: Iterable[str]) -> tuple[SchemaChange, ...]:
        """The changes an operator's ``allow_schema_change`` does not name."""
        named = set(allowed)
        return tuple(c for c in self.changes if c.name not in named)


def compare(champion: InputSchema, challenger: InputSchema) -> Compatibility:
    """Pure: what of ``champion``'s accepted requests ``challenger`` would refuse."""
    old, new = champion.kinds, challenger.kinds
    dropped = [f for f in old if f not in new]
    added = [f for f in new if f not in old]
    changes: list[SchemaChange] = []
    for kind in ("numerical", "categorical"):
        gone = [f for f in dropped if old[f] == kind]
        came = [f for f in added if new[f] == kind]
        if len(gone) == 1 and len(came) == 1:  # one out, one in, same kind: a rename
            changes.append(SchemaChange("renamed", gone[0], came[0]))
            dropped.remove(gone[0])
            added.remove(came[0])
    changes += [SchemaChange("dropped", f) for f in dropped]
    changes += [SchemaChange("added", f) for f in added]
    for f in old:
        if f not in new:
            continue
        before, after = old[f], new[f]
        if before == after and champion.signature is not None \
                and challenger.signature is not None:  # the specs agree: do the signatures?
            before = champion.signature.get(f, before)
            after = challenger.signature.get(f, before)
        if before != after:
            changes.append(SchemaChange("retyped", f, f"{before}->{after}"))
    notes = tuple(
        f"categories of {f!r} narrowed by {len(gone_cats)} (served as unseen, counted)"
        for f, cats in champion.categories.items()
        if f in new and new[f] == "categorical" and old.get(f) == "categorical"
        and (gone_cats := cats - challenger.categories.get(f, cats)))
    return Compatibility(tuple(changes), notes)


def signature_kinds(model_dir: Path) -> dict[str, Kind] | None:
    """The input columns of an MLflow model's signature (``MLmodel``), as request kinds;
    ``None`` when the model has no readable signature (not every registry writes one)."""
    path = model_dir / "MLmodel"
    try:
        inputs = (yaml.safe_load(path.read_text()) or {}).get("signature", {}).get("inputs")
        columns = json.loads(inputs) if isinstance(inputs, str) else None
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None
    if not isinstance(columns, list):
        return None
    kinds: dict[str, Kind] = {}
    for col in columns:
        if isinstance(col, dict) and isinstance(col.get("name"), str):
            kinds[col["name"]] = ("categorical" if str(col.get("type")) in _STRING_TYPES
                                  else "numerical")
    return kinds or None


def bundle_schema(bundle: Bundle) -> InputSchema:
    """A downloaded version's input schema: its spec, its reference sample's categories and
    its model's signature (if any)."""
    spec, reference = bundle.spec, bundle.reference
    categories = {name: frozenset(str(v) for v in reference[name].dropna().unique())
                  for name in spec.features.categorical if name in reference}
    return InputSchema.of(spec, categories, signature_kinds(bundle.model_dir))


def check(champion: Bundle, challenger: Bundle) -> Compatibility:
    return compare(bundle_schema(champion), bundle_schema(challenger))
