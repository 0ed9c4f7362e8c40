"""POST /predict and /predict/batch: the hot path.

The body is read and checked by hand (serving/schema.py) in ``async def`` endpoints; the
pydantic models in serving/bodies.py only document it.

A binary version answers ``prediction`` 1/0 and ``score`` (the positive-class probability).
A multi-class version answers ``prediction`` as its class text (the argmax, ties to the
first class as numpy's argmax), ``score`` the top probability and ``probabilities``
``{class: probability}`` in the version's class order; its log rows carry the class text
and the probability list. Text features are counted (serving/metrics.py) in either kind."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from kernel.metrics import THRESHOLD
from serving.bodies import (
    UNREADABLE,
    BatchPredictions,
    BatchRequest,
    Prediction,
    PredictRequest,
    problem,
    request_body,
)
from serving.deps import not_ready, serving_state
from serving.model import LoadedModel, top
from serving.responses import JSON, HTTPProblem, json_response, problem_response, read_json
from serving.schema import RecordError, field_name
from serving.state import ServingState

router = APIRouter(tags=["predict"])
NOT_READY: dict[int | str, dict[str, Any]] = {503: problem("No model loaded yet (the reason is given).")}


def new_request_id() -> str:
    """128 random bits as 32 hex digits, the form of ``uuid4().hex`` at a fifth of its cost
    (0.5 against 2.4 us: no UUID object is built on the request path)."""
    return os.urandom(16).hex()


def row(model: LoadedModel, ts: float, request_id: str, score: float, prediction: int | str,
        latency_ms: float, record: dict[str, Any],
        probabilities: list[float] | None = None) -> dict[str, Any]:
    """One prediction log row (the shadow logger fills the shadow columns). A multi-class
    version's (``probabilities`` given): ``prediction`` its class text, ``probabilities``
    every class's in the version's order, ``shadow_probabilities`` for the shadow logger."""
    if probabilities is None:
        return {"ts": ts, "request_id": request_id, "model_name": model.name,
                "model_version": model.version, "score": score, "prediction": prediction,
                "shadow_version": None, "shadow_score": None, "latency_ms": latency_ms,
                **record}
    return {"ts": ts, "request_id": request_id, "model_name": model.name,
            "model_version": model.version, "score": score, "prediction": prediction,
            "probabilities": probabilities, "shadow_version": None, "shadow_score": None,
            "shadow_probabilities": None, "latency_ms": latency_ms, **record}


@router.post("/predict", response_model=None, openapi_extra=request_body(
    PredictRequest, "One record with every feature of the served version's spec."),
    responses={200: {"model": Prediction}, **UNREADABLE, **NOT_READY,
               422: problem("Not an object, a missing, mistyped or unknown field (named).")})
async def predict(request: Request) -> Response:
    started = time.perf_counter()
    state = serving_state(request)
    model = state.champion
    if model is None:
        return problem_response(not_ready(state))
    try:
        data = await read_json(request, state.settings.serving_max_body_bytes)
        record, request_id = model.schema.parse(data)
    except HTTPProblem as exc:
        state.count_refusal("/predict")
        return problem_response(exc)
    except RecordError as exc:
        state.count_refusal("/predict")
        return json_response(422, {"detail": f"invalid record: {exc}", "errors": exc.problems})
    if model.classes is not None:
        return await _predict_class(state, model, record, request_id, started)
    if model.fast is not None:
        score = model.fast.score(record)
    else:
        score = await run_in_threadpool(model.score_one, record)
    prediction = 1 if score > THRESHOLD else 0
    request_id = request_id or new_request_id()
    state.count_prediction(model, score, prediction, model.schema.observe(record))
    if model.schema.text:
        state.count_texts(model, record)
    logged = row(model, state.clock.time(), request_id, score, prediction,
                 (time.perf_counter() - started) * 1000.0, record)
    state.shadow.submit([logged], [record], state.follower.challenger)  # type: ignore[union-attr]
    return Response(json.dumps({"request_id": request_id, "prediction": prediction,
                                "score": score, "model_version": model.version}),
                    media_type=JSON)


async def _predict_class(state: ServingState, model: LoadedModel, record: dict[str, Any],
                         request_id: str | None, started: float) -> Response:
    """/predict for a multi-class version: the class, its probability, every class's."""
    classes = model.classes
    assert classes is not None
    if model.fast is not None and model.fast.proba is not None:
        proba = model.fast.proba(record)
    else:
        proba = await run_in_threadpool(model.proba_one, record)
    best = top(proba)
    prediction, score = classes[best], proba[best]
    request_id = request_id or new_request_id()
    state.count_class(model, score, prediction, model.schema.observe(record))
    if model.schema.text:
        state.count_texts(model, record)
    logged = row(model, state.clock.time(), request_id, score, prediction,
                 (time.perf_counter() - started) * 1000.0, record, proba)
    state.shadow.submit([logged], [record], state.follower.challenger)  # type: ignore[union-attr]
    return Response(json.dumps({"request_id": request_id, "prediction": prediction,
                                "score": score,
                                "probabilities": dict(zip(classes, proba, strict=True)),
                                "model_version": model.version}),
                    media_type=JSON)


