"""The local backend with real server processes: deploy, route, restart, roll back."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from mlflow import MlflowClient

from modelferry.cli import main as cli_main
from modelferry.endpoints.local import LocalEndpointBackend
from modelferry.endpoints.local import process as processes
from modelferry.endpoints.spec import DeploymentSpec, EndpointSpec, ModelRef, TrafficSplit
from modelferry.errors import (
    DeploymentFailedError,
    EndpointError,
    EndpointNotFoundError,
    InvalidEndpointSpecError,
)
from modelferry.registry import TrackingSettings
from tests.model_fixtures import MODEL_NAME, register_versions, score_payload

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEndpointBackend]:
    home = tmp_path_factory.mktemp("local-endpoints")
    settings = register_versions(home)
    backend = LocalEndpointBackend(home / "endpoints", settings)
    yield backend
    for state in backend.list_endpoints():
        backend.delete_endpoint(state.name)


@pytest.fixture(scope="module")
def endpoint(backend: LocalEndpointBackend) -> str:
    backend.create_or_update_endpoint(EndpointSpec("bc"))
    backend.create_or_update_deployment("bc", DeploymentSpec("blue", ModelRef(MODEL_NAME, "1")))
    backend.create_or_update_deployment("bc", DeploymentSpec("green", ModelRef(MODEL_NAME, "2")))
    backend.set_traffic("bc", TrafficSplit({"blue": 100}))
    return "bc"


def post(backend: LocalEndpointBackend, name: str, **headers: str) -> httpx.Response:
    state = backend.get_endpoint(name)
    key = backend.get_keys(name).get_secret_value()
    return httpx.post(
        state.scoring_uri,
        json=score_payload(),
        headers={"Authorization": f"Bearer {key}", **headers},
        timeout=10,
    )


def test_serves_class_probabilities_with_names(
    backend: LocalEndpointBackend, endpoint: str
) -> None:
    answer = post(backend, endpoint).json()
    assert answer["classes"] == ["malignant", "benign"]
    assert answer["deployment"] == "blue"
    assert answer["model_version"] == "1"
    assert all(abs(sum(row) - 1) < 1e-9 for row in answer["predictions"])
    state = backend.get_endpoint(endpoint)
    assert {d.name: d.status for d in state.deployments} == {"blue": "ready", "green": "ready"}


def test_split_pin_and_metrics(backend: LocalEndpointBackend, endpoint: str) -> None:
    start = backend.mark_metrics(endpoint)
    backend.set_traffic(endpoint, TrafficSplit({"blue": 70, "green": 30}))
    try:
        counts = Counter(post(backend, endpoint).json()["deployment"] for _ in range(200))
        assert 100 < counts["blue"] < 180
        assert counts["blue"] + counts["green"] == 200
        pinned = post(backend, endpoint, **{"azureml-model-deployment": "green"}).json()
        assert pinned["model_version"] == "2"
        measured = backend.get_step_metrics(endpoint, start)
        assert measured.restarted is None
        metrics = measured.deployments
        assert metrics["blue"].requests == counts["blue"]
        # the pinned request is answered but kept out of the window a rollout judges
        assert metrics["green"].requests == counts["green"]
        assert metrics["blue"].errors == 0
        assert metrics["blue"].p99_latency_ms is not None
    finally:
        backend.set_traffic(endpoint, TrafficSplit({"blue": 100}))


def test_moving_traffic_drops_no_request(backend: LocalEndpointBackend, endpoint: str) -> None:
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            key = backend.get_keys(endpoint).get_secret_value()
            uri = backend.get_endpoint(endpoint).scoring_uri
            while not stop.is_set():
                response = client.post(
                    uri, json=score_payload(), headers={"Authorization": f"Bearer {key}"}
                )
                statuses.append(response.status_code)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        for weights in ({"green": 100}, {"blue": 50, "green": 50}, {"blue": 100}) * 2:
            backend.set_traffic(endpoint, TrafficSplit(weights))
            time.sleep(0.2)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
    assert len(statuses) > 50
    assert set(statuses) == {200}


def test_rollback_of_one_step_restores_previous_split(
    backend: LocalEndpointBackend, endpoint: str
) -> None:
    backend.set_traffic(endpoint, TrafficSplit({"blue": 10, "green": 90}))
    undone = backend.rollback_traffic(endpoint, steps=1)
    assert dict(undone.state.traffic.weights) == {"blue": 100}
    assert (dict(undone.replaced.weights), undone.changes) == ({"blue": 10, "green": 90}, 1)


def test_deployment_with_traffic_cannot_be_deleted_or_replaced(
    backend: LocalEndpointBackend, endpoint: str
) -> None:
    with pytest.raises(InvalidEndpointSpecError, match="still takes traffic"):
        backend.delete_deployment(endpoint, "blue")
    with pytest.raises(InvalidEndpointSpecError, match="takes traffic"):
        backend.create_or_update_deployment(
            endpoint, DeploymentSpec("blue", ModelRef(MODEL_NAME, "2"))
        )


def test_an_endpoint_refuses_models_of_another_mlflow_store(
    backend: LocalEndpointBackend, endpoint: str
) -> None:
    # The demo's store, then the team's server: version 1 there is another model.
    other = TrackingSettings("http://ci:s3cret-pw@mlflow.example:5000")
    elsewhere = LocalEndpointBackend(backend.home, other)
    before = backend.get_endpoint(endpoint)

    with pytest.raises(InvalidEndpointSpecError) as refused:
        elsewhere.create_or_update_endpoint(EndpointSpec(endpoint))
    with pytest.raises(InvalidEndpointSpecError):
        elsewhere.create_or_update_deployment(
            endpoint, DeploymentSpec("red", ModelRef(MODEL_NAME, "1"))
        )

    message = str(refused.value)
    assert backend.settings.tracking_uri in message
    assert "http://***@mlflow.example:5000" in message
    assert "s3cret-pw" not in message
    assert f"modelferry endpoints delete {endpoint}" in message
    assert backend.get_endpoint(endpoint) == before
    assert post(backend, endpoint).status_code == 200


def test_failed_deployment_never_takes_traffic(
    backend: LocalEndpointBackend, tmp_path: Path
) -> None:
    uri = backend.settings.tracking_uri
    client = MlflowClient(uri, uri)
    # A registered version whose files are gone: it cannot load.
    broken = client.create_model_version(MODEL_NAME, str(tmp_path / "missing-model"))
    backend.create_or_update_endpoint(EndpointSpec("broken"))
    with pytest.raises(EndpointNotFoundError, match="does not exist"):
        backend.create_or_update_deployment(
            "broken", DeploymentSpec("red", ModelRef(MODEL_NAME, "99"))
        )
    with pytest.raises(DeploymentFailedError, match="red"):
        backend.create_or_update_deployment(
            "broken", DeploymentSpec("red", ModelRef(MODEL_NAME, str(broken.version)))
        )
    state = backend.get_endpoint("broken")
    assert state.deployments[0].status == "failed"
    # Its log, as `endpoints logs broken --deployment red` shows it, says why.
    assert f"deployment=red failed to load: {state.deployments[0].detail}" in backend.get_logs(
        "broken", "red", lines=5
    )
    with pytest.raises(InvalidEndpointSpecError, match="not ready"):
        backend.set_traffic("broken", TrafficSplit({"red": 100}))
    backend.delete_endpoint("broken")
    backend.delete_endpoint("broken")  # already gone: still fine


def stop_server_directly(backend: LocalEndpointBackend, name: str) -> None:
    """Stop the endpoint's server process without telling the backend."""
    record = backend.store.get_endpoint(name)
    assert record is not None
    assert record.pid is not None
    server = processes.ServerProcess(record.pid, record.pid_started_at, name, backend.store.path)
    processes.stop_server(server)
    assert not processes.is_alive(server)


