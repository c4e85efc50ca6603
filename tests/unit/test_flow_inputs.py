"""The flows' typed inputs: few top-level parameters, nested models validated by Prefect."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema

import flows.retrain_and_deliver as nightly
from flows.deliver_package import deliver_package
from flows.deploy_online_endpoint import deploy_online_endpoint
from flows.inputs import Rollout, Targets
from flows.package_and_deliver import package_and_deliver
from flows.retrain_and_deliver import retrain_and_deliver
from modelferry.errors import InvalidConfigError

DELIVERY = {
    "deploy_env": "dev",
    "model_type": "classification",
    "model_name": "bc",
    "target_device_id": "edge-1",
    "edge_package_name": "bc",
    "edge_package_version": "1",
}


def test_the_nightly_flow_takes_at_most_eight_parameters() -> None:
    properties = parameter_schema(retrain_and_deliver.fn).model_dump_for_openapi()["properties"]
    assert len(properties) <= 8, sorted(properties)
    assert {"config_path", "targets", "rollout"} <= set(properties)
    assert not [name for name in properties if name.endswith("_block")]


@pytest.mark.parametrize(
    ("flow", "grouped"),
    [
        (retrain_and_deliver, {"targets", "rollout"}),
        (deploy_online_endpoint, {"targets", "rollout"}),
        (package_and_deliver, {"targets"}),
        (deliver_package, {"targets", "fleet"}),
    ],
    ids=lambda value: getattr(value, "name", ""),
)
def test_grouped_inputs_render_as_forms(flow: Any, grouped: set[str]) -> None:
    schema = parameter_schema(flow.fn).model_dump_for_openapi()
    definitions = schema["definitions"]
    for name in grouped:
        ref = schema["properties"][name]["$ref"]
        model = definitions[ref.rsplit("/", 1)[-1]]
        assert model["type"] == "object"
        # Every field says what it is: the UI shows it under the field.
        assert all(field.get("description") for field in model["properties"].values()), name


@pytest.mark.parametrize(
    ("flow", "parameters", "named"),
    [
        (retrain_and_deliver, {"targets": {"stor": "x/y"}}, "stor"),
        (retrain_and_deliver, {"rollout": {"step_seconds": -1}}, "step_seconds"),
        (retrain_and_deliver, {"rollout": {"strategy": "purple"}}, "strategy"),
        (retrain_and_deliver, {"targets": {"tracking": "a", "tracking_uri": "b"}}, "tracking_uri"),
        (deliver_package, {**DELIVERY, "fleet": {"max_parallel": 0}}, "max_parallel"),
        (deliver_package, {**DELIVERY, "fleet": {"retries": 11}}, "retries"),
    ],
)
def test_a_bad_nested_value_is_refused_naming_the_field(
    flow: Any, parameters: dict[str, Any], named: str
) -> None:
    with pytest.raises(ParameterTypeError) as caught:
        flow.validate_parameters(parameters)
    assert named in str(caught.value)


def test_nested_values_arrive_as_the_models() -> None:
    validated = retrain_and_deliver.validate_parameters(
        {
            "targets": {"store": "modelferry-local-package-store/shared"},
            "rollout": {"steps": [50, 100]},
        }
    )
    assert validated["targets"] == Targets(store="modelferry-local-package-store/shared")
    assert validated["rollout"].policy().steps == (50, 100)


def test_a_password_in_the_records_url_is_refused_without_repeating_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = "postgresql://ci:hunter2@db/deliveries"
    # Not at parameter validation: Prefect logs a refused parameter's value with the error.
    caplog.set_level(logging.DEBUG)
    validated = deliver_package.validate_parameters({**DELIVERY, "targets": {"records_url": url}})
    assert "hunter2" not in caplog.text
    with pytest.raises(InvalidConfigError, match="save the URL in a Prefect Secret") as caught:
        validated["targets"].records_secret()
    assert caught.value.key == "targets.records_url"
    assert "hunter2" not in str(caught.value)


def test_the_nightly_flow_refuses_a_records_url_with_a_password_before_training(
    prefect_harness: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def trained(**_: Any) -> None:
        raise AssertionError("trained before the records URL was checked")

    monkeypatch.setattr(nightly, "train_and_register", trained)
    targets = Targets(records_url="postgresql://ci:hunter2@db/deliveries")
    state = retrain_and_deliver(targets=targets, return_state=True)
    assert state.is_failed()
    with pytest.raises(InvalidConfigError, match=r"targets\.records_url holds a password"):
        state.result()
    assert "hunter2" not in caplog.text


def test_rollout_policy_defaults_follow_the_strategy() -> None:
    assert Rollout().policy().steps == (10, 50, 100)
    assert Rollout(strategy="blue-green").policy().steps == (100,)
    with pytest.raises(ValueError, match="steps must end at 100"):
        Rollout(steps=(10, 50))
