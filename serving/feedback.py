"""The /feedback body: ``{"request_id", "label"}`` or ``{"labels": [...]}``, checked by hand
(every refusal names its field), then each label decoded by the champion spec's one decoder
(kernel/labels.py) and kept in its canonical text: ``spec.labels`` for a binary champion,
``spec.class_codec(classes)`` over the version's recorded classes for a multi-class one
(``decoder``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol

from kernel.labels import LabelError
from serving.responses import HTTPProblem
from serving.schema import MAX_REQUEST_ID, SURROGATE, field_name, lone_surrogate

if TYPE_CHECKING:
    from serving.model import LoadedModel


class LabelDecoder(Protocol):
    """What /feedback needs of a label codec (kernel/labels.py ``LabelCodec`` for a binary
    spec, ``ClassCodec`` for a multi-class one): a value's canonical text, or
    ``LabelError`` naming what the spec expects."""

    def canonical(self, value: Any) -> str: ...


def decoder(model: LoadedModel) -> LabelDecoder:
    """The champion's label decoder: its version's classes (multi-class), else the spec's
    positive and negative labels."""
    if model.classes is not None:
        return model.spec.class_codec(model.classes)
    return model.spec.labels


def _check_item(item: Any, where: str, problems: dict[str, str]) -> tuple[str, Any] | None:
    """One ``{"request_id", "label"}``: (request_id, label), or None with ``problems`` filled."""
    if not isinstance(item, dict):
        problems[f"{where}item"] = "expected an object with request_id and label"
        return None
    before = len(problems)
    rid, label = item.get("request_id"), item.get("label", ...)
    if not isinstance(rid, str) or not rid or len(rid) > MAX_REQUEST_ID:
        problems[f"{where}request_id"] = f"required: a non-empty string (max {MAX_REQUEST_ID} chars)"
    elif lone_surrogate(rid):
        problems[f"{where}request_id"] = SURROGATE
    if label is ... or label is None:
        problems[f"{where}label"] = "required"
    elif not isinstance(label, str | int | float | bool) or (
            isinstance(label, float) and not math.isfinite(label)):
        problems[f"{where}label"] = "expected a string, number or boolean"
    elif isinstance(label, str) and lone_surrogate(label):
        problems[f"{where}label"] = SURROGATE
    elif isinstance(label, int) and not isinstance(label, bool) and abs(label) > 2 ** 53:
        problems[f"{where}label"] = "number too large to be a label"
    extra = sorted(k for k in item if k not in ("request_id", "label"))
    for k in extra[:5]:
        problems[f"{where}{field_name(k)}"] = "unknown field"
    if len(problems) > before or not isinstance(rid, str):
        return None
    return rid, label


def parse_feedback(data: Any) -> list[tuple[str, Any]]:
    """``{"request_id", "label"}`` or ``{"labels": [...]}`` -> [(request_id, label)]."""
    batch = isinstance(data, dict) and "labels" in data
    if batch:
        items = data["labels"]
        extra = sorted(field_name(k) for k in data if k != "labels")
        if extra:
            raise HTTPProblem(422, f"unknown fields: {extra}")
        if not isinstance(items, list) or not items:
            raise HTTPProblem(422, '"labels" must be a non-empty array')
    else:
        items = [data]
    out: list[tuple[str, Any]] = []
    problems: dict[str, str] = {}
    for i, item in enumerate(items):
        checked = _check_item(item, f"labels[{i}]." if batch else "", problems)
        if checked is not None and not problems:
            out.append(checked)
    if problems:
        raise HTTPProblem(422, f"invalid feedback: {len(problems)} problem(s)", problems)
    return out


def canonical_labels(data: Any, codec: LabelDecoder) -> list[tuple[str, str]]:
    """The body checked (``parse_feedback``), then each label decoded by the spec's codec as
    its canonical text: [(request_id, label)]; 422 naming every value the spec does not
    define."""
    labels = parse_feedback(data)
    batch = isinstance(data, dict) and "labels" in data
    out, problems = [], {}
    for i, (rid, label) in enumerate(labels):
        try:
            out.append((rid, codec.canonical(label)))
        except LabelError as exc:
            problems[f"labels[{i}].label" if batch else "label"] = str(exc)
    if problems:
        raise HTTPProblem(422, f"invalid feedback: {len(problems)} label(s) the spec does not "
                          "define", problems)
    return out
