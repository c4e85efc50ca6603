"""The endpoint value types: model references, deployments, traffic splits, states."""

from __future__ import annotations

import pytest

from modelferry.endpoints.spec import (
    MAX_MIRROR_PERCENT,
    DeploymentMetrics,
    DeploymentSpec,
    DeploymentState,
    EndpointState,
    ModelRef,
    TrafficSplit,
)
from modelferry.errors import InvalidEndpointSpecError


def test_model_ref_by_version_or_alias() -> None:
    assert ModelRef("churn", version="3").uri == "models:/churn/3"
    assert ModelRef("churn", alias="champion").uri == "models:/churn@champion"


@pytest.mark.parametrize(("version", "alias"), [(None, None), ("3", "champion")])
def test_model_ref_needs_exactly_one(version: str | None, alias: str | None) -> None:
    with pytest.raises(InvalidEndpointSpecError, match="exactly one"):
        ModelRef("churn", version=version, alias=alias)


def test_deployment_spec_defaults_and_checks() -> None:
    spec = DeploymentSpec("blue", ModelRef("churn", version="1"))
    assert (spec.instance_type, spec.instance_count) == ("Standard_DS3_v2", 1)
    assert (spec.request_timeout_ms, spec.max_concurrent_requests) == (5000, 1)
    with pytest.raises(InvalidEndpointSpecError, match="needs a name"):
        DeploymentSpec("", spec.model)
    with pytest.raises(InvalidEndpointSpecError, match="instance_count"):
        DeploymentSpec("blue", spec.model, instance_count=0)


@pytest.mark.parametrize(
    ("weights", "mirror"),
    [
        ({}, {}),
        ({"blue": 100}, {}),
        ({"blue": 0}, {}),
        ({"blue": 90, "green": 10}, {}),
        ({"blue": 100, "green": 0}, {"green": 10}),
        ({"blue": 100}, {"green": MAX_MIRROR_PERCENT}),
        ({}, {"green": 20}),
        ({"blue": 100}, {"green": 0}),
    ],
)
def test_valid_splits(weights: dict[str, int], mirror: dict[str, int]) -> None:
    split = TrafficSplit(weights, mirror)
    assert split.deployments == {n for n, w in {**weights, **mirror}.items() if w > 0}


@pytest.mark.parametrize(
    ("weights", "mirror", "message"),
    [
        ({"blue": 60, "green": 30}, {}, "sum to 90"),
        ({"blue": 60, "green": 60}, {}, "sum to 120"),
        ({"blue": 50}, {}, "must sum to 100"),
        ({"blue": 101}, {}, "from 0 to 100"),
        ({"blue": -1, "green": 101}, {}, "from 0 to 100"),
        ({"blue": 100}, {"green": 51}, "at most 50%"),
        ({"blue": 100}, {"green": -5}, "from 0 to 100"),
        ({"blue": 100}, {"blue": 10}, "takes live traffic"),
        ({"blue": 50, "green": 50}, {"green": 10}, "takes live traffic"),
    ],
)
def test_invalid_splits(weights: dict[str, int], mirror: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidEndpointSpecError, match=message):
        TrafficSplit(weights, mirror)


def test_with_weights_keeps_mirroring_to_deployments_without_live_traffic() -> None:
    split = TrafficSplit({"blue": 100}, {"green": 10, "shadow": 5})
    moved = split.with_weights({"blue": 50, "green": 50})
    assert dict(moved.weights) == {"blue": 50, "green": 50}
    assert dict(moved.mirror) == {"shadow": 5}  # green now takes live traffic: no mirroring
    assert dict(split.mirror) == {"green": 10, "shadow": 5}  # the original is unchanged
    with pytest.raises(InvalidEndpointSpecError, match="sum to 70"):
        split.with_weights({"blue": 70})


def test_with_weights_copies_the_mapping() -> None:
    weights = {"blue": 100}
    split = TrafficSplit().with_weights(weights)
    weights["blue"] = 0
    assert dict(split.weights) == {"blue": 100}


def test_endpoint_state_finds_deployments() -> None:
    blue = DeploymentState("blue", "churn", "1", "ready")
    state = EndpointState("ep", "https://ep/score", (blue,), TrafficSplit({"blue": 100}))
    assert state.deployment("blue") is blue
    assert state.deployment("green") is None


@pytest.mark.parametrize(
    ("requests", "errors", "rate"), [(0, 0, 0.0), (10, 0, 0.0), (200, 5, 0.025)]
)
def test_error_rate(requests: int, errors: int, rate: float) -> None:
    assert DeploymentMetrics(requests, errors, None).error_rate == pytest.approx(rate)
