"""The deliver-package flow as its tests run it: a folder store behind a block, records.

A module of its own, not a test module: test files that import a test module run it twice,
and a block class defined twice is refused by Prefect's type registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from blocks.base import PackageStoreBlock
from flows.deliver_package import deliver_package
from flows.inputs import Targets
from modelferry.stores.base import PackageStore
from tests.fake_devices import FolderPackageStore, make_package

STORE_SLUG = "test-folder-package-store"


class FolderStoreBlock(PackageStoreBlock):
    """A block giving the in-test folder store, as a Blob Storage block gives its store."""

    _block_type_name = "Test Folder Package Store"
    _block_type_slug = STORE_SLUG
    root: str

    def get_store(self) -> PackageStore:
        return FolderPackageStore(Path(self.root))


@pytest.fixture
def store_block(prefect_harness: str, tmp_path: Path) -> str:
    """A saved store block holding package edge-bc 3.0.0; yields its `slug/name`."""
    store, _ = make_package(tmp_path, "edge-bc", "3.0.0")
    name = f"store-{tmp_path.name.lower().replace('_', '-')}"[:60].strip("-")
    FolderStoreBlock(root=str(store.root)).save(name, overwrite=True)
    return f"{STORE_SLUG}/{name}"


@pytest.fixture
def records_url(tmp_path: Path) -> str:
    """Delivery records of this test, on SQLite."""
    return f"sqlite:///{tmp_path / 'deliveries.db'}"


def run_flow(
    store_block: str,
    records_url: str | None,
    devices: list[str],
    *,
    tracking_uri: str | None = None,
    **options: Any,
) -> Any:
    parameters: dict[str, Any] = {
        "deploy_env": "test",
        "model_type": "classification",
        "model_name": "bc",
        "target_device_id": ",".join(devices),
        "edge_package_name": "edge-bc",
        "edge_package_version": "3.0.0",
        "model_version": "3",
        "targets": Targets(store=store_block, records_url=records_url, tracking_uri=tracking_uri),
    }
    return deliver_package(**{**parameters, **options}, return_state=True)
