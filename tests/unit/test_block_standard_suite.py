"""Prefect's standard block tests, run over every block type modelferry defines."""

from __future__ import annotations

import importlib
import inspect
from abc import ABC
from pathlib import Path

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from blocks import BLOCK_MODULES
from blocks.base import DeliveryChannelBlock, EndpointBackendBlock, PackageStoreBlock


def _block_types() -> list[type[Block]]:
    found: list[type[Block]] = []
    for name in BLOCK_MODULES:
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Block) and cls.__module__ == name and ABC not in cls.__bases__:
                found.append(cls)
    return found


BLOCK_TYPES = _block_types()
README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_block_module_defines_a_block_type() -> None:
    assert {cls.__module__ for cls in BLOCK_TYPES} == set(BLOCK_MODULES)


@pytest.mark.parametrize("block_type", BLOCK_TYPES, ids=lambda cls: cls.__name__)
class TestEveryBlock(BlockStandardTestSuite):
    @pytest.fixture
    def block(self, block_type: type[Block]) -> type[Block]:
        return block_type

    def test_has_a_documentation_url(self, block: type[Block]) -> None:
        """The project's documentation of a block type is its row in README's block table."""
        rows = [line for line in README.splitlines() if line.startswith("| `modelferry-")]
        [row] = [row for row in rows if row.startswith(f"| `{block.get_block_type_slug()}` |")]
        assert f"`{block.__name__}`" in row

    @pytest.mark.skip(reason="modelferry's blocks carry no logo (the check downloads it)")
    def test_has_a_valid_image(self, block: type[Block]) -> None:
        """Skipped: see the reason."""


@pytest.mark.parametrize(
    ("capability", "slugs"),
    [
        (
            PackageStoreBlock,
            {"modelferry-local-package-store", "modelferry-azure-blob-package-store"},
        ),
        (
            DeliveryChannelBlock,
            {"modelferry-mqtt-delivery-channel", "modelferry-iothub-delivery-channel"},
        ),
        (EndpointBackendBlock, {"modelferry-azureml-workspace"}),
    ],
)
def test_capabilities_are_abstract_and_keep_their_block_types(
    capability: type[Block], slugs: set[str]
) -> None:
    assert ABC in capability.__bases__
    with pytest.raises(TypeError, match="abstract"):
        capability()
    implementations = {
        cls.get_block_type_slug() for cls in BLOCK_TYPES if issubclass(cls, capability)
    }
    assert implementations == slugs
