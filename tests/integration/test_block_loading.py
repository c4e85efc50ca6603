"""`load_block` against a real Prefect server: saved blocks load, bad references say why."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from blocks.base import DeliveryChannelBlock, PackageStoreBlock, load_block
from blocks.delivery_channel import MqttDeliveryChannel
from blocks.mlflow_tracking import MlflowTracking
from blocks.package_store import LocalPackageStoreBlock
from modelferry.errors import InvalidConfigError
from modelferry.stores.local import LocalPackageStore

pytestmark = pytest.mark.integration


def _name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def _never() -> LocalPackageStore:
    raise AssertionError("the default must not be built when a block is named")


def test_a_saved_block_builds_its_object(prefect_harness: str, tmp_path: Path) -> None:
    name = _name()
    LocalPackageStoreBlock(root=str(tmp_path)).save(name)
    store = load_block(
        f"modelferry-local-package-store/{name}",
        PackageStoreBlock,
        _never,
        lambda block: block.get_store(),
    )
    assert isinstance(store, LocalPackageStore)
    assert store.root == tmp_path


def test_no_reference_builds_the_default(prefect_harness: str) -> None:
    default = LocalPackageStore(Path("elsewhere"))
    assert (
        load_block(None, PackageStoreBlock, lambda: default, lambda block: block.get_store())
        is default
    )
    assert (
        load_block("", PackageStoreBlock, lambda: default, lambda block: block.get_store())
        is default
    )


def test_a_block_of_another_kind_is_refused_naming_what_fits(prefect_harness: str) -> None:
    name = _name()
    MqttDeliveryChannel().save(name)
    with pytest.raises(InvalidConfigError) as caught:
        load_block(
            f"modelferry-mqtt-delivery-channel/{name}",
            PackageStoreBlock,
            _never,
            lambda block: block.get_store(),
        )
    message = str(caught.value)
    assert f"modelferry-mqtt-delivery-channel/{name}" in message
    assert "is a MqttDeliveryChannel, not a package store block" in message
    assert "modelferry-local-package-store or modelferry-azure-blob-package-store" in message


def test_a_missing_block_is_named(prefect_harness: str) -> None:
    ref = f"modelferry-mqtt-delivery-channel/{_name()}"
    with pytest.raises(InvalidConfigError, match=f"no block '{ref}' is saved") as caught:
        load_block(ref, DeliveryChannelBlock, _never, lambda block: block.get_channel())
    assert "delivery channel block" in str(caught.value)


def test_a_capability_needs_the_block_type_in_the_reference(prefect_harness: str) -> None:
    with pytest.raises(InvalidConfigError, match="block-type-slug/name") as caught:
        load_block("factory", DeliveryChannelBlock, _never, lambda block: block.get_channel())
    assert "modelferry-mqtt-delivery-channel/factory" in str(caught.value)


def test_one_block_type_loads_by_name_alone(prefect_harness: str) -> None:
    name = _name()
    MlflowTracking(tracking_uri="http://127.0.0.1:9").save(name)
    settings = load_block(name, MlflowTracking, _never, MlflowTracking.get_settings)
    assert settings.tracking_uri == "http://127.0.0.1:9"
