"""Canary and blue/green rollouts against real endpoint processes, and automatic rollback."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from prefect.exceptions import ParameterTypeError

from blocks.endpoint_key import EndpointKey
from flows.deploy_online_endpoint import RolloutOutcome, deploy_online_endpoint
from flows.inputs import Rollout, Targets
from modelferry.endpoints.local import LocalEndpointBackend
from modelferry.endpoints.traffic import TrafficDriver, single_row_requests
from modelferry.errors import DeploymentFailedError
from modelferry.registry import TrackingSettings
from tests.model_fixtures import (
    MODEL_NAME,
    register_schema_breaking_version,
    register_versions,
    score_payload,
)

pytestmark = pytest.mark.integration

ENDPOINT = "rollout"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, TrackingSettings]]:
    home = tmp_path_factory.mktemp("rollout")
    settings = register_versions(home)
    yield home, settings
    backend = LocalEndpointBackend(home / "endpoints", settings)
    for state in backend.list_endpoints():
        backend.delete_endpoint(state.name)


class ClientLoad:
    """Clients calling the endpoint with the original 30 columns, until stopped."""

    def __init__(self, backend: LocalEndpointBackend, clients: int = 3) -> None:
        self.uri = backend.get_endpoint(ENDPOINT).scoring_uri
        self.key = backend.get_keys(ENDPOINT).get_secret_value()
        self.stop = threading.Event()
        self.statuses: list[int] = []
        # Several clients, so that even on a busy machine every canary step sees traffic.
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                response = client.post(
                    self.uri, json=score_payload(), headers={"Authorization": f"Bearer {self.key}"}
                )
                self.statuses.append(response.status_code)
                self.stop.wait(0.01)

    def __enter__(self) -> ClientLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


def assert_png_in_run(settings: TrackingSettings, version: str, artifact: str) -> None:
    """The artifact is a PNG in the MLflow run of `version` of the model."""
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    run_id = client.get_model_version(MODEL_NAME, version).run_id
    folder, name = artifact.rsplit("/", 1)
    assert name in [Path(a.path).name for a in client.list_artifacts(run_id, folder)]
    local = Path(client.download_artifacts(run_id, artifact))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def rollout(
    home: Path,
    settings: TrackingSettings,
    version: str,
    key_block: str | None = None,
    **options: object,
) -> object:
    return deploy_online_endpoint(
        MODEL_NAME,
        model_version=version,
        rollout=Rollout(endpoint=ENDPOINT, **options),  # type: ignore[arg-type]
        targets=Targets(tracking_uri=settings.tracking_uri, endpoints_home=str(home / "endpoints")),
        key_block=key_block,
    )


def test_blue_green_then_canary_then_rollback(
    prefect_harness: str, home: tuple[Path, TrackingSettings]
) -> None:
    root, settings = home
    backend = LocalEndpointBackend(root / "endpoints", settings)

    first = rollout(
        root, settings, "1", strategy="blue-green", step_seconds=0.5, min_requests=0,
        key_block="rollout-test-endpoint-key",
    )  # fmt: skip
    assert first.deployment == "blue"  # type: ignore[attr-defined]
    assert backend.get_endpoint(ENDPOINT).traffic.weights == {"blue": 100}

    # Clients read the scoring URI and key from the block the rollout saved.
    key = EndpointKey.load("rollout-test-endpoint-key")
    assert key.scoring_uri == backend.get_endpoint(ENDPOINT).scoring_uri  # type: ignore[attr-defined]
    assert key.key.get_secret_value() not in repr(key)  # type: ignore[attr-defined]
    answer = httpx.post(key.scoring_uri, headers=key.headers(), json=score_payload(), timeout=10)  # type: ignore[attr-defined]
    assert answer.status_code == 200

    with ClientLoad(backend) as load:
        second = rollout(
            root, settings, "2", strategy="canary", steps=[20, 50, 100],
            step_seconds=3.0, min_requests=5, require_traffic=True,
        )  # fmt: skip
    assert second.deployment == "green"  # type: ignore[attr-defined]
    assert len(second.steps) == 3  # type: ignore[attr-defined]
    assert dict(backend.get_endpoint(ENDPOINT).traffic.weights) == {"green": 100, "blue": 0}
    assert set(load.statuses) == {200}
    served = backend.invoke(ENDPOINT, score_payload())
    assert served["model_version"] == "2"
    # The steps as a picture, in the MLflow run of the version rolled out.
    assert second.chart is not None  # type: ignore[attr-defined]
    assert second.chart.startswith(f"rollouts/{ENDPOINT}-")  # type: ignore[attr-defined]
    assert_png_in_run(settings, "2", second.chart)  # type: ignore[attr-defined]

    # Re-deploying what already serves is a no-op.
    again = rollout(root, settings, "2", step_seconds=0.1)
    assert again.steps == ("already live",)  # type: ignore[attr-defined]

    broken = register_schema_breaking_version(settings)
    with ClientLoad(backend) as load, pytest.raises(DeploymentFailedError) as info:
        rollout(
            root, settings, broken, strategy="canary", steps=[25, 100],
            step_seconds=3.0, min_requests=5, require_traffic=True,
        )  # fmt: skip
    message = str(info.value)
    assert "failed at 25% of traffic" in message
    assert "error rate" in message
    assert "rolled back to {'green': 100, 'blue': 0}" in message
    # The failed step is drawn too, and the error says where.
    chart = re.search(r"\(chart: (rollouts/\S+\.png) in the MLflow run of v(\d+)\)", message)
    assert chart is not None, message
    assert chart.group(2) == broken
    assert_png_in_run(settings, broken, chart.group(1))
    state = backend.get_endpoint(ENDPOINT)
    assert dict(state.traffic.weights) == {"green": 100, "blue": 0}
    assert state.deployment("blue").model_version == broken  # type: ignore[union-attr]
    assert backend.invoke(ENDPOINT, score_payload())["model_version"] == "2"
    assert 400 in load.statuses  # the canary really did refuse the clients' requests


DEMO = "rollout-demo"


def demo_rollout(
    home: Path, settings: TrackingSettings, version: str, **options: object
) -> RolloutOutcome:
    outcome: RolloutOutcome = deploy_online_endpoint(
        MODEL_NAME,
        model_version=version,
        rollout=Rollout(
            endpoint=DEMO,
            strategy="canary",
            # Twice the demo's 2 s: the driver paces one request at a time, and on a loaded
            # machine a 10 % step must still see its 20 requests.
            step_seconds=4.0,
            min_requests=20,
            **options,  # type: ignore[arg-type]
        ),
        targets=Targets(tracking_uri=settings.tracking_uri, endpoints_home=str(home / "endpoints")),
    )
    return outcome


def test_demo_traffic_gets_every_step_judged_and_quiet_steps_say_not_judged(
    prefect_harness: str, home: tuple[Path, TrackingSettings]
) -> None:
    root, settings = home
    backend = LocalEndpointBackend(root / "endpoints", settings)

    # Nothing live yet: no canary to run, the first deployment takes all traffic at once.
    first = demo_rollout(root, settings, "1", demo_traffic=True, require_traffic=True)
    assert first.first_deployment
    (step,) = first.steps
    assert re.fullmatch(
        r"first deployment, 100 %: \d+ requests, 0 errors, p99 [\d.]+ ms — passed", step
    )

    # The model's test rows go through the router while each step is held: all are judged.
    second = demo_rollout(
        root, settings, "2", steps=[10, 50, 100], demo_traffic=True, require_traffic=True
    )
    assert not second.first_deployment
    assert [s.split(" %")[0] for s in second.steps] == ["10", "50", "100"]
    for line in second.steps:
        found = re.fullmatch(r"\d+ %: (\d+) requests, 0 errors, p99 [\d.]+ ms — passed", line)
        assert found, line
        assert int(found.group(1)) >= 20
    assert "not judged" not in second.summary()

    # The driver alone, against the live endpoint process: routed, keyed, counted.
    since = backend.mark_metrics(DEMO)
    driver = TrafficDriver(
        backend.get_endpoint(DEMO).scoring_uri,
        backend.get_keys(DEMO),
        single_row_requests(score_payload(rows=4)),
        rate=40.0,
    )
    with driver:
        time.sleep(1.0)
    report = driver.stop()
    assert report.sent == report.answered > 10
    measured = backend.get_step_metrics(DEMO, since).deployments
    assert measured["green"].requests == report.answered  # all routed to the live green

    # No clients and no demo traffic: the steps go on, and say they were not judged.
    quiet = demo_rollout(root, settings, "1", steps=[50, 100])
    assert quiet.steps == (
        "50 %: not judged (0 < 20 requests)",
        "100 %: not judged (0 < 20 requests)",
    )
    assert "passed" not in quiet.summary()


def test_steps_watched_for_no_time_are_judged_at_once(
    prefect_harness: str, home: tuple[Path, TrackingSettings]
) -> None:
    root, settings = home
    outcome: RolloutOutcome = deploy_online_endpoint(
        MODEL_NAME, model_version="1",
        rollout=Rollout(endpoint="rollout-instant", strategy="blue-green", step_seconds=0),
        targets=Targets(tracking_uri=settings.tracking_uri, endpoints_home=str(root / "endpoints")),
    )  # fmt: skip
    assert outcome.steps == ("first deployment, 100 %: not judged (0 < 20 requests)",)
    targets = Targets(tracking_uri=settings.tracking_uri, endpoints_home=str(root / "endpoints"))
    with pytest.raises(ParameterTypeError, match="demo_traffic replays rows while each step"):
        deploy_online_endpoint(
            MODEL_NAME, model_version="2", targets=targets,
            rollout={"endpoint": "rollout-instant", "step_seconds": 0, "demo_traffic": True},
        )  # fmt: skip
    backend = LocalEndpointBackend(root / "endpoints", settings)
    assert [d.model_version for d in backend.get_endpoint("rollout-instant").deployments] == ["1"]
