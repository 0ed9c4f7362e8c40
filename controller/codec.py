"""JSON for the persisted state (pure): ``state_to_json`` and ``state_from_json``."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from controller.core import Cycle, ModelState, Override, Probation, Result
from controller.machine import GateDecision

_TIMES = {"since", "until", "started_at", "launched_at", "holdout_from", "shadow_since",
          "requested_at", "last_trained_at"}


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def state_to_json(state: ModelState) -> str:
    return json.dumps(asdict(state), default=_default, sort_keys=True)


def _times(data: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if key in _TIMES and isinstance(value, str):
            value = datetime.fromisoformat(value)
        elif isinstance(value, list):
            value = tuple(value)
        out[key] = value
    return out


def _result(data: dict[str, Any] | None) -> Result | None:
    return None if data is None else Result(**_times(data))


def gate_from_dict(data: dict[str, Any] | None) -> GateDecision | None:
    return None if data is None else GateDecision(**_times(data))


def state_from_json(text: str) -> ModelState:
    data = _times(json.loads(text))
    if data.get("cycle") is not None:
        cycle = _times(data["cycle"])
        cycle["result"] = _result(cycle.get("result"))
        cycle["gate"] = gate_from_dict(cycle.get("gate"))
        data["cycle"] = Cycle(**cycle)
    if data.get("override") is not None:
        override = _times(data["override"])
        override["result"] = _result(override.get("result"))
        data["override"] = Override(**override)
    if data.get("probation") is not None:
        data["probation"] = Probation(**_times(data["probation"]))
    return ModelState(**data)
