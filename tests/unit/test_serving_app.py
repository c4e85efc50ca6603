"""The scoring app in-process: auth, routing, pinning, mirroring, limits and metrics."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from modelferry.endpoints.spec import TrafficSplit
from modelferry.serving.app import ScoringApp
from modelferry.serving.model import ServingModel
from modelferry.serving.routing import RoutingTable
from tests.scoring_app import COLUMNS, DATA, breast_cancer_model, call

KEY = "k-123"


class FailingPredictor:
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        raise RuntimeError("model exploded")


@pytest.fixture(scope="module")
def model() -> ServingModel:
    return breast_cancer_model()


def payload(rows: int = 2) -> dict[str, Any]:
    data = DATA.data.head(rows).to_numpy().tolist()
    return {"input_data": {"columns": COLUMNS, "index": list(range(rows)), "data": data}}


def make_app(models: dict[str, ServingModel], traffic: TrafficSplit, **kw: Any) -> ScoringApp:
    app = ScoringApp("ep", SecretStr(KEY), **kw)
    app.install(RoutingTable.build(models, traffic))
    return app


def score(body: Any = None, key: str | None = KEY, **headers: str) -> dict[str, Any]:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return {"method": "POST", "url": "/score", "json": body or payload(), "headers": headers}


def test_scores_with_class_probabilities(model: ServingModel) -> None:
    (response,) = call(make_app({"blue": model}, TrafficSplit({"blue": 100})), [score()])
    assert response.status_code == 200
    answer = response.json()
    assert answer["classes"] == ["malignant", "benign"]
    assert answer["deployment"] == "blue"
    assert response.headers["azureml-model-deployment"] == "blue"
    proba = np.array(answer["predictions"])
    assert proba.shape == (2, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert proba[0, 0] > 0.5  # the first rows of the dataset are malignant


def test_key_is_required(model: ServingModel) -> None:
    app = make_app({"blue": model}, TrafficSplit({"blue": 100}))
    missing, wrong = call(app, [score(key=None), score(key="nope")])
    assert missing.status_code == wrong.status_code == 401
    assert KEY not in missing.text


def test_weighted_split_and_pinning(model: ServingModel) -> None:
    app = make_app({"blue": model, "green": model}, TrafficSplit({"blue": 80, "green": 20}))
    responses = call(app, [score() for _ in range(400)])
    counts = Counter(r.json()["deployment"] for r in responses)
    assert 250 < counts["blue"] < 390
    assert counts["blue"] + counts["green"] == 400
    pinned = call(app, [score(**{"azureml-model-deployment": "green"}) for _ in range(20)])
    assert {r.json()["deployment"] for r in pinned} == {"green"}
    (unknown,) = call(app, [score(**{"azureml-model-deployment": "red"})])
    assert unknown.status_code == 404


def test_mirror_gets_copies_and_client_never_sees_them(model: ServingModel) -> None:
    traffic = TrafficSplit({"blue": 100}, mirror={"shadow": 50})
    app = make_app({"blue": model, "shadow": model}, traffic)
    responses = call(app, [score() for _ in range(200)])
    assert {r.json()["deployment"] for r in responses} == {"blue"}
    metrics = call(app, [{"method": "GET", "url": "/metrics", "headers": score()["headers"]}])
    text = metrics[0].text
    mirrored = next(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("modelferry_mirrored_requests_total") and 'deployment="shadow"' in line
    )
    assert 60 < mirrored < 140


def test_bad_input_is_400_never_500(model: ServingModel) -> None:
    app = make_app({"blue": model}, TrafficSplit({"blue": 100}))
    bad = payload()
    bad["input_data"]["columns"] = [*COLUMNS[:-1], "surprise"]
    (response,) = call(app, [score(bad)])
    assert response.status_code == 400
    assert "surprise" in response.json()["error"]
    assert "worst fractal dimension" in response.json()["error"]


def test_body_and_row_limits(model: ServingModel) -> None:
    app = make_app({"blue": model}, TrafficSplit({"blue": 100}), max_body_bytes=2000, max_rows=5)
    too_big, too_many = call(app, [score(payload(50)), score({"inputs": [[0.0] * 30] * 6})])
    assert too_big.status_code == 413
    assert too_many.status_code == 413


def test_model_failure_is_500_and_counted(model: ServingModel) -> None:
    broken = ServingModel("m", "2", model.features, model.class_names, FailingPredictor())
    app = make_app({"blue": broken}, TrafficSplit({"blue": 100}))
    (response,) = call(app, [score()])
    assert response.status_code == 500
    counted = app.telemetry.reading(["blue"]).deployments["blue"]
    assert counted.requests == 1
    assert counted.errors == 1


def test_health_and_metrics(model: ServingModel) -> None:
    empty = ScoringApp("ep", SecretStr(KEY))
    live, ready = call(
        empty, [{"method": "GET", "url": "/health/live"}, {"method": "GET", "url": "/health/ready"}]
    )
    assert live.status_code == 200
    assert ready.status_code == 503
    (no_traffic,) = call(empty, [score()])
    assert no_traffic.status_code == 503

    app = make_app({"blue": model}, TrafficSplit({"blue": 100}))
    call(app, [score(), score({"inputs": "x"})])
    (metrics,) = call(app, [{"method": "GET", "url": "/metrics", "headers": score()["headers"]}])
    assert 'modelferry_requests_total{endpoint="ep",deployment="blue",code="200"} 1' in metrics.text
    assert 'modelferry_requests_total{endpoint="ep",deployment="blue",code="400"} 1' in metrics.text
    assert "modelferry_request_duration_seconds_bucket" in metrics.text
    (unauthorised,) = call(app, [{"method": "GET", "url": "/metrics"}])
    assert unauthorised.status_code == 401


def test_routing_table_refuses_traffic_to_unloaded(model: ServingModel) -> None:
    with pytest.raises(KeyError, match="not loaded"):
        RoutingTable.build({"blue": model}, TrafficSplit({"green": 100}))


def test_wrong_method_is_405_with_allow(model: ServingModel) -> None:
    app = make_app({"blue": model}, TrafficSplit({"blue": 100}))
    requests = [
        {"method": "GET", "url": "/score"},
        {"method": "POST", "url": "/health/live"},
        {"method": "DELETE", "url": "/health/ready"},
        {"method": "POST", "url": "/metrics"},
        {"method": "GET", "url": "/nowhere"},
    ]
    wrong_score, wrong_live, wrong_ready, wrong_metrics, unknown = call(app, requests)
    assert (wrong_score.status_code, wrong_score.headers["allow"]) == (405, "POST")
    assert (wrong_live.status_code, wrong_live.headers["allow"]) == (405, "GET, HEAD")
    assert (wrong_ready.status_code, wrong_ready.headers["allow"]) == (405, "GET, HEAD")
    assert (wrong_metrics.status_code, wrong_metrics.headers["allow"]) == (405, "GET")
    assert unknown.status_code == 404


def test_large_bad_request_is_refused_at_the_bad_cell(model: ServingModel) -> None:
    document = payload(3)
    document["input_data"]["data"] = document["input_data"]["data"] * 4000
    document["input_data"]["index"] = list(range(12_000))
    document["input_data"]["data"][-1] = [*document["input_data"]["data"][-1][:-1], "bad"]
    (response,) = call(make_app({"blue": model}, TrafficSplit({"blue": 100})), [score(document)])
    assert response.status_code == 400
    assert "row 11999 holds str 'bad'" in response.json()["error"]


def test_large_requests_beyond_the_cap_get_503_with_retry_after(model: ServingModel) -> None:
    app = make_app({"blue": model}, TrafficSplit({"blue": 100}))
    document = payload(3)
    document["input_data"]["data"] = document["input_data"]["data"] * 2000
    document["input_data"]["index"] = list(range(6000))
    while app.large.try_enter():  # as if that many large requests were being parsed
        pass
    busy, small = call(app, [score(document), score()])
    assert (busy.status_code, busy.headers["retry-after"]) == (503, "1")
    assert small.status_code == 200
    app.large.leave()
    (served,) = call(app, [score(document)])
    assert served.status_code == 200
    assert len(served.json()["predictions"]) == 6000
    app.large.close()


def test_large_requests_are_mirrored_too(model: ServingModel) -> None:
    traffic = TrafficSplit({"blue": 100}, mirror={"shadow": 50})
    app = make_app({"blue": model, "shadow": model}, traffic)
    app._random = lambda: 0.0  # a draw that the 50 % mirror takes
    document = payload(3)
    document["input_data"]["data"] = document["input_data"]["data"] * 2000
    document["input_data"]["index"] = list(range(6000))
    try:
        (served,) = call(app, [score(document)])
    finally:
        app.large.close()
    assert (served.status_code, served.json()["deployment"]) == (200, "blue")
    shadow = app.telemetry.reading(["shadow"]).deployments["shadow"]
    assert shadow.requests == 1
