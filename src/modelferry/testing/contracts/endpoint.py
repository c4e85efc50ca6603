"""The contract every `EndpointBackend` keeps, as one test suite for all of them.

Subclass `EndpointBackendContract` in a `Test...` class and provide three fixtures:

- `backend`: the `EndpointBackend` under test. It may be shared between tests: each
  test works on its own endpoint (the `endpoint` fixture) and deletes it afterwards.
- `model_refs`: two `ModelRef`s of registered versions (e.g. v1 and v2 of one model)
  that take the same input and predict two classes.
- `score_payload`: one valid scoring request in Azure ML's `input_data` format.

Answers from `invoke` are read by `predictions()` and `answered_by()`: by default
modelferry's scoring answer `{"predictions": [[p0, p1], ...], "deployment": name, ...}`;
override them for a backend whose answers have another shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from pydantic import SecretStr

from modelferry.endpoints.backend import EndpointBackend
from modelferry.endpoints.spec import DeploymentSpec, EndpointSpec, ModelRef, TrafficSplit
from modelferry.errors import EndpointNotFoundError, InvalidEndpointSpecError

UNKNOWN = "ct-no-such-endpoint"


class EndpointBackendContract:
    """Shared tests; not collected by itself (no `Test` prefix)."""

    #: How long one deployment may take to become ready in this suite.
    deploy_timeout_s: float = 300.0

    def predictions(self, answer: Any) -> list[list[float]]:
        """The class probabilities, one row per request row."""
        return list(answer["predictions"])

    def answered_by(self, answer: Any) -> str:
        """The deployment that answered."""
        return str(answer["deployment"])

    @pytest.fixture
    def endpoint(self, backend: EndpointBackend, request: pytest.FixtureRequest) -> Iterator[str]:
        """A fresh endpoint named after the test, deleted afterwards."""
        test = re.sub(r"[^a-z0-9]+", "-", request.node.name.removeprefix("test_").lower())
        name = f"ct-{test[:24].strip('-')}"
        backend.delete_endpoint(name)  # left over from an interrupted run
        backend.create_or_update_endpoint(EndpointSpec(name, description="contract test"))
        yield name
        backend.delete_endpoint(name)

    def deploy(self, backend: EndpointBackend, endpoint: str, name: str, model: ModelRef) -> None:
        """Deploy `model` as `name` on `endpoint` and check that it became ready."""
        state = backend.create_or_update_deployment(
            endpoint, DeploymentSpec(name, model), timeout_s=self.deploy_timeout_s
        )
        assert state.status == "ready", state

    def check_probabilities(self, answer: Any, payload: dict[str, Any]) -> None:
        """Check that `answer` holds two class probabilities summing to 1 per row of `payload`."""
        rows = self.predictions(answer)
        assert len(rows) == len(payload["input_data"]["data"])
        for row in rows:
            assert len(row) == 2
            assert all(0.0 <= p <= 1.0 for p in row)
            assert sum(row) == pytest.approx(1.0)

    def test_create_endpoint_is_idempotent(self, backend: EndpointBackend, endpoint: str) -> None:
        spec = EndpointSpec(endpoint, description="contract test")
        first = backend.create_or_update_endpoint(spec)
        second = backend.create_or_update_endpoint(spec)
        assert first.name == second.name == endpoint
        assert second.deployments == ()
        assert [e.name for e in backend.list_endpoints()].count(endpoint) == 1

    def test_update_keeps_deployments_and_traffic(
        self, backend: EndpointBackend, endpoint: str, model_refs: Sequence[ModelRef]
    ) -> None:
        self.deploy(backend, endpoint, "blue", model_refs[0])
        backend.set_traffic(endpoint, TrafficSplit({"blue": 100}))
        updated = backend.create_or_update_endpoint(
            EndpointSpec(endpoint, description="changed", tags={"team": "ml"})
        )
        assert [d.name for d in updated.deployments] == ["blue"]
        assert _live(updated.traffic) == {"blue": 100}

    def test_get_unknown_endpoint_raises(self, backend: EndpointBackend) -> None:
        with pytest.raises(EndpointNotFoundError):
            backend.get_endpoint(UNKNOWN)

    def test_deleting_what_does_not_exist_succeeds(
        self, backend: EndpointBackend, endpoint: str
    ) -> None:
        backend.delete_endpoint(UNKNOWN)
        backend.delete_deployment(endpoint, "nothere")
        backend.delete_deployment(UNKNOWN, "blue")

    def test_new_deployment_is_ready_with_no_traffic(
        self, backend: EndpointBackend, endpoint: str, model_refs: Sequence[ModelRef]
    ) -> None:
        state = backend.create_or_update_deployment(
            endpoint, DeploymentSpec("blue", model_refs[0]), timeout_s=self.deploy_timeout_s
        )
        assert (state.name, state.status, state.model_name) == ("blue", "ready", model_refs[0].name)
        if model_refs[0].version is not None:
            assert state.model_version == model_refs[0].version
        current = backend.get_endpoint(endpoint)
        assert current.deployment("blue") is not None
        assert _live(current.traffic) == {}

    def test_deploying_twice_leaves_one_deployment(
        self, backend: EndpointBackend, endpoint: str, model_refs: Sequence[ModelRef]
    ) -> None:
        self.deploy(backend, endpoint, "blue", model_refs[0])
        self.deploy(backend, endpoint, "blue", model_refs[0])
        assert [d.name for d in backend.get_endpoint(endpoint).deployments] == ["blue"]

    def test_deploying_to_unknown_endpoint_raises(
        self, backend: EndpointBackend, model_refs: Sequence[ModelRef]
    ) -> None:
        with pytest.raises(EndpointNotFoundError):
            backend.create_or_update_deployment(UNKNOWN, DeploymentSpec("blue", model_refs[0]))

    def test_full_traffic_serves_class_probabilities(
        self,
        backend: EndpointBackend,
        endpoint: str,
        model_refs: Sequence[ModelRef],
        score_payload: dict[str, Any],
    ) -> None:
        self.deploy(backend, endpoint, "blue", model_refs[0])
        state = backend.set_traffic(endpoint, TrafficSplit({"blue": 100}))
        assert _live(state.traffic) == {"blue": 100}
        answer = backend.invoke(endpoint, score_payload)
        self.check_probabilities(answer, score_payload)
        assert self.answered_by(answer) == "blue"

    def test_blue_green_switch_and_pinning(
        self,
        backend: EndpointBackend,
        endpoint: str,
        model_refs: Sequence[ModelRef],
        score_payload: dict[str, Any],
    ) -> None:
        self.deploy(backend, endpoint, "blue", model_refs[0])
        self.deploy(backend, endpoint, "green", model_refs[1])
        backend.set_traffic(endpoint, TrafficSplit({"blue": 100}))
        assert {self.answered_by(backend.invoke(endpoint, score_payload)) for _ in range(5)} == {
            "blue"
        }
        pinned = backend.invoke(endpoint, score_payload, deployment="green")
        assert self.answered_by(pinned) == "green"
        self.check_probabilities(pinned, score_payload)
        state = backend.set_traffic(endpoint, TrafficSplit({"blue": 0, "green": 100}))
        assert _live(state.traffic) == {"green": 100}
        assert {self.answered_by(backend.invoke(endpoint, score_payload)) for _ in range(5)} == {
            "green"
        }

    def test_traffic_to_unknown_deployment_raises(
        self, backend: EndpointBackend, endpoint: str, model_refs: Sequence[ModelRef]
    ) -> None:
        self.deploy(backend, endpoint, "blue", model_refs[0])
        with pytest.raises(EndpointNotFoundError):
            backend.set_traffic(endpoint, TrafficSplit({"blue": 50, "nothere": 50}))
        with pytest.raises(EndpointNotFoundError):
            backend.set_traffic(UNKNOWN, TrafficSplit({"blue": 100}))
        assert _live(backend.get_endpoint(endpoint).traffic) == {}

    def test_weights_must_sum_to_100(self) -> None:
        with pytest.raises(InvalidEndpointSpecError, match="sum to 90"):
            TrafficSplit({"blue": 60, "green": 30})

    def test_deployment_with_traffic_cannot_be_deleted(
        self, backend: EndpointBackend, endpoint: str, model_refs: Sequence[ModelRef]
    ) -> None:
        self.deploy(backend, endpoint, "blue", model_refs[0])
        self.deploy(backend, endpoint, "green", model_refs[1])
        backend.set_traffic(endpoint, TrafficSplit({"blue": 100}, {"green": 10}))
        for name in ("blue", "green"):  # live, then mirrored traffic
            with pytest.raises(InvalidEndpointSpecError):
                backend.delete_deployment(endpoint, name)
        backend.set_traffic(endpoint, TrafficSplit({"blue": 100}))
        backend.delete_deployment(endpoint, "green")
        assert [d.name for d in backend.get_endpoint(endpoint).deployments] == ["blue"]

    def test_mirror_traffic_is_set_and_reported(
        self,
        backend: EndpointBackend,
        endpoint: str,
        model_refs: Sequence[ModelRef],
        score_payload: dict[str, Any],
    ) -> None:
        self.deploy(backend, endpoint, "blue", model_refs[0])
        self.deploy(backend, endpoint, "green", model_refs[1])
        state = backend.set_traffic(endpoint, TrafficSplit({"blue": 100}, {"green": 10}))
        assert _live(state.traffic) == {"blue": 100}
        assert dict(state.traffic.mirror) == {"green": 10}
        assert dict(backend.get_endpoint(endpoint).traffic.mirror) == {"green": 10}
        assert self.answered_by(backend.invoke(endpoint, score_payload)) == "blue"
        cleared = backend.set_traffic(endpoint, TrafficSplit({"blue": 100}))
        assert _live(cleared.traffic.mirror) == {}

    def test_list_then_delete_endpoint(self, backend: EndpointBackend, endpoint: str) -> None:
        assert endpoint in [e.name for e in backend.list_endpoints()]
        backend.delete_endpoint(endpoint)
        with pytest.raises(EndpointNotFoundError):
            backend.get_endpoint(endpoint)
        assert endpoint not in [e.name for e in backend.list_endpoints()]

    def test_keys_and_logs(
        self, backend: EndpointBackend, endpoint: str, model_refs: Sequence[ModelRef]
    ) -> None:
        self.deploy(backend, endpoint, "blue", model_refs[0])
        key = backend.get_keys(endpoint)
        assert isinstance(key, SecretStr)
        assert key.get_secret_value()
        assert key.get_secret_value() not in repr(key)
        assert isinstance(backend.get_logs(endpoint, "blue", lines=10), str)


def _live(shares: Any) -> dict[str, int]:
    """Non-zero shares only: backends may or may not list deployments at 0%."""
    items = shares.weights.items() if isinstance(shares, TrafficSplit) else dict(shares).items()
    return {name: share for name, share in items if share > 0}
