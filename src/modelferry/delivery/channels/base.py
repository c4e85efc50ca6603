"""The transport interfaces of edge delivery: the cloud side and the device side.

`DeliveryChannel` is what the delivery orchestrator holds: it sends cloud-to-device (C2D)
messages to any device and reads device-to-cloud (D2C) messages from all devices.
`DeviceTransport` is what a device (the reference edge agent, or a test double) holds:
it reads its own C2D messages and sends D2C messages. Implementations: `local`
(in-process, the embedded default), `mqtt` (IoT Hub-style topics on a self-hosted broker)
and `iothub` (Azure IoT Hub). All pass the shared contract suite in
`modelferry.testing.contracts.delivery`.

Contract, for every implementation:
- Both are async context managers: `async with channel:` opens and closes. `open()` is
  where connections are made; errors reaching the broker or hub raise `ChannelError`.
- `DeliveryChannel.open(since)` starts reading D2C messages enqueued at or after `since`
  (UTC, taken *before* the first newDelivery is sent), so no answer is missed.
- `send()` returns once the transport has accepted the message (QoS 1 / hub accepted);
  it raises `ChannelError` when it cannot, and never loses a message silently.
- `receive()` yields messages one at a time, in arrival order, until the channel is
  closed. It never raises for a malformed message: bytes that are not a message at all
  (no device id, undecodable properties) are logged and skipped; a message whose body or
  properties break the protocol is still yielded, and `messages.parse` rejects it.
- Messages may arrive more than once (at-least-once); consumers must tolerate duplicates.
- `close()` is idempotent and ends any `receive()` iteration.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from datetime import datetime
from types import TracebackType
from typing import Self

from modelferry.delivery.protocol.messages import Message


class _Connection(ABC):
    """`async with` opens the connection and closes it, whatever happens inside."""

    @abstractmethod
    async def open(self) -> None:
        """Connect."""

    @abstractmethod
    async def close(self) -> None:
        """Disconnect. Safe to call twice."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class DeliveryChannel(_Connection):
    """The cloud side of a transport: C2D out to any device, D2C in from all devices."""

    name: str = "channel"

    @abstractmethod
    async def open(self, since: datetime | None = None) -> None:
        """Connect, and start reading D2C messages enqueued at or after `since` (UTC)."""

    @abstractmethod
    async def send(self, message: Message) -> None:
        """Send a C2D message to `message.device_id`; returns once the transport accepted it."""

    @abstractmethod
    def receive(self) -> AsyncIterator[Message]:
        """D2C messages from every device, in arrival order, until the channel is closed."""

    @abstractmethod
    async def close(self) -> None:
        """Disconnect; ends `receive()`. Safe to call twice."""


class DeviceTransport(_Connection):
    """The device side of a transport: C2D in for one device, D2C out from it."""

    device_id: str

    @abstractmethod
    async def open(self) -> None:
        """Connect as `device_id`; C2D messages sent while it was away are delivered after."""

    @abstractmethod
    async def send(self, message: Message) -> None:
        """Send a D2C message; returns once the transport accepted it."""

    @abstractmethod
    def receive(self) -> AsyncIterator[Message]:
        """C2D messages for this device, in arrival order, until the transport is closed."""

    @abstractmethod
    async def close(self) -> None:
        """Disconnect; ends `receive()`. Safe to call twice."""
