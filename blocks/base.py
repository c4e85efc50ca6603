"""What a modelferry block can build, and the one way flows load a block by reference.

A flow names a block as ``block-type-slug/name`` (any block of a capability) or, where one
block type is asked for, by its name alone. `load_block` loads it, checks it is of the kind
asked for and otherwise returns the embedded default; every failure is an
`InvalidConfigError` that names the reference and what would fit.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, TypeVar

from prefect.blocks.core import Block

from blocks import BLOCK_MODULES
from modelferry.errors import InvalidConfigError

if TYPE_CHECKING:
    from modelferry.delivery.channels.base import DeliveryChannel
    from modelferry.endpoints.backend import EndpointBackend
    from modelferry.registry import ModelRegistry
    from modelferry.stores.base import PackageStore

B = TypeVar("B", bound=Block)
T = TypeVar("T")


class PackageStoreBlock(Block, ABC):
    """A block that configures where model packages are kept (a `PackageStore`).

    `ABC` among the direct bases keeps Prefect from registering this class as a block type.
    """

    capability: ClassVar[str] = "package store"

    @abstractmethod
    def get_store(self) -> PackageStore:
        """The package store this block configures; no call is made yet."""


class DeliveryChannelBlock(Block, ABC):
    """A block that configures how edge devices are reached (a `DeliveryChannel`)."""

    capability: ClassVar[str] = "delivery channel"

    @abstractmethod
    def get_channel(self) -> DeliveryChannel:
        """The cloud side of the delivery protocol, not yet open."""


class EndpointBackendBlock(Block, ABC):
    """A block that configures where online endpoints run (an `EndpointBackend`)."""

    capability: ClassVar[str] = "endpoint backend"

    @abstractmethod
    def get_backend(self, registry: ModelRegistry) -> EndpointBackend:
        """The endpoint backend, deploying model versions from `registry`."""


def load_block(
    ref: str | None, kind: type[B], default: Callable[[], T], build: Callable[[B], T]
) -> T:
    """What the block `ref` of type `kind` builds (`build(block)`), or `default()` without one.

    Args:
        ref: ``block-type-slug/name``, or just the name when `kind` is one block type;
            None or empty for the embedded default.
        kind: the block class or capability (`PackageStoreBlock`, ...) the block must be.
        default: builds the embedded default.
        build: builds the library object from the loaded block, e.g.
            ``lambda block: block.get_store()`` (the capability's own function is abstract).

    Raises:
        InvalidConfigError: no such block is saved, or it is not a `kind`.
    """
    if not ref:
        return default()
    return build(_load(ref.strip(), kind))


def _load(ref: str, kind: type[B]) -> B:
    # Every block type known before loading: Prefect finds a saved block's class by its
    # slug, and the messages below list the types that would fit.
    for module in BLOCK_MODULES:
        importlib.import_module(module)
    expected = _describe(kind)
    if "/" not in ref and ABC in kind.__bases__:
        raise InvalidConfigError(
            f"block {ref!r}: name a {expected} as block-type-slug/name, e.g. "
            f"{_slugs(kind)[0]}/{ref}"
        )
    try:
        block = Block.load(ref) if "/" in ref else kind.load(ref)
    except ValueError as exc:
        if "Unable to find block document" not in str(exc):
            raise
        raise InvalidConfigError(
            f"no block {ref!r} is saved (expected a {expected}): save one in the Prefect UI "
            "or with Block.save(), or leave it empty for the embedded default"
        ) from None
    if not isinstance(block, kind):
        raise InvalidConfigError(f"block {ref!r} is a {type(block).__name__}, not a {expected}")
    return block


def _describe(kind: type[Block]) -> str:
    """'package store block (slug-a or slug-b)'."""
    name = getattr(kind, "capability", None) or kind.get_block_type_name()
    return f"{name} block ({' or '.join(_slugs(kind))})"


def _slugs(kind: type[Block]) -> list[str]:
    """The block type slugs of `kind` and its concrete subclasses, in definition order."""
    found: list[str] = []
    pending: list[type[Block]] = [kind]
    while pending:
        cls = pending.pop(0)
        if ABC not in cls.__bases__:
            found.append(cls.get_block_type_slug())
        pending.extend(cls.__subclasses__())
    return list(dict.fromkeys(found))
