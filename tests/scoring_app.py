"""The scoring app in-process for unit tests: a small real model, requests without a server."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import httpx
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from modelferry.serving.app import ScoringApp
from modelferry.serving.model import EstimatorPredictor, ServingModel
from modelferry.serving.schema import FeatureSpec

DATA = load_breast_cancer(as_frame=True)
COLUMNS = list(DATA.data.columns)


@functools.cache
def breast_cancer_model() -> ServingModel:
    """A logistic regression on the breast-cancer data (30 features), trained once."""
    estimator = LogisticRegression(max_iter=5000).fit(DATA.data.to_numpy(), DATA.target)
    features = tuple(FeatureSpec(c, "double") for c in COLUMNS)
    return ServingModel("m", "1", features, ("malignant", "benign"), EstimatorPredictor(estimator))


def call(app: ScoringApp, requests: list[dict[str, Any]]) -> list[httpx.Response]:
    """Send `requests` (keyword arguments of `httpx.AsyncClient.request`) in turn to `app`."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ep") as client:
            return [await client.request(**request) for request in requests]

    return asyncio.run(run())
