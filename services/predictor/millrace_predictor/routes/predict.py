"""``POST /predict`` and ``POST /predict/batch``: envelopes in, probabilities and the version
that computed them out."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request

from millrace.http import problems
from millrace_predictor.deps import PredictorDep, parse_many, parse_one, predict_timed

# The request bodies are documented from the feature module when the app is made (app.py).
router = APIRouter(tags=["predict"], responses=problems(413, 422, 503))


@router.post("/predict")
async def predict(request: Request, predictor: PredictorDep) -> dict[str, Any]:
    """One event in the envelope the events topic carries (any content type)."""
    result = await predict_timed(predictor, [parse_one(predictor.events, await request.body())])
    return {**result.pop("predictions")[0], **result}


@router.post("/predict/batch")
async def predict_batch(request: Request, predictor: PredictorDep) -> dict[str, Any]:
    """``{"events": [...]}``: all answered by one model version, in order."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise HTTPException(422, 'expected {"events": [...]}')
    events = parse_many(predictor.events, body.get("events"), predictor.settings.max_batch)
    return await predict_timed(predictor, events)
