"""The canary judge sees what the router assigned, and tells client errors from regressions."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from modelferry.endpoints.counters import metrics_between
from modelferry.endpoints.rollout import RolloutPolicy, judge_measured_step
from modelferry.endpoints.spec import TrafficSplit
from modelferry.serving.app import ScoringApp
from modelferry.serving.model import ServingModel
from modelferry.serving.routing import RoutingTable
from modelferry.serving.schema import FeatureSpec
from tests.scoring_app import COLUMNS, DATA, breast_cancer_model, call

KEY = "k-canary"
POLICY = RolloutPolicy(min_requests=5)


class FailingPredictor:
    def predict_proba(self, features: Any) -> Any:
        raise RuntimeError("model exploded")


@pytest.fixture(scope="module")
def model() -> ServingModel:
    return breast_cancer_model()


def good() -> dict[str, Any]:
    data = DATA.data.head(2).to_numpy().tolist()
    return {"input_data": {"columns": COLUMNS, "index": [0, 1], "data": data}}


def request(body: Any, **headers: str) -> dict[str, Any]:
    headers["Authorization"] = f"Bearer {KEY}"
    return {"method": "POST", "url": "/score", "json": body, "headers": headers}


def canary(blue: ServingModel, green: ServingModel, requests: list[dict[str, Any]]) -> Any:
    """Serve blue 50 / green 50, send `requests`, judge green against blue."""
    app = ScoringApp("ep", SecretStr(KEY))
    app.install(
        RoutingTable.build({"blue": blue, "green": green}, TrafficSplit({"blue": 50, "green": 50}))
    )
    start = app.telemetry.reading(["blue", "green"])
    statuses = [response.status_code for response in call(app, requests)]
    measured = metrics_between(start, app.telemetry.reading(["blue", "green"]))
    verdict = judge_measured_step(measured, "green", "blue", POLICY)
    return statuses, measured.deployments, verdict


def test_pinned_flood_of_bad_requests_does_not_sink_the_canary(model: ServingModel) -> None:
    bad = {"input_data": {"columns": ["nope"], "index": [0], "data": [["x"]]}}
    flood = [request(bad, **{"azureml-model-deployment": "green"}) for _ in range(148)]
    routed = [request(good()) for _ in range(60)]
    statuses, metrics, verdict = canary(model, model, flood + routed)
    assert statuses.count(400) == 148
    assert metrics["green"].requests >= 5  # routed traffic only: the pinned flood is not in it
    assert metrics["green"].requests < 148
    assert verdict.passed, verdict.reason


def test_routed_bad_requests_every_deployment_refuses_are_client_errors(
    model: ServingModel,
) -> None:
    bad = {"input_data": {"columns": ["nope"], "index": [0], "data": [["x"]]}}
    statuses, metrics, verdict = canary(model, model, [request(bad) for _ in range(100)])
    assert set(statuses) == {400}
    assert metrics["green"].errors == 0
    assert verdict.passed, verdict.reason


def test_routed_5xx_still_fails_the_canary(model: ServingModel) -> None:
    broken = ServingModel("m", "2", model.features, model.class_names, FailingPredictor())
    pinned_good = [request(good(), **{"azureml-model-deployment": "blue"}) for _ in range(50)]
    statuses, metrics, verdict = canary(
        model, broken, [request(good()) for _ in range(60)] + pinned_good
    )
    assert 500 in statuses
    assert metrics["green"].errors == metrics["green"].requests > 0
    assert not verdict.passed
    assert "error rate" in verdict.reason


def test_schema_break_the_old_deployment_accepts_still_fails_the_canary(
    model: ServingModel,
) -> None:
    renamed = tuple(FeatureSpec(f"{c} v2", "double") for c in COLUMNS)
    breaking = ServingModel("m", "3", renamed, model.class_names, model.predictor)
    statuses, metrics, verdict = canary(model, breaking, [request(good()) for _ in range(60)])
    assert 400 in statuses
    assert metrics["green"].errors == metrics["green"].requests > 0
    assert not verdict.passed