def parse_batch(data: Any, model: LoadedModel,
                batch_limit: int) -> list[tuple[dict[str, Any], str | None]]:
    """``{"records": [...]}`` -> [(features, request id)]; 422/413 naming what is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise HTTPProblem(422, 'expected {"records": [ {...}, ... ]}')
    unknown = sorted(field_name(k) for k in data if k != "records")
    if unknown:
        raise HTTPProblem(422, f"unknown fields: {unknown}",
                          {k: "unknown field" for k in unknown[:10]})
    items = data["records"]
    if not items:
        raise HTTPProblem(422, "empty batch: send at least one record")
    if len(items) > batch_limit:
        raise HTTPProblem(413, f"batch of {len(items)} records is over the limit of "
                          f"{batch_limit}")
    parsed, problems = [], {}
    for i, item in enumerate(items):
        try:
            parsed.append(model.schema.parse(item, where=f"records[{i}]."))
        except RecordError as exc:
            problems.update({f"records[{i}].{k}": v for k, v in exc.problems.items()})
            if len(problems) >= 50:
                break
    if problems:
        raise HTTPProblem(422, f"invalid records: {len(problems)} problem(s), "
                          f"first: {next(iter(problems.items()))}", problems)
    return parsed


@router.post("/predict/batch", response_model=None, openapi_extra=request_body(
    BatchRequest, "Records to score in one call, each as for /predict."),
    responses={200: {"model": BatchPredictions}, **UNREADABLE, **NOT_READY,
               413: problem("The body is over the byte limit or the batch over "
                            "DRIFTLOOP_SERVING_BATCH_LIMIT."),
               422: problem("Not {records: [...]}, an empty batch, or invalid records "
                            "(each problem named records[i].field).")})
async def predict_batch(request: Request) -> Response:
    started = time.perf_counter()
    state = serving_state(request)
    model = state.champion
    if model is None:
        return problem_response(not_ready(state))
    try:
        data = await read_json(request, state.settings.serving_max_body_bytes)
        parsed = parse_batch(data, model, state.settings.serving_batch_limit)
    except HTTPProblem as exc:
        state.count_refusal("/predict/batch")
        return problem_response(exc)
    if model.classes is not None:
        return await _predict_class_batch(state, model, parsed, started)
    records = [r for r, _ in parsed]
    scores = await run_in_threadpool(model.score_many, records)
    now = state.clock.time()  # epoch seconds: the log converts them in bulk
    latency = (time.perf_counter() - started) * 1000.0
    out, rows = [], []
    for (record, rid), s in zip(parsed, scores, strict=True):
        score = float(s)
        prediction = 1 if score > THRESHOLD else 0
        rid = rid or new_request_id()
        state.count_prediction(model, score, prediction, model.schema.observe(record))
        if model.schema.text:
            state.count_texts(model, record)
        out.append({"request_id": rid, "prediction": prediction, "score": score})
        rows.append(row(model, now, rid, score, prediction, latency, record))
    state.shadow.submit(rows, records, state.follower.challenger)  # type: ignore[union-attr]
    return json_response(200, {"model_version": model.version, "predictions": out})


async def _predict_class_batch(state: ServingState, model: LoadedModel,
                               parsed: list[tuple[dict[str, Any], str | None]],
                               started: float) -> Response:
    """/predict/batch for a multi-class version: one ``predict_proba`` for the batch."""
    classes = model.classes
    assert classes is not None
    records = [r for r, _ in parsed]
    matrix = await run_in_threadpool(model.proba_many, records)
    best = matrix.argmax(axis=1).tolist()
    now = state.clock.time()
    latency = (time.perf_counter() - started) * 1000.0
    out, rows = [], []
    for (record, rid), proba, i in zip(parsed, matrix.tolist(), best, strict=True):
        prediction, score = classes[i], proba[i]
        rid = rid or new_request_id()
        state.count_class(model, score, prediction, model.schema.observe(record))
        if model.schema.text:
            state.count_texts(model, record)
        out.append({"request_id": rid, "prediction": prediction, "score": score,
                    "probabilities": dict(zip(classes, proba, strict=True))})
        rows.append(row(model, now, rid, score, prediction, latency, record, proba))
    state.shadow.submit(rows, records, state.follower.challenger)  # type: ignore[union-attr]
    return json_response(200, {"model_version": model.version, "predictions": out})
