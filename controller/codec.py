"""JSON for the persisted state (pure): ``state_to_json`` and ``state_from_json``.

The state is decoded by its schema, not by field names: a pydantic ``TypeAdapter`` over the
frozen dataclasses of ``controller.machine`` turns ISO strings into datetimes, lists into
tuples and nested objects into their dataclasses, by each field's declared type.

The JSON carries ``"schema": SCHEMA``. Version 1 (before this key existed) has the same
shape, so its upgrade step is the identity; a later change of shape (a renamed or moved
field) adds a step to ``_UPGRADES`` that rewrites the previous version's dict, so states
written by any earlier release still load. A version newer than ``SCHEMA`` is refused with
``StateSchemaError``: that state was written by a newer release.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from controller.machine import GateDecision, ModelState

SCHEMA = 2
_STATE: TypeAdapter[ModelState] = TypeAdapter(ModelState)
_GATE: TypeAdapter[GateDecision] = TypeAdapter(GateDecision)


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return data  # version 2 only adds the "schema" key


# _UPGRADES[n] turns a version-n dict into a version-(n + 1) dict.
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


class StateSchemaError(ValueError):
    """A persisted state this release cannot read (a newer schema, or not a state at all)."""


def state_to_json(state: ModelState) -> str:
    data = _STATE.dump_python(state, mode="json")
    return json.dumps({**data, "schema": SCHEMA}, sort_keys=True)


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A state dict of any known schema version as the current version (without the key)."""
    data = dict(data)
    version = data.pop("schema", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StateSchemaError(f"state schema version {version!r} is not a positive integer")
    if version > SCHEMA:
        raise StateSchemaError(f"state schema version {version} is newer than this release "
                               f"reads ({SCHEMA}): it was written by a newer driftloop; "
                               "upgrade this controller")
    while version < SCHEMA:
        data = _UPGRADES[version](data)
        version += 1
    return data


def state_from_json(text: str) -> ModelState:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise StateSchemaError(f"a persisted state is a JSON object, not {type(data).__name__}")
    try:
        return _STATE.validate_python(upgrade(data))
    except ValidationError as exc:
        raise StateSchemaError(f"persisted state of {data.get('model')!r} does not match "
                               f"schema {SCHEMA}: {exc}") from exc


def gate_from_dict(data: dict[str, Any] | None) -> GateDecision | None:
    return None if data is None else _GATE.validate_python(data)
