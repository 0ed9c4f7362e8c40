"""The serving app's request and response bodies as pydantic models, for /openapi.json.

They document; they do not parse the hot path. /predict and /predict/batch bodies are
checked by hand against the served version's schema (serving/schema.py), /feedback by
serving/feedback.py, so the models are attached to the operations as schemas
(``openapi_extra``) and ``responses``, never as parameters.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from serving.schema import MAX_REQUEST_ID

RequestId = Field(None, min_length=1, max_length=MAX_REQUEST_ID,
                  description="The client's id for this prediction (generated when absent).")


class PredictRequest(BaseModel):
    """One record: every feature of the served version's spec, by name (numerical features
    take numbers, categorical ones strings, text ones strings of at most
    DRIFTLOOP_SERVING_MAX_TEXT_CHARS characters; null is a missing value), and an optional
    request_id. Unknown fields are refused."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, float | str | None]
    request_id: str | None = RequestId


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    records: list[PredictRequest] = Field(
        min_length=1, description="At most DRIFTLOOP_SERVING_BATCH_LIMIT records (413 above).")


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=MAX_REQUEST_ID,
                            description="The request id the prediction was answered with.")
    label: str | float | bool = Field(
        description="The outcome, one of the champion spec's labels (e.g. 1/0, true/false), "
        "or for a multi-class champion one of its version's classes.")


class Labels(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: list[Label] = Field(min_length=1)


FeedbackRequest = TypeAdapter(Label | Labels)


class Problem(BaseModel):
    """A refusal: the reason, and the reason per field when fields are named."""

    detail: str
    errors: dict[str, str] | None = None


PREDICTION = ("Binary: 1 when score is above the threshold (0.5), else 0. Multi-class: the "
              "predicted class as text (the most probable; ties to the first class).")
SCORE = "Binary: the positive-class probability. Multi-class: the predicted class's probability."
PROBABILITIES = ("Multi-class only: every class's probability, in the version's class order "
                 "(GET /model lists them).")


class Prediction(BaseModel):
    request_id: str
    prediction: int | str = Field(description=PREDICTION)
    score: float = Field(description=SCORE)
    probabilities: dict[str, float] | None = Field(None, description=PROBABILITIES)
    model_version: int


class BatchItem(BaseModel):
    request_id: str
    prediction: int | str = Field(description=PREDICTION)
    score: float = Field(description=SCORE)
    probabilities: dict[str, float] | None = Field(None, description=PROBABILITIES)


class BatchPredictions(BaseModel):
    model_version: int
    predictions: list[BatchItem]


class Accepted(BaseModel):
    accepted: int = Field(description="Labels written to the label log.")


class ReloadResult(BaseModel):
    outcome: str = Field(description="loaded, unchanged, rejected or error.")
    version: int | None = Field(description="The champion version served after the check.")
    detail: str


class Status(BaseModel):
    status: str


class Ready(Status):
    model: str
    version: int


class NotReady(Status):
    reason: str


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """``schema`` with every ``#/$defs/...`` reference replaced by its definition (the
    models are not recursive), so it stands alone inside an operation."""
    if isinstance(schema, dict):
        ref = schema.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


def request_body(model: type[BaseModel] | TypeAdapter[Any], description: str) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON request body the endpoint reads itself."""
    schema = model.json_schema() if isinstance(model, TypeAdapter) else model.model_json_schema()
    inlined = _inline(schema, schema.get("$defs", {}))
    return {"requestBody": {"required": True, "description": description,
                            "content": {"application/json": {"schema": inlined}}}}


def problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


UNREADABLE: dict[int | str, dict[str, Any]] = {
    400: problem("Empty body, malformed JSON, invalid UTF-8 or nesting too deep."),
    408: problem("The body did not arrive whole within DRIFTLOOP_HTTP_BODY_TIMEOUT_SECONDS."),
    413: problem("The body is over DRIFTLOOP_SERVING_MAX_BODY_BYTES.")}
