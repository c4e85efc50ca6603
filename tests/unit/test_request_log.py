"""The scoring app's request log: failures always, successes sampled, no bodies or keys."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
from pydantic import SecretStr

from modelferry.endpoints.spec import TrafficSplit
from modelferry.errors import InvalidConfigError
from modelferry.serving.app import ScoringApp
from modelferry.serving.model import ServingModel
from modelferry.serving.request_log import request_id, request_log_sample
from modelferry.serving.routing import RoutingTable
from tests.scoring_app import COLUMNS, DATA, breast_cancer_model, call

KEY = "k-secret-123"


@pytest.fixture(scope="module")
def model() -> ServingModel:
    return breast_cancer_model()


def app_for(model: ServingModel, log_sample: float) -> ScoringApp:
    app = ScoringApp("ep", SecretStr(KEY), log_sample=log_sample)
    models = {"blue": model, "green": model}
    app.install(RoutingTable.build(models, TrafficSplit({"blue": 50, "green": 50})))
    return app


def body(rows: int = 2) -> dict[str, Any]:
    data = DATA.data.head(rows).to_numpy().tolist()
    return {"input_data": {"columns": COLUMNS, "index": list(range(rows)), "data": data}}


def post(app: ScoringApp, requests: list[tuple[Any, dict[str, str]]]) -> list[int]:
    auth = {"Authorization": f"Bearer {KEY}"}
    sent = [
        {"method": "POST", "url": "/score", "json": payload, "headers": {**auth, **headers}}
        for payload, headers in requests
    ]
    return [response.status_code for response in call(app, sent)]


def request_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "modelferry.requests"]


def test_every_request_is_one_line_without_body_or_key(
    model: ServingModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modelferry.requests")
    pin = {"azureml-model-deployment": "green", "x-request-id": "req-42"}
    statuses = post(app_for(model, 1.0), [(body(3), pin), ({"input_data": {}}, {})])
    assert statuses[0] == 200
    ok, refused = request_lines(caplog)
    fields = dict(word.split("=", 1) for word in ok.split()[1:])
    assert fields.keys() == {"deployment", "status", "rows", "latency_ms", "request_id"}
    assert (fields["deployment"], fields["status"], fields["rows"]) == ("green", "200", "3")
    assert fields["request_id"] == "req-42"
    assert float(fields["latency_ms"]) > 0
    assert f"status={statuses[1]} rows=0" in refused
    assert len(refused.split("request_id=")[1]) == 32  # none sent: one is made
    logged = caplog.text + "".join(request_lines(caplog))
    assert KEY not in logged
    assert "mean radius" not in logged
    assert str(DATA.data.iloc[0, 0]) not in logged


def test_successes_are_sampled_and_failures_always_logged(
    model: ServingModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modelferry.requests")
    post(app_for(model, 0.0), [(body(), {})] * 20 + [({"input_data": {}}, {})] * 3)
    lines = request_lines(caplog)
    assert len(lines) == 3
    assert all("status=4" in line for line in lines)


def test_a_forged_request_id_is_replaced(
    model: ServingModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modelferry.requests")
    post(app_for(model, 1.0), [(body(), {"x-request-id": "a b\tstatus=200"})])
    (line,) = request_lines(caplog)
    assert "status=200 rows=2" in line
    assert line.count("status=") == 1


def test_the_sample_rate_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELFERRY_REQUEST_LOG_SAMPLE", raising=False)
    assert request_log_sample() == 0.1
    monkeypatch.setenv("MODELFERRY_REQUEST_LOG_SAMPLE", "0.25")
    assert request_log_sample() == 0.25
    for bad in ("1.5", "-0.1", "nan", "lots"):
        monkeypatch.setenv("MODELFERRY_REQUEST_LOG_SAMPLE", bad)
        with pytest.raises(InvalidConfigError, match="MODELFERRY_REQUEST_LOG_SAMPLE") as caught:
            request_log_sample()
        assert "from 0 (none) to 1 (all)" in str(caught.value)


def test_a_new_key_replaces_the_old_one(model: ServingModel) -> None:
    app = app_for(model, 0.0)
    app.set_key(SecretStr("k-new"))
    assert post(app, [(body(), {})]) == [401]
    assert post(app, [(body(), {"Authorization": "Bearer k-new"})]) == [200]


def test_a_forked_worker_makes_ids_of_its_own() -> None:
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only reports its ids
        os.write(write, b"".join(request_id([]) for _ in range(3)))
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    theirs = os.read(read, 96)
    os.close(read)
    ours = b"".join(request_id([]) for _ in range(3))
    assert len(theirs) == len(ours) == 96
    assert {theirs[i : i + 32] for i in range(0, 96, 32)}.isdisjoint(
        {ours[i : i + 32] for i in range(0, 96, 32)}
    )
