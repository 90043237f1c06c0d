"""The limit the predictor is measured against: FastAPI answering a constant, reading the same
body, under the same uvicorn settings."""

from fastapi import FastAPI, Request

app = FastAPI()
CONSTANT = {"model": "constant", "version": 0, "probability": 0.5}


@app.post("/predict")
async def predict(request: Request) -> dict:
    await request.body()
    return CONSTANT
