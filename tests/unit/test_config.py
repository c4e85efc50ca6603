"""Config validation: good files load, bad ones name the field, the value and what fits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelferry.config import FileDataSource, load_config, with_approval_mode
from modelferry.errors import InvalidConfigError

REPO_CONFIG = Path(__file__).parents[2] / "config" / "model_config.json"
MINIMAL = {"experiment_name": "demo", "registered_model_name": "demo-model"}


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
    assert config.data.label_column == "target"
    assert set(config.gate.metrics) == {"roc_auc"}
    assert config.approval.timeout_seconds == 86400


def test_yaml_config_loads(tmp_path: Path) -> None:
    text = (
        "experiment_name: demo\nregistered_model_name: demo-model\n"
        "model:\n  type: random_forest\n  params: {n_estimators: 50}\n"
        "approval: {mode: gate+manual, timeout_seconds: 60}\n"
    )
    config = load_config(write(tmp_path, text, "model.yaml"))
    assert config.model.type == "random_forest"
    assert config.approval.mode == "gate+manual"


def test_relative_data_path_resolves_against_config_folder(tmp_path: Path) -> None:
    data = {**MINIMAL, "data": {"source": {"kind": "file", "path": "data/train.csv"}}}
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
            {"data": {"source": {"kind": "file", "path": "a.csv", "sep": ";"}}},
            ["data.source.sep", "allowed fields here: kind, path, format"],
        ),
        ({"registered_model_name": "has space"}, ["registered_model_name", "'has space'"]),
        ({"model": {"type": "random_forest", "params": {"trees": 5}}}, ["'trees'", "n_estimators"]),
        ({"model": {"params": {"random_state": 1}}}, ["random_state", "seed"]),
        ({"data": {"source": {"kind": "ftp"}}}, ["data.source", "'ftp'", "'bundled'"]),
        (
            {"data": {"source": {"kind": "sql", "url": "nope", "query": "select 1"}}},
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
        ({"devcies": ["x"]}, "allowed fields here: devices"),
    ],
)
def test_bad_delivery_section_is_named(tmp_path: Path, delivery: Any, named: str) -> None:
    with pytest.raises(InvalidConfigError, match="delivery") as caught:
        load_config(write(tmp_path, {**MINIMAL, "delivery": delivery}))
    assert named in str(caught.value)


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
    config = {"experiment_name": "d", "registered_model_name": "m", "data": {"source": source}}
    path.write_text(json.dumps(config), encoding="utf-8")

    with pytest.raises(InvalidConfigError) as caught:
        load_config(path)
    assert PG_PASSWORD not in str(caught.value)
    assert PG_PASSWORD not in repr(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
