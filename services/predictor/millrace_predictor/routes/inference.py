"""The Open Inference Protocol (KServe v2): health, model metadata and ``infer``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field

from millrace.http import problems
from millrace.json_values import JSON_INTEGER
from millrace_predictor.deps import PredictorDep, parse_many, predict_timed
from millrace_predictor.service import Predictor

router = APIRouter(
    prefix="/v2", tags=["open inference protocol"], responses=problems(400, 404, 413)
)


class InferInput(BaseModel):
    """One tensor: ``event``, BYTES, one JSON envelope (object or string) per element."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["event"]
    datatype: Literal["BYTES"]
    shape: list[Annotated[int, Field(ge=-1, le=2**31), JSON_INTEGER]] = Field(max_length=4)
    data: list[Any]


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=200)
    inputs: list[InferInput] = Field(min_length=1, max_length=1)


def _check_model(predictor: Predictor, name: str) -> None:
    if name != predictor.settings.model_name:
        raise HTTPException(404, f"unknown model {name!r}")


@router.get("/health/live")
def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", responses=problems(503))
def ready(predictor: PredictorDep, response: Response) -> dict[str, bool]:
    is_ready = predictor.models.current is not None
    response.status_code = 200 if is_ready else 503
    return {"ready": is_ready}


@router.get("/models/{name}")
def model(name: str, predictor: PredictorDep) -> dict[str, Any]:
    _check_model(predictor, name)
    current = predictor.models.current
    return {
        "name": name,
        "versions": [str(current.version)] if current else [],
        "platform": "millrace",
        "inputs": [{"name": "event", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "probability", "datatype": "FP64", "shape": [-1]}],
    }


@router.post("/models/{name}/infer", responses=problems(422, 503))
async def infer(name: str, body: InferRequest, predictor: PredictorDep) -> dict[str, Any]:
    """Input ``event``: BYTES, one JSON envelope (string or object) per element."""
    _check_model(predictor, name)
    tensor = body.inputs[0]
    events = parse_many(predictor.events, tensor.data, predictor.settings.max_batch)
    result = await predict_timed(predictor, events)
    probabilities = [row["probability"] for row in result["predictions"]]
    return {
        "model_name": name,
        "model_version": str(result["version"]),
        "id": body.id,
        "outputs": [
            {
                "name": "probability",
                "datatype": "FP64",
                "shape": [len(probabilities)],
                "data": probabilities,
            }
        ],
    }
