"""The plain FastAPI + joblib pattern, written the way tutorials write it — the baseline of the server bench.

A pydantic model with the four iris fields, ``model = joblib.load(...)`` at import, and a sync ``def``
endpoint that calls ``model.predict_proba([[...]])`` (FastAPI runs sync endpoints in its thread pool).
No micro-batching, no ONNX, no metrics, no request ids: the least a tutorial server does.

The model path comes from ``PLAIN_MODEL_PATH`` (the bench writes the same fitted pipeline our server
serves there); run with ``uvicorn bench.plain_app:app``.
"""

from __future__ import annotations

import os

import joblib
from fastapi import FastAPI
from pydantic import BaseModel

CLASS_NAMES = ["setosa", "versicolor", "virginica"]

model = joblib.load(os.environ.get("PLAIN_MODEL_PATH", "bench/.work/model.joblib"))
app = FastAPI(title="iris (plain FastAPI + joblib)")


class Iris(BaseModel):
    sepal_length_cm: float
    sepal_width_cm: float
    petal_length_cm: float
    petal_width_cm: float


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
def predict(item: Iris) -> dict[str, object]:
    probabilities = model.predict_proba(
        [[item.sepal_length_cm, item.sepal_width_cm, item.petal_length_cm, item.petal_width_cm]]
    )[0]
    return {
        "class": CLASS_NAMES[int(probabilities.argmax())],
        "probabilities": dict(zip(CLASS_NAMES, probabilities.tolist(), strict=True)),
    }
