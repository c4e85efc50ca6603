"""Config validation: good files load, bad ones name the field, the value and what fits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelferry.config import DeliveryConfig, FileDataSource, load_config, with_approval_mode
from modelferry.delivery.plan import FleetPolicy
from modelferry.errors import InvalidConfigError

REPO_CONFIG = Path(__file__).parents[2] / "config" / "model_config.json"
MINIMAL = {
    "experiment_name": "demo",
    "registered_model_name": "demo-model",
    "data": {"label_column": "target"},
}


def write(tmp_path: Path, data: Any, name: str = "model.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else data, encoding="utf-8")
    return path


def test_repository_config_is_valid() -> None:
    config = load_config(REPO_CONFIG)
    assert config.model.type == "lightgbm"
    assert config.approval.mode == "auto"
    assert config.approval.timeout_seconds == 24 * 3600


def test_minimal_config_gets_documented_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.data.source.kind == "bundled"
    assert set(config.gate.metrics) == {"roc_auc"}
    assert config.approval.timeout_seconds == 86400


def test_yaml_config_loads(tmp_path: Path) -> None:
    text = (
        "experiment_name: demo\nregistered_model_name: demo-model\n"
        "model:\n  type: random_forest\n  params: {n_estimators: 50}\n"
        "data: {label_column: target}\n"
        "approval: {mode: gate+manual, timeout_seconds: 60}\n"
    )
    config = load_config(write(tmp_path, text, "model.yaml"))
    assert config.model.type == "random_forest"
    assert config.approval.mode == "gate+manual"


def test_relative_data_path_resolves_against_config_folder(tmp_path: Path) -> None:
    source = {"kind": "file", "path": "data/train.csv"}
    data = {**MINIMAL, "data": {"source": source, "label_column": "label"}}
    config = load_config(write(tmp_path, data))
    assert isinstance(config.data.source, FileDataSource)
    assert config.data.source.path == (tmp_path / "data" / "train.csv").resolve()


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"model": {"type": "xgboost"}}, ["model.type", "'xgboost'", "'lightgbm'"]),
        ({"approval": {"mode": "sometimes"}}, ["approval.mode", "'sometimes'", "'gate+manual'"]),
        ({"approval": {"timeout_seconds": 0}}, ["approval.timeout_seconds", "got 0", "greater"]),
        ({"split": {"test_size": 0.7}}, ["split.test_size", "0.7", "less than 0.5"]),
        ({"gate": {"metrics": {"speed": {}}}}, ["gate.metrics", "'speed'", "'roc_auc'"]),
        ({"gate": {"metrics": {"roc_auc": {"treshold": 0.9}}}}, ["treshold", "threshold"]),
        ({"experimnt_name": "x"}, ["experimnt_name", "unknown field", "experiment_name"]),
        (
            {
                "data": {
                    "source": {"kind": "file", "path": "a.csv", "sep": ";"},
                    "label_column": "y",
                }
            },
            ["data.source.sep", "allowed fields here: kind, path, format"],
        ),
        ({"registered_model_name": "has space"}, ["registered_model_name", "'has space'"]),
        ({"model": {"type": "random_forest", "params": {"trees": 5}}}, ["'trees'", "n_estimators"]),
        ({"model": {"params": {"random_state": 1}}}, ["random_state", "seed"]),
        (
            {"data": {"source": {"kind": "ftp"}, "label_column": "y"}},
            ["data.source", "'ftp'", "'bundled'"],
        ),
        (
            {
                "data": {
                    "source": {"kind": "sql", "url": "nope", "query": "select 1"},
                    "label_column": "y",
                }
            },
            ["data.source.url", "SQLAlchemy URL"],
        ),
    ],
)
def test_invalid_field_is_named_with_value_and_allowed(
    tmp_path: Path, patch: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(InvalidConfigError) as info:
        load_config(write(tmp_path, {**MINIMAL, **patch}))
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, message


def test_missing_required_field(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="registered_model_name: required field"):
        load_config(write(tmp_path, {"experiment_name": "demo"}))


def test_secret_sql_url_never_shown(tmp_path: Path) -> None:
    source = {"kind": "sql", "url": "postgresql://u:hunter2@h/db", "query": "", "extra": 1}
    with pytest.raises(InvalidConfigError) as info:
        load_config(write(tmp_path, {**MINIMAL, "data": {"source": source}}))
    assert "hunter2" not in str(info.value)
    assert "data.source.query" in str(info.value)


def test_missing_file_and_bad_syntax(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="does not exist"):
        load_config(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"experiment_name": "demo",', encoding="utf-8")
    with pytest.raises(InvalidConfigError, match="not valid JSON at line 1"):
        load_config(broken)
    with pytest.raises(InvalidConfigError, match=r"use \.json, \.yaml or \.yml"):
        load_config(write(tmp_path, "x", "model.toml"))
    with pytest.raises(InvalidConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, [1, 2]))


def test_approval_override() -> None:
    config = load_config(REPO_CONFIG)
    assert with_approval_mode(config, None) is config
    assert with_approval_mode(config, "manual").approval.mode == "manual"
    with pytest.raises(InvalidConfigError, match="approval: got 'later'"):
        with_approval_mode(config, "later")


def test_delivery_section_defaults_and_devices(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL)).delivery.devices == ()
    config = load_config(
        write(tmp_path, {**MINIMAL, "delivery": {"devices": ["edge-001", "plant-7:line-2"]}})
    )
    assert config.delivery.devices == ("edge-001", "plant-7:line-2")
    assert config.delivery.local_agents is True
    assert load_config(REPO_CONFIG).delivery.devices, "the demo delivers to named devices"


@pytest.mark.parametrize(
    ("delivery", "named"),
    [
        ({"devices": ["edge-1", "edge-1"]}, "repeated: edge-1"),
        ({"devices": ["has space"]}, "delivery.devices.0"),
        ({"max_failure_share": 1.5}, "delivery.max_failure_share"),
        ({"retries": 11}, "delivery.retries: got 11"),
        ({"max_parallel": 0}, "delivery.max_parallel: got 0"),
        ({"inactivity_timeout_seconds": 0}, "delivery.inactivity_timeout_seconds: got 0"),
        ({"retry_on": ["never"]}, "delivery.retry_on"),
        ({"devcies": ["x"]}, "delivery.devcies: unknown field; allowed fields here: "),
    ],
)
def test_bad_delivery_section_is_named(tmp_path: Path, delivery: Any, named: str) -> None:
    with pytest.raises(InvalidConfigError, match="delivery") as caught:
        load_config(write(tmp_path, {**MINIMAL, "delivery": delivery}))
    assert named in str(caught.value)


def test_delivery_section_is_the_fleet_policy(tmp_path: Path) -> None:
    rollout = {
        "max_parallel": 7,
        "canary_share": 0.5,
        "max_failure_share": 0.3,
        "retries": 4,
        "inactivity_timeout_seconds": 30,
        "deadline_seconds": 600,
    }
    delivery = load_config(
        write(tmp_path, {**MINIMAL, "delivery": {"devices": ["edge-1"], **rollout}})
    ).delivery
    policy = delivery.fleet_policy()
    assert type(policy) is FleetPolicy
    assert policy == FleetPolicy(**rollout)
    with pytest.raises(InvalidConfigError, match=r"allowed fields here: .*\bdevices\b"):
        load_config(write(tmp_path, {**MINIMAL, "delivery": {"devcies": ["x"]}}))
    # One definition: the section's rollout fields are the policy's, bounds and all.
    for name, field in FleetPolicy.model_fields.items():
        assert DeliveryConfig.model_fields[name].metadata == field.metadata, name
    # The library's earlier names still build the same policy.
    assert FleetPolicy(inactivity_timeout=30, deadline=600, retry_backoff=1) == FleetPolicy(
        inactivity_timeout_seconds=30, deadline_seconds=600, retry_backoff_seconds=1
    )


PG_PASSWORD = "hunter2-Secret"


@pytest.mark.parametrize(
    "source",
    [
        {"kind": "mysql", "url": f"postgresql://app:{PG_PASSWORD}@db:5432/x", "query": "select 1"},
        {"url": f"postgresql://app:{PG_PASSWORD}@db:5432/x"},
        f"postgresql://app:{PG_PASSWORD}@db:5432/x",
        {"kind": "sql", "url": f"sqlite:///x.db?password={PG_PASSWORD}", "query": ""},
    ],
)
def test_invalid_config_errors_never_hold_a_password(tmp_path: Path, source: object) -> None:
    path = tmp_path / "model.json"
    data = {"source": source, "label_column": "target"}
    config = {"experiment_name": "d", "registered_model_name": "m", "data": data}
    path.write_text(json.dumps(config), encoding="utf-8")

    with pytest.raises(InvalidConfigError) as caught:
        load_config(path)
    assert PG_PASSWORD not in str(caught.value)
    assert PG_PASSWORD not in repr(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


# ------------------------------------------------------------------ configs that cannot work


def problems_of(tmp_path: Path, config: Any, name: str = "model.json") -> str:
    """The error `load_config` raises for `config`, with its one-line problem list."""
    with pytest.raises(InvalidConfigError) as caught:
        load_config(write(tmp_path, config, name))
    return str(caught.value)


@pytest.mark.parametrize(
    "data",
    [{}, {"source": {"kind": "bundled"}}, {"class_names": ["no", "yes"]}],
    ids=["empty", "source only", "class names only"],
)
def test_a_missing_label_column_is_refused_not_defaulted(tmp_path: Path, data: Any) -> None:
    message = problems_of(tmp_path, {**MINIMAL, "data": data})
    assert "data.label_column: required: the column that holds the label" in message


def test_a_missing_data_section_asks_for_the_label_column(tmp_path: Path) -> None:
    config = {key: value for key, value in MINIMAL.items() if key != "data"}
    message = problems_of(tmp_path, config)
    assert "data: required: the data section, with at least its label_column" in message


@pytest.mark.parametrize(
    ("metric", "gate", "expected"),
    [
        ("roc_auc", {"threshold": 1.7}, "gate.metrics.roc_auc.threshold: got 1.7; roc_auc lies in"),
        ("accuracy", {"threshold": -0.1}, "gate.metrics.accuracy.threshold: got -0.1"),
        ("f1", {"min_delta": 2}, "gate.metrics.f1.min_delta: got 2.0; f1 lies in [0, 1], so a"),
        ("recall", {"min_delta": -1.5}, "gate.metrics.recall.min_delta: got -1.5"),
        ("log_loss", {"threshold": -0.2}, "gate.metrics.log_loss.threshold: got -0.2; log_loss"),
        ("precision", {"min_relative_delta": 1.5}, "min_relative_delta: got 1.5; a fraction"),
        ("log_loss", {"min_relative_delta": -2}, "gate.metrics.log_loss.min_relative_delta"),
    ],
)
def test_gate_values_outside_the_metrics_range_are_refused(
    tmp_path: Path, metric: str, gate: dict[str, float], expected: str
) -> None:
    message = problems_of(tmp_path, {**MINIMAL, "gate": {"metrics": {metric: gate}}})
    assert expected in message


def test_every_bad_gate_value_is_listed_at_once(tmp_path: Path) -> None:
    metrics = {"roc_auc": {"threshold": 1.7}, "f1": {"min_delta": 3, "min_relative_delta": 5}}
    message = problems_of(tmp_path, {**MINIMAL, "gate": {"metrics": metrics}})
    assert "(3 problem(s))" in message
    for field in ("roc_auc.threshold", "f1.min_delta", "f1.min_relative_delta"):
        assert f"gate.metrics.{field}: got" in message


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
@pytest.mark.parametrize("field", ["threshold", "min_delta", "min_relative_delta"])
def test_gate_values_that_are_not_finite_are_refused(
    tmp_path: Path, field: str, value: str
) -> None:
    text = (
        "experiment_name: demo\nregistered_model_name: demo-model\n"
        "data: {label_column: target}\n"
        f"gate: {{metrics: {{log_loss: {{{field}: {value}}}}}}}\n"
    )
    message = problems_of(tmp_path, text, "model.yaml")
    assert f"gate.metrics.log_loss.{field}: got" in message
    assert "finite number" in message


def test_gate_values_at_the_bounds_are_accepted(tmp_path: Path) -> None:
    metrics = {
        "roc_auc": {"threshold": 1.0, "min_delta": -1.0},
        "accuracy": {"threshold": 0.0, "min_delta": 1.0, "min_relative_delta": -1.0},
        "log_loss": {"threshold": 12.5, "min_delta": -3.0, "min_relative_delta": 1.0},
    }
    config = load_config(write(tmp_path, {**MINIMAL, "gate": {"metrics": metrics}}))
    assert config.gate.metrics["log_loss"].threshold == 12.5


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (
            {"params": {"n_estimator": 10}},
            "model.params: unknown LightGBM parameter 'n_estimator' (did you mean 'n_estimators'?)",
        ),
        ({"params": {"num_leafs": 8}}, "unknown LightGBM parameter 'num_leafs' (did you mean"),
        ({"params": {"zzz": 1}}, "unknown LightGBM parameter 'zzz'; LightGBM's parameters"),
        ({"params": {"random_seed": 1}}, "'random_seed' is set by modelferry (the seed comes"),
        ({"params": {"application": "multiclass"}}, "'application' is set by modelferry"),
        ({"params": {"num_classes": 3}}, "'num_classes' is set by modelferry"),
        (
            {"params": {"n_estimators": 10, "num_boost_round": 20}},
            "'n_estimators' and 'num_boost_round' are the same LightGBM parameter "
            "(num_iterations); set it once",
        ),
        (
            {"type": "random_forest", "params": {"n_estimator": 10}},
            "model.params: unknown random_forest parameter 'n_estimator' "
            "(did you mean 'n_estimators'?); allowed: bootstrap,",
        ),
        (
            {"type": "logistic_regression", "params": {"c": 1.0}},
            "unknown logistic_regression parameter 'c' (did you mean 'C'?)",
        ),
    ],
)
def test_unknown_model_params_are_refused_with_the_closest_name(
    tmp_path: Path, model: dict[str, Any], expected: str
) -> None:
    message = problems_of(tmp_path, {**MINIMAL, "model": model})
    assert expected in message


@pytest.mark.parametrize(
    "params",
    [
        {"n_estimators": 10, "reg_lambda": 0.1, "class_weight": "balanced"},  # LGBMClassifier's
        {"num_iterations": 10, "lambda_l2": 0.1, "feature_fraction": 0.8},  # LightGBM's own
        {"num_boost_round": 10, "eta": 0.1, "min_data": 5, "verbose": -1},  # aliases
    ],
    ids=["sklearn API", "canonical", "aliases"],
)
def test_lightgbm_names_aliases_and_sklearn_api_names_are_accepted(
    tmp_path: Path, params: dict[str, Any]
) -> None:
    config = load_config(write(tmp_path, {**MINIMAL, "model": {"params": params}}))
    assert config.model.params == params


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("{learning_rate: .inf}", "'learning_rate' is inf; give a finite number"),
        ("{n_estimators: .nan}", "'n_estimators' is nan; give a finite number"),
        ("{max_depth: [3, -.inf]}", "'max_depth' is -inf; give a finite number"),
    ],
)
def test_a_param_that_is_not_a_finite_number_is_refused(
    tmp_path: Path, params: str, expected: str
) -> None:
    # YAML spells NaN and infinities (JSON has no such numbers); no estimator takes them,
    # and the training cache key would read them all as null.
    text = (
        "experiment_name: demo\nregistered_model_name: demo-model\n"
        f"data: {{label_column: target}}\nmodel: {{type: lightgbm, params: {params}}}\n"
    )
    assert f"model.params: {expected}" in problems_of(tmp_path, text, "model.yaml")


def test_thousands_of_unknown_params_are_counted_not_listed(tmp_path: Path) -> None:
    params = {f"p{index:05d}": 1 for index in range(20_000)}

    message = problems_of(tmp_path, {**MINIMAL, "model": {"params": params}})

    assert "unknown LightGBM parameter 'p00004';" in message
    assert "'p00005'" not in message
    assert "and 19995 more unknown LightGBM parameter(s); LightGBM's parameters" in message
    assert message.count("lightgbm.readthedocs.io") == 1
    assert len(message) < 1000


def test_a_look_alike_letter_in_a_param_name_is_shown_escaped(tmp_path: Path) -> None:
    message = problems_of(tmp_path, {**MINIMAL, "model": {"params": {"l\u0435arning_rate": 0.1}}})

    assert "unknown LightGBM parameter 'l\\u0435arning_rate' (did you mean 'learning_rate'?)" in (
        message
    )