def test_restart_comes_back_serving_the_same(backend: LocalEndpointBackend, endpoint: str) -> None:
    stop_server_directly(backend, endpoint)  # as a reboot or crash would
    assert backend.get_endpoint(endpoint).deployments[0].status == "stopped"
    state = backend.ensure_running(endpoint)
    assert {d.status for d in state.deployments} == {"ready"}
    assert post(backend, endpoint).json()["model_version"] == "1"
    # Re-deploying an unchanged deployment after a crash brings the server back too.
    stop_server_directly(backend, endpoint)
    again = backend.create_or_update_deployment(
        endpoint, DeploymentSpec("blue", ModelRef(MODEL_NAME, "1"))
    )
    assert again.status == "ready"
    assert post(backend, endpoint).json()["model_version"] == "1"
    restarted = backend.restart_endpoint(endpoint)
    assert dict(restarted.traffic.weights) == {"blue": 100}
    assert post(backend, endpoint).status_code == 200


def test_cli_lists_shows_and_moves_traffic(
    backend: LocalEndpointBackend, endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    home = ["--home", str(backend.home), "--tracking-uri", backend.settings.tracking_uri]
    assert cli_main(["endpoints", "list", *home]) == 0
    assert "bc" in capsys.readouterr().out
    assert cli_main(["endpoints", "traffic", endpoint, "blue=60", "green=40", *home]) == 0
    assert "blue=60%, green=40%" in capsys.readouterr().out
    assert cli_main(["endpoints", "rollback", endpoint, "--steps", "1", *home]) == 0
    assert "1 traffic change: blue 100%, green 0%" in capsys.readouterr().out
    assert cli_main(["endpoints", "show", endpoint, *home]) == 0
    assert f"green        {MODEL_NAME} v2" in capsys.readouterr().out
    assert cli_main(["endpoints", "traffic", endpoint, "blue=50", *home]) != 0
    assert "sum to 50" in capsys.readouterr().err
    assert cli_main(["endpoints", "logs", endpoint, "--lines", "5", *home]) == 0
    assert cli_main(["endpoints", "show", "nope", *home]) == 1
    assert "no local endpoint 'nope'" in capsys.readouterr().err


def test_endpoint_process_log_is_readable(backend: LocalEndpointBackend, endpoint: str) -> None:
    assert "routing" in backend.get_logs(endpoint, "", lines=50)
    assert "deployment=blue loaded" in backend.get_logs(endpoint, "blue", lines=50)
    assert "deployment=green" not in backend.get_logs(endpoint, "blue", lines=50)


def test_unknown_key_is_refused(backend: LocalEndpointBackend, endpoint: str) -> None:
    uri = backend.get_endpoint(endpoint).scoring_uri
    response = httpx.post(uri, json=score_payload(), headers={"Authorization": "Bearer x"})
    assert response.status_code == 401
    assert backend.get_keys(endpoint).get_secret_value() not in response.text


def test_step_metrics_see_a_server_restart(backend: LocalEndpointBackend, endpoint: str) -> None:
    for _ in range(5):
        post(backend, endpoint)
    mark = backend.mark_metrics(endpoint)
    with pytest.raises(EndpointError, match="since its server started"):
        backend.get_metrics(endpoint, datetime.now(UTC))
    backend.restart_endpoint(endpoint)
    for _ in range(3):
        post(backend, endpoint)
    measured = backend.get_step_metrics(endpoint, mark)
    assert measured.restarted is not None
    assert measured.restarted > mark.at
    # What the new server counted: the requests since the restart, none from before.
    assert measured.deployments["blue"].requests == 3
    assert backend.get_metrics(endpoint, mark.at)["blue"].requests == 3


def test_small_requests_stay_fast_while_large_bad_ones_are_parsed(
    backend: LocalEndpointBackend, endpoint: str
) -> None:
    uri = backend.get_endpoint(endpoint).scoring_uri
    headers = {"Authorization": f"Bearer {backend.get_keys(endpoint).get_secret_value()}"}
    large = score_payload(1)
    row = large["input_data"]["data"][0]
    large["input_data"]["data"] = [row] * 70_000
    large["input_data"]["index"] = list(range(70_000))
    large["input_data"]["data"][-1] = [*row[:-1], "bad"]
    large_body = orjson.dumps(large)
    small_body = orjson.dumps(score_payload(1))
    statuses: list[int] = []

    def send_large() -> None:
        with httpx.Client(timeout=60) as client:
            for _ in range(3):
                response = client.post(uri, content=large_body, headers=headers)
                statuses.append(response.status_code)

    senders = [threading.Thread(target=send_large) for _ in range(2)]
    for sender in senders:
        sender.start()
    timings: list[float] = []
    with httpx.Client(timeout=60) as client:
        time.sleep(0.3)  # let the large bodies arrive first
        while any(s.is_alive() for s in senders):
            started = time.perf_counter()
            response = client.post(uri, content=small_body, headers=headers)
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200
            time.sleep(0.01)
    for sender in senders:
        sender.join()
    assert set(statuses) <= {400, 503}
    assert 400 in statuses
    assert len(timings) >= 5
    assert statistics.median(timings) < 0.050


@pytest.fixture(scope="module")
def release(backend: LocalEndpointBackend) -> str:
    """Endpoint "rel": blue (v1) takes all traffic; every request is logged."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MODELFERRY_REQUEST_LOG_SAMPLE", "1")  # the server process inherits it
        backend.create_or_update_endpoint(EndpointSpec("rel"))
    backend.create_or_update_deployment("rel", DeploymentSpec("blue", ModelRef(MODEL_NAME, "1")))
    backend.set_traffic("rel", TrafficSplit({"blue": 100}))
    return "rel"


def canary(backend: LocalEndpointBackend, name: str) -> None:
    """Deploy v2 into green and move it through 10, 50 and 100 %, as the rollout flow does."""
    backend.create_or_update_deployment(name, DeploymentSpec("green", ModelRef(MODEL_NAME, "2")))
    for step in (10, 50, 100):
        weights = {"blue": 100 - step, "green": step} if step < 100 else {"green": 100}
        backend.set_traffic(name, TrafficSplit(weights))


def test_rollback_undoes_the_whole_release_or_single_steps(
    backend: LocalEndpointBackend, release: str, capsys: pytest.CaptureFixture[str]
) -> None:
    home = ["--home", str(backend.home), "--tracking-uri", backend.settings.tracking_uri]
    canary(backend, release)
    assert cli_main(["endpoints", "rollback", release, *home]) == 0
    assert capsys.readouterr().out.strip() == (
        "Rolled back the release of green (v2): blue 100%, green 0% (was blue 0%, green 100%)"
    )
    assert dict(backend.get_endpoint(release).traffic.weights) == {"blue": 100}
    assert post(backend, release).json()["deployment"] == "blue"

    canary(backend, release)  # the version rolled back, again: its release begins anew
    assert cli_main(["endpoints", "rollback", release, "--steps", "1", *home]) == 0
    assert capsys.readouterr().out.strip() == (
        "Rolled back 1 traffic change: blue 50%, green 50% (was blue 0%, green 100%)"
    )
    assert cli_main(["endpoints", "rollback", release, *home]) == 0
    assert "release of green (v2): blue 100%, green 0% (was blue 50%" in capsys.readouterr().out
    # Before green, the release was blue's first traffic: undoing it would serve nothing.
    assert cli_main(["endpoints", "rollback", release, *home]) == 1
    assert f"would leave endpoint {release!r} with no traffic" in capsys.readouterr().err
    assert cli_main(["endpoints", "rollback", release, "--steps", "1", *home]) == 1
    assert "with no traffic: before that change nothing served" in capsys.readouterr().err
    assert dict(backend.get_endpoint(release).traffic.weights) == {"blue": 100}
    assert post(backend, release).json()["deployment"] == "blue"


def test_rotated_key_takes_over_at_once(
    backend: LocalEndpointBackend, release: str, capsys: pytest.CaptureFixture[str]
) -> None:
    home = ["--home", str(backend.home), "--tracking-uri", backend.settings.tracking_uri]
    assert cli_main(["endpoints", "key", release, *home]) == 0
    old = capsys.readouterr().out
    assert old == backend.get_keys(release).get_secret_value() + "\n"
    assert cli_main(["endpoints", "show", release, *home]) == 0
    shown = capsys.readouterr().out
    assert f"Scoring key: modelferry endpoints key {release} --home {backend.home}" in shown
    assert old.strip() not in shown
    assert cli_main(["endpoints", "key", release, "--rotate", *home]) == 0
    new = capsys.readouterr().out.strip()
    assert new
    assert new != old.strip()
    uri = backend.get_endpoint(release).scoring_uri
    for key, status in ((old.strip(), 401), (new, 200)):
        answer = httpx.post(
            uri, json=score_payload(), headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert answer.status_code == status
        metrics = httpx.get(
            uri.replace("/score", "/metrics"), headers={"Authorization": f"Bearer {key}"}
        )
        assert metrics.status_code == status
    assert backend.get_keys(release).get_secret_value() == new


def test_logs_show_requests_per_deployment(
    backend: LocalEndpointBackend, release: str, capsys: pytest.CaptureFixture[str]
) -> None:
    home = ["--home", str(backend.home), "--tracking-uri", backend.settings.tracking_uri]
    green = {"azureml-model-deployment": "green"}
    assert post(backend, release).status_code == 200
    assert post(backend, release, **green).status_code == 200
    key = backend.get_keys(release).get_secret_value()
    bad = httpx.post(
        backend.get_endpoint(release).scoring_uri,
        json={"input_data": {"columns": ["x"], "index": [0], "data": [[1]]}},
        headers={"Authorization": f"Bearer {key}", **green, "x-request-id": "bad-1"},
        timeout=10,
    )
    assert bad.status_code == 400
    time.sleep(0.2)  # the server's log handler writes after answering
    assert cli_main(["endpoints", "logs", release, "--deployment", "green", *home]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines
    assert all("deployment=green" in line.split() for line in lines)
    assert any("status=200 rows=" in line for line in lines)
    assert any("status=400 rows=0" in line and "request_id=bad-1" in line for line in lines)
    assert cli_main(["endpoints", "logs", release, "--lines", "1000", *home]) == 0
    everything = capsys.readouterr().out
    assert "deployment=blue status=200" in everything
    assert "{'deployments'" not in everything
    assert key not in everything
