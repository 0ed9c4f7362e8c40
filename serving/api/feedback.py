"""POST /feedback: labels for answered predictions, into the label log.

The caller's bearer token is checked before the body is read; the labels are decoded with
the champion's label codec (its spec's labels, or its version's classes for a multi-class
champion) and stored in their canonical text, under the served model's name."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from serving.bodies import UNREADABLE, Accepted, FeedbackRequest, problem, request_body
from serving.deps import ChampionDep, FeedbackCaller, LogWriterDep, StateDep
from serving.feedback import canonical_labels, decoder
from serving.responses import HTTPProblem, json_response, problem_response, read_json

router = APIRouter(tags=["feedback"])


@router.post("/feedback", status_code=202, response_model=None, dependencies=[FeedbackCaller],
             openapi_extra=request_body(FeedbackRequest, "One label, or several under "
                                        '"labels"; each names the request_id it answers.'),
             responses={202: {"model": Accepted}, **UNREADABLE,
                        401: problem("Feedback disabled (no DRIFTLOOP_FEEDBACK_TOKEN), or a "
                                     "missing or wrong bearer token."),
                        422: problem("A missing, mistyped or unknown field, or a label the "
                                     "champion's spec does not define (each named)."),
                        503: problem("No model loaded yet, or the prediction log is off.")})
async def feedback(request: Request, state: StateDep, model: ChampionDep,
                   writer: LogWriterDep) -> Response:
    try:
        data = await read_json(request, state.settings.serving_max_body_bytes)
        labels = canonical_labels(data, decoder(model))
    except HTTPProblem as exc:
        state.count_refusal("/feedback")
        return problem_response(exc)
    received_at = state.clock.now()
    for request_id, label in labels:
        writer.append_label(request_id, label, model=model.name, received_at=received_at)
    return json_response(202, {"accepted": len(labels)})
