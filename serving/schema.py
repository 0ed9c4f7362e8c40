"""The request schema of a version, from its spec and reference sample.

Every feature named by the spec must be present; ``null`` is a missing value (imputed as in
training, and counted). Numerical features take JSON numbers (not booleans, not NaN or
infinity, not numbers beyond a double's range); categorical features take strings; text
features take strings of at most ``max_text_chars`` characters (DRIFTLOOP_SERVING_MAX_TEXT_CHARS;
a missing text is scored as the empty text, as in training). Unknown
fields are refused, so a client's typo is not silently imputed. No string (a value, the
request id, a key) may hold a lone UTF-16 surrogate (JSON ``"\\ud800"``): it is not text, and
the log could not store it. Values are also *observed*: categories the reference sample
never saw and numbers outside its range are served and counted per feature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from kernel.spec import DatasetSpec

REQUEST_ID = "request_id"
MAX_REQUEST_ID = 128
MAX_TEXT_CHARS = 10_000
SURROGATE = "holds a lone surrogate (not valid Unicode text)"


def lone_surrogate(text: str) -> bool:
    """True when ``text`` holds a lone UTF-16 surrogate, which UTF-8 cannot encode.
    Cheap for ASCII (the usual case): ``isascii`` is checked first."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def field_name(name: str) -> str:
    """A client's key as it can be named in an answer (a lone surrogate escaped)."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8") if lone_surrogate(name) \
        else name


class RecordError(Exception):
    """A record that does not fit the schema; ``problems`` maps field -> reason."""

    def __init__(self, problems: dict[str, str], where: str = "") -> None:
        self.problems = problems
        self.where = where
        parts = "; ".join(f"{where}{k}: {v}" for k, v in problems.items())
        super().__init__(parts)


@dataclass(frozen=True)
class Observation:
    unseen: tuple[str, ...] = ()
    out_of_range: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordSchema:
    numerical: tuple[str, ...]
    categorical: tuple[str, ...]
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    categories: Mapping[str, frozenset[str]] = field(default_factory=dict)
    text: tuple[str, ...] = ()
    max_text_chars: int = MAX_TEXT_CHARS

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numerical, *self.categorical, *self.text)

    @classmethod
    def from_spec(cls, spec: DatasetSpec, reference: pd.DataFrame, *,
                  max_text_chars: int = MAX_TEXT_CHARS) -> RecordSchema:
        ranges = {}
        for name in spec.features.numerical:
            values = pd.to_numeric(reference[name], errors="coerce").dropna()
            if len(values):
                ranges[name] = (float(values.min()), float(values.max()))
        cats = {name: frozenset(str(v) for v in reference[name].dropna().unique())
                for name in spec.features.categorical}
        return cls(tuple(spec.features.numerical), tuple(spec.features.categorical), ranges, cats,
                   tuple(spec.features.text), max_text_chars)

    def parse(self, data: Any, *, allow_request_id: bool = True,
              where: str = "") -> tuple[dict[str, Any], str | None]:
        """Validate one JSON object; return (features, client request id or None)."""
        if not isinstance(data, dict):
            raise RecordError({"record": f"expected a JSON object, got {_json_type(data)}"}, where)
        problems: dict[str, str] = {}
        record: dict[str, Any] = {}
        for name in self.numerical:
            if name not in data:
                problems[name] = "field required (number or null)"
                continue
            v = data[name]
            if v is None:
                record[name] = None
            elif isinstance(v, bool) or not isinstance(v, int | float):
                problems[name] = f"expected a number or null, got {_json_type(v)}"
            elif isinstance(v, float) and not math.isfinite(v):
                problems[name] = "NaN and infinity are not allowed (send null for missing)"
            else:
                try:
                    record[name] = float(v)
                except OverflowError:  # an integer of hundreds of digits
                    problems[name] = "number too large (beyond the range of a double)"
        for name in self.categorical:
            if name not in data:
                problems[name] = "field required (string or null)"
                continue
            v = data[name]
            if v is None or (isinstance(v, str) and (v.isascii() or not lone_surrogate(v))):
                record[name] = v
            elif isinstance(v, str):
                problems[name] = SURROGATE
            else:
                problems[name] = f"expected a string or null, got {_json_type(v)}"
        if self.text:
            self._parse_text(data, record, problems)
        request_id = data.get(REQUEST_ID) if allow_request_id else None
        if request_id is not None and (not isinstance(request_id, str) or not request_id
                                       or len(request_id) > MAX_REQUEST_ID):
            problems[REQUEST_ID] = f"expected a non-empty string of at most {MAX_REQUEST_ID} chars"
        elif request_id is not None and lone_surrogate(request_id):
            problems[REQUEST_ID] = SURROGATE
        present = len(self.features) - sum(1 for v in problems.values() if v.startswith("field req"))
        if len(data) > present + (allow_request_id and REQUEST_ID in data):
            known = set(self.features) | ({REQUEST_ID} if allow_request_id else set())
            unknown = sorted(k for k in data if k not in known)
            for name in unknown[:10]:
                named = field_name(name)
                problems[named] = "unknown field" if named == name else \
                    f"unknown field (its name {SURROGATE})"
            if len(unknown) > 10:
                problems["..."] = f"{len(unknown) - 10} more unknown fields"
        if problems:
            raise RecordError(problems, where)
        return record, request_id

    def _parse_text(self, data: dict[str, Any], record: dict[str, Any],
                    problems: dict[str, str]) -> None:
        limit = self.max_text_chars
        for name in self.text:
            if name not in data:
                problems[name] = "field required (text or null)"
                continue
            v = data[name]
            if v is None:
                record[name] = None
            elif not isinstance(v, str):
                problems[name] = f"expected a string or null, got {_json_type(v)}"
            elif len(v) > limit:
                problems[name] = (f"text of {len(v)} characters is over the limit of {limit} "
                                  "(DRIFTLOOP_SERVING_MAX_TEXT_CHARS)")
            elif lone_surrogate(v):
                problems[name] = SURROGATE
            else:
                record[name] = v

    def observe(self, record: Mapping[str, Any]) -> Observation:
        unseen, out, missing = [], [], []
        for name in self.numerical:
            v = record[name]
            if v is None:
                missing.append(name)
                continue
            bounds = self.ranges.get(name)
            if bounds is not None and not bounds[0] <= v <= bounds[1]:
                out.append(name)
        for name in self.categorical:
            v = record[name]
            if v is None:
                missing.append(name)
            elif v not in self.categories.get(name, ()):
                unseen.append(name)
        for name in self.text:
            if record[name] is None:
                missing.append(name)
        if not (unseen or out or missing):
            return _CLEAN
        return Observation(tuple(unseen), tuple(out), tuple(missing))


_CLEAN = Observation()


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
