"""What the controller's HTTP endpoints take and answer, as pydantic models.

The request bodies are read by hand (after the token check, within the size limit) and
validated here, so that nothing is parsed for a caller without the token; the same models
describe the bodies in ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.intake import AlertmanagerPayload
from monitoring.verdict import Verdict

#: Versions are stored as SQL integers: anything larger is refused before it gets there.
MAX_VERSION = 2**31 - 1


class RetrainRequest(BaseModel):
    """``POST /retrain``: an emergency manual retrain (skips the cooldown, still gated)."""

    reason: str = Field(min_length=1, max_length=2000, description="Kept in the audit trail.")
    model: str | None = Field(None, max_length=200, description="Registered model (default: "
                              "the only one the controller manages).")
    actor: str = Field("human", min_length=1, max_length=200, description="Who asks: a person's "
                       "name (the CLI sends --actor, default $USER); the decision run's user.")


class RollbackRequest(RetrainRequest):
    """``POST /rollback``: point @champion back at @previous."""


class PromoteRequest(RetrainRequest):
    """``POST /promote``: point @champion at ``version`` (the old one kept as @previous)."""

    version: int = Field(ge=1, le=MAX_VERSION, description="Version to make champion.")
    allow_schema_change: str | None = Field(
        None, min_length=1, max_length=2000, description="Promote a version whose input schema "
        "would refuse requests the champion accepts: name every change, comma-separated, as "
        "the refusal names them (e.g. 'dropped:support_tickets' or "
        "'renamed:plan->plan_name,added:region'). Kept in the decision's reasons.")

    def allowed_changes(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in (self.allow_schema_change or "").split(",") if n.strip())


# Backwards-compatible names (the bodies were called this before they had their own module).
RetrainBody = RetrainRequest
PromoteBody = PromoteRequest


class ErrorAnswer(BaseModel):
    """Every refusal but a validation error: the reason in ``detail``."""

    detail: str


class ValidationIssue(BaseModel):
    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class ValidationAnswer(BaseModel):
    """422: the body did not validate; one entry per problem (FastAPI's shape)."""

    detail: list[ValidationIssue]


class IntakeAnswer(BaseModel):
    """What a webhook or verdict did: counts, the trigger rows made and notes."""

    accepted: int
    duplicates: int
    resolved: int
    ignored: int
    trigger_ids: list[int]
    notes: list[str]


class ManualAnswer(BaseModel):
    """A manual command: 200 once the controller took it (``outcome``, and ``cycle_id`` of
    the cycle or override it started or joined), 202 while it is still pending."""

    model: str
    action: Literal["retrain", "promote", "rollback"]
    trigger_id: int
    status: str
    outcome: str | None = None
    cycle_id: str | None = None
    detail: str | None = None


class HealthAnswer(BaseModel):
    status: Literal["ok"]
    models: list[str]


def _issues(exc: ValidationError) -> list[dict[str, Any]]:
    """FastAPI's 422 entries (``loc`` under ``body``), with only JSON-safe inputs kept."""
    issues: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False, include_context=False):
        issue: dict[str, Any] = {"type": err["type"], "loc": ["body", *err["loc"]],
                                 "msg": err["msg"]}
        if err["type"] == "json_invalid":
            issue["input"] = {}
        elif isinstance(err.get("input"), str | int | bool | None) and \
                not (isinstance(err["input"], int) and abs(err["input"]) > MAX_VERSION):
            issue["input"] = err["input"]
        issues.append(issue)
    return issues


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], raw: bytes) -> M:
    """``raw`` as ``model``; a RequestValidationError (422) for anything malformed."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(_issues(exc)) from None


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads ``model`` by hand: the body, required."""
    return {"requestBody": {"content": {"application/json": {"schema": {
        "$ref": f"#/components/schemas/{model.__name__}"}}}, "required": True}}


#: The models the document refers to by name (bodies read by hand are not seen by FastAPI).
DOCUMENTED_BODIES: tuple[type[BaseModel], ...] = (
    AlertmanagerPayload, Verdict, RetrainRequest, PromoteRequest, RollbackRequest)


def add_body_schemas(document: dict[str, Any]) -> dict[str, Any]:
    """Register the hand-read bodies (and the models they nest) under components/schemas."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in DOCUMENTED_BODIES:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return document
