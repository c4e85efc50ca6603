"""Errors carry what they are about as attributes, keep them across pickling, hold no secret.

Prefect sends a task's exception from the process that ran it to the one that reads the
result, so every error class must survive `pickle` with its message and attributes.
"""

from __future__ import annotations

import inspect
import json
import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelferry import errors
from modelferry.config import load_config
from modelferry.delivery.outcomes import DeviceResult, FleetResult
from modelferry.delivery.protocol.states import ERROR, SUCCESS, TIMED_OUT
from modelferry.edge.download import DownloadFailedError, LinkExpiredError
from modelferry.edge.install import InstallError
from modelferry.edge.smoke import SmokeTestError
from modelferry.errors import (
    DatabaseSchemaError,
    DeliveryFailedError,
    DeliveryTimedOutError,
    InvalidConfigError,
    ModelferryError,
    PackageStoreError,
    TrackingUnavailableError,
)
from modelferry.stores.local import LocalPackageStore

ROOT = Path(__file__).parents[2]

ERROR_CLASSES = sorted(
    {
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, ModelferryError)
    }
    | {DownloadFailedError, LinkExpiredError, InstallError, SmokeTestError},
    key=lambda cls: cls.__name__,
)


def _context(cls: type[ModelferryError]) -> dict[str, object]:
    """A value for each keyword-only parameter of `cls`, of the type its default has."""
    values: dict[str, object] = {}
    try:
        parameters = inspect.signature(cls).parameters
    except ValueError:  # Exception's own __init__: the message alone
        return values
    for name, parameter in parameters.items():
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        default = parameter.default
        if isinstance(default, int):
            values[name] = 7
        elif isinstance(default, tuple):
            values[name] = ("dev-1", "dev-2")
        else:
            values[name] = f"the-{name}"
    return values


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_pickles_with_its_message_and_attributes(cls: type[ModelferryError]) -> None:
    context = _context(cls)
    error = cls("what went wrong", **context)  # type: ignore[arg-type]
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == "what went wrong"
    assert copy.args == ("what went wrong",)
    assert vars(copy) == vars(error)
    for name, value in context.items():
        assert getattr(copy, name) == value


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_a_message_alone_still_raises(cls: type[ModelferryError]) -> None:
    error = cls("no context here")
    assert str(pickle.loads(pickle.dumps(error))) == "no context here"


def test_urls_keep_no_password_and_no_query() -> None:
    store = PackageStoreError(
        "refused",
        package="churn-edge",
        store_url="https://acct.blob.core.windows.net/pkgs/churn.zip?sv=2024&sig=s3cr3t",
    )
    database = DatabaseSchemaError("newer", url="postgresql+psycopg://ml:hunter2@db/records")
    tracking = TrackingUnavailableError("down", tracking_uri="https://u:pa55@mlflow.example")
    assert store.store_url == "https://acct.blob.core.windows.net/pkgs/churn.zip?…"
    assert database.url == "postgresql+psycopg://ml:***@db/records"
    assert tracking.tracking_uri == "https://u:***@mlflow.example"
    shown = repr(vars(store)) + repr(vars(database)) + repr(vars(tracking))
    for secret in ("s3cr3t", "hunter2", "pa55"):
        assert secret not in shown
        assert secret not in pickle.dumps((store, database, tracking)).decode("latin-1")


def _row(device: str, state: str, failure: str | None = None) -> DeviceResult:
    return DeviceResult(
        device, state, 1, 1.0, None if state == SUCCESS else "it broke", "churn-edge", "1.4.0",
        "churn", "4", f"delivery-{device}", failure=failure,  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_failed_delivery_names_the_package_and_the_failed_devices() -> None:
    result = FleetResult(
        "rollout-1",
        "churn-edge",
        "1.4.0",
        (
            _row("dev-1", SUCCESS),
            _row("dev-2", ERROR, "device"),
            _row("dev-3", TIMED_OUT, "timeout"),
        ),
        started_at=datetime(2026, 12, 1, tzinfo=UTC),
    )
    error = result.failure_error("2 devices failed")
    assert type(error) is DeliveryFailedError
    assert (error.package, error.package_version) == ("churn-edge", "1.4.0")
    assert error.devices == ("dev-2", "dev-3")
    assert str(error) == "2 devices failed"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.package, copy.devices) == ("churn-edge", ("dev-2", "dev-3"))


def test_a_delivery_where_every_failure_timed_out_is_a_timeout() -> None:
    result = FleetResult("rollout-1", "churn-edge", "1.4.0", (_row("dev-9", TIMED_OUT, "timeout"),))
    error = result.failure_error("quiet")
    assert type(error) is DeliveryTimedOutError
    assert error.devices == ("dev-9",)


def test_a_package_store_names_the_package(tmp_path: Path) -> None:
    store = LocalPackageStore(tmp_path / "store")
    with pytest.raises(PackageStoreError, match="does not exist") as raised:
        store.put(tmp_path / "missing.zip", package_id="churn-edge", version="1.4.0")
    assert (raised.value.package, raised.value.package_version) == ("churn-edge", "1.4.0")
    assert raised.value.store_url == str(tmp_path / "store")


def test_an_invalid_config_names_its_file_and_the_first_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    config = json.loads((ROOT / "config" / "model_config.json").read_text())
    config["gate"]["metrics"] = "f1"  # the one bad field of a valid config
    path.write_text(json.dumps(config))
    with pytest.raises(InvalidConfigError) as raised:
        load_config(path)
    assert raised.value.path == str(path)
    assert raised.value.key == "gate.metrics"
    assert "gate.metrics" in str(raised.value)
    with pytest.raises(InvalidConfigError) as missing:
        load_config(tmp_path / "nope.yaml")
    assert missing.value.path == str(tmp_path / "nope.yaml")
