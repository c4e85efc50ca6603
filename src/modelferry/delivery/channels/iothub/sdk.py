"""The Azure SDKs at the IoT Hub channel's boundary: importing them, the parts used, events.

`RegistryManager` and `ConsumerClient` are the parts of `IoTHubRegistryManager` and
`EventHubConsumerClient` the channel calls; `modelferry.testing.iothub.FakeIoTHub` implements them
with the same signatures. `message_from_event` reads an Event Hubs event as IoT Hub's
built-in endpoint delivers it: application properties with bytes keys and values, the
device id in the system property `iothub-connection-device-id`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from modelferry.delivery.protocol.messages import Message
from modelferry.extras import install_hint, requires_extra

if TYPE_CHECKING:
    from azure.eventhub import EventData
    from azure.eventhub.aio import PartitionContext

logger = logging.getLogger(__name__)

INSTALL_HINT = install_hint("azure")
DEVICE_ID_PROPERTY = b"iothub-connection-device-id"
MESSAGE_SOURCE_PROPERTY = b"iothub-message-source"

OnEvent = Callable[["PartitionContext", "EventData | None"], Awaitable[None]]
OnError = Callable[["PartitionContext | None", Exception], Awaitable[None]]
"""`on_error`: the partition is None for errors while claiming partitions."""


@contextmanager
def azure_sdk(purpose: str = "IoT Hub delivery") -> Iterator[None]:
    """Wrap imports of the optional Azure SDKs: when missing, the error names the extra."""
    with requires_extra("azure", purpose, "the Azure SDKs"):
        yield


def first_line(error: BaseException) -> str:
    """The first line of an error's message (Azure's can run to pages)."""
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__


class RegistryManager(Protocol):
    """The part of `azure.iot.hub.IoTHubRegistryManager` the channel uses."""

    def send_c2d_message(self, device_id: str, message: str, properties: Any = ...) -> None:
        """Send `message` to `device_id`, with `properties` as its application properties."""


class ConsumerClient(Protocol):
    """The part of `azure.eventhub.aio.EventHubConsumerClient` the channel uses."""

    async def receive(
        self,
        on_event: OnEvent,
        *,
        starting_position: Any = ...,
        starting_position_inclusive: Any = ...,
        on_error: OnError | None = ...,
    ) -> None:
        """Call `on_event` for each event until closed; `on_error` hears what went wrong."""

    async def get_partition_ids(self) -> list[str]:
        """The ids of the Event Hub's partitions."""

    async def close(self) -> None:
        """Stop receiving and disconnect."""


RegistryManagerFactory = Callable[[str], RegistryManager]
"""Builds the C2D client from the service connection string (default: the SDK's)."""

ConsumerClientFactory = Callable[..., ConsumerClient]
"""Called as `(conn_str, consumer_group=..., eventhub_name=...)` (default: the SDK's)."""


def sdk_registry_manager(connection_string: str) -> RegistryManager:
    """The SDK's C2D client (`IoTHubRegistryManager.from_connection_string`)."""
    with azure_sdk():
        from azure.iot.hub import IoTHubRegistryManager  # type: ignore[import-untyped]
    manager: RegistryManager = IoTHubRegistryManager.from_connection_string(connection_string)
    return manager


def sdk_consumer_client(
    conn_str: str, consumer_group: str, *, eventhub_name: str | None = None
) -> ConsumerClient:
    """The SDK's events client (`EventHubConsumerClient.from_connection_string`)."""
    with azure_sdk():
        from azure.eventhub.aio import EventHubConsumerClient
    return EventHubConsumerClient.from_connection_string(
        conn_str, consumer_group=consumer_group, eventhub_name=eventhub_name
    )


def message_from_event(event: EventData) -> Message | None:
    """The message an Event Hubs event carries; None (logged) when it is not a device message."""
    system = event.system_properties
    source = system.get(MESSAGE_SOURCE_PROPERTY)
    if source is not None and _text(source) != "Telemetry":
        logger.debug("skipped an IoT Hub event from source %r", source)
        return None
    raw_device = system.get(DEVICE_ID_PROPERTY)
    if not raw_device:
        logger.warning("skipped an event without %s", DEVICE_ID_PROPERTY.decode())
        return None
    try:
        device_id = _text(raw_device)
        properties = {_text(key): _text(value) for key, value in (event.properties or {}).items()}
    except UnicodeDecodeError:
        logger.warning("skipped an event whose device id or properties are not UTF-8")
        return None
    body: bytes
    raw_body: Any = event.body
    if isinstance(raw_body, bytes | bytearray):
        body = bytes(raw_body)
    elif isinstance(raw_body, str):
        body = raw_body.encode("utf-8")
    else:
        try:
            body = b"".join(bytes(part) for part in raw_body)  # a data body: sections of bytes
        except TypeError:
            body = event.body_as_str().encode("utf-8")
    return Message(device_id, properties, body, enqueued_at=event.enqueued_time)


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    return str(value)
