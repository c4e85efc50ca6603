"""What users expect of any scoring server: request ids, Prometheus conventions, 405s."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from pydantic import SecretStr

from modelferry.endpoints.spec import TrafficSplit
from modelferry.serving.app import ScoringApp
from modelferry.serving.model import ServingModel
from modelferry.serving.routing import RoutingTable
from modelferry.serving.schema import FeatureSpec
from tests.scoring_app import call

KEY = "k-conventions"
AUTH = {"Authorization": f"Bearer {KEY}"}


class HalfPredictor:
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return np.full((features.shape[0], 2), 0.5)


def served(name: str, version: str) -> ServingModel:
    return ServingModel(
        name, version, (FeatureSpec("x", "double"),), ("no", "yes"), HalfPredictor()
    )


def make_app(**kw: Any) -> ScoringApp:
    app = ScoringApp("ep", SecretStr(KEY), max_body_bytes=200, **kw)
    models = {"blue": served("churn", "3"), "green": served('odd "name"\\', "4")}
    app.install(RoutingTable.build(models, TrafficSplit({"blue": 100})))
    return app


def score(**headers: str) -> dict[str, Any]:
    body = {"inputs": [[1.0]]}
    return {"method": "POST", "url": "/score", "json": body, "headers": {**AUTH, **headers}}


# One request for each kind of answer the server gives.
EVERY_ANSWER = {
    200: score(),
    400: {"method": "POST", "url": "/score", "content": b"{", "headers": AUTH},
    401: {"method": "POST", "url": "/score", "json": {"inputs": [[1.0]]}},
    404: score(**{"azureml-model-deployment": "red"}),
    405: {"method": "GET", "url": "/score"},
    413: {"method": "POST", "url": "/score", "content": b" " * 300, "headers": AUTH},
}


def test_every_answer_carries_a_new_request_id() -> None:
    app = make_app()
    requests = [*EVERY_ANSWER.values(), {"method": "GET", "url": "/nowhere"}]
    requests += [{"method": "GET", "url": "/health/live"}, {"method": "GET", "url": "/metrics"}]
    responses = call(app, requests)
    assert [r.status_code for r in responses] == [*EVERY_ANSWER, 404, 200, 401]
    ids = [r.headers.get("x-request-id", "") for r in responses]
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in ids), ids
    assert len(set(ids)) == len(ids)


def test_a_503_carries_a_request_id_too() -> None:
    (no_traffic,) = call(ScoringApp("ep", SecretStr(KEY)), [score()])
    assert no_traffic.status_code == 503
    assert len(no_traffic.headers["x-request-id"]) == 32


def test_a_safe_client_id_is_echoed_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="modelferry.requests")
    app = make_app(log_sample=1.0)
    ok, unknown_route = call(
        app,
        [
            score(**{"x-request-id": "client-7:a.b"}),
            {"method": "GET", "url": "/nowhere", "headers": {"x-request-id": "client-8"}},
        ],
    )
    assert ok.headers["x-request-id"] == "client-7:a.b"
    assert unknown_route.headers["x-request-id"] == "client-8"
    (line,) = [r.getMessage() for r in caplog.records if r.name == "modelferry.requests"]
    assert line.endswith("request_id=client-7:a.b")


def test_an_unsafe_client_id_is_replaced_and_the_new_one_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="modelferry.requests")
    (refused,) = call(
        make_app(), [{**EVERY_ANSWER[400], "headers": {**AUTH, "x-request-id": "a b"}}]
    )
    request_id = refused.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "modelferry.requests"]
    assert line.endswith(f"request_id={request_id}")


def metrics(app: ScoringApp) -> httpx.Response:
    (response,) = call(app, [{"method": "GET", "url": "/metrics", "headers": AUTH}])
    assert response.status_code == 200
    return response


def samples(text: str) -> dict[str, float]:
    """Metric line (name and labels) -> value."""
    lines = (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    return {series: float(value) for series, value in lines}


def test_metrics_have_the_prometheus_content_type() -> None:
    content_type = metrics(make_app()).headers["content-type"]
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"


def test_process_metrics_are_those_of_the_prometheus_client() -> None:
    text = metrics(make_app()).text
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    reference = generate_latest(registry).decode()
    expected = [line for line in reference.splitlines() if line.startswith("#")]
    assert expected  # this platform has process metrics to compare
    assert [line for line in expected if line not in text] == []
    values = samples(text)
    process = psutil.Process()
    assert values["process_start_time_seconds"] == pytest.approx(process.create_time(), abs=1)
    assert 0 < values["process_cpu_seconds_total"] <= time.process_time() + 1
    assert values["process_resident_memory_bytes"] == pytest.approx(
        process.memory_info().rss, rel=0.2
    )
    assert values["process_open_fds"] == pytest.approx(len(os.listdir("/proc/self/fd")), abs=5)
    assert values["process_max_fds"] == float(psutil.Process().rlimit(psutil.RLIMIT_NOFILE)[0])


def test_model_info_names_each_deployments_model() -> None:
    text = metrics(make_app()).text
    assert "# TYPE modelferry_model_info gauge" in text
    info = {series: value for series, value in samples(text).items() if "model_info" in series}
    assert info == {
        'modelferry_model_info{endpoint="ep",deployment="blue",model_name="churn",'
        'model_version="3"}': 1.0,
        'modelferry_model_info{endpoint="ep",deployment="green",model_name="odd \\"name\\"\\\\",'
        'model_version="4"}': 1.0,
    }


def test_answers_before_a_deployment_is_chosen_are_counted_by_code() -> None:
    app = make_app()
    call(app, [EVERY_ANSWER[401], EVERY_ANSWER[401], EVERY_ANSWER[405]])
    call(app, [{"method": "GET", "url": "/nowhere"}, EVERY_ANSWER[404]])
    values = samples(metrics(app).text)
    unrouted = {k: v for k, v in values.items() if k.startswith("modelferry_unrouted_requests")}
    assert unrouted == {
        'modelferry_unrouted_requests_total{endpoint="ep",code="401"}': 2.0,
        'modelferry_unrouted_requests_total{endpoint="ep",code="404"}': 2.0,
        'modelferry_unrouted_requests_total{endpoint="ep",code="405"}': 1.0,
    }
