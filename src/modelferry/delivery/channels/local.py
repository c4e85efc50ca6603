"""The in-process transport: the embedded default and the unit tests' transport.

A `LocalHub` stands in for IoT Hub or a broker inside one process: it keeps each device's
C2D messages until the device reads them (as a persistent session does) and a short history
of D2C messages so a channel opened with `since` sees what came after that time. Consumers
may live on different event loops or threads; the hub hands messages over thread-safely.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime

from modelferry.delivery.channels.base import DeliveryChannel, DeviceTransport
from modelferry.delivery.protocol.messages import Message, utc_now
from modelferry.errors import ChannelError

_CLOSED = object()


class _Inbox:
    """A queue on one event loop that other threads may put into."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[object] = asyncio.Queue()

    def put(self, item: object) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.queue.put_nowait(item)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def drain(self) -> AsyncIterator[Message]:
        while True:
            item = await self.queue.get()
            if item is _CLOSED:
                return
            assert isinstance(item, Message)
            yield item


class LocalHub:
    """Routes messages between one cloud side and any number of in-process devices.

    Args:
        history: how many D2C messages are kept for a channel that opens with `since`.
    """

    def __init__(self, history: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._pending_c2d: dict[str, deque[Message]] = {}
        self._devices: dict[str, _Inbox] = {}
        self._d2c_history: deque[Message] = deque(maxlen=history)
        self._clouds: list[_Inbox] = []

    def deliver_c2d(self, message: Message) -> None:
        """Hand a C2D message to its device now, or keep it until the device attaches."""
        stamped = replace(message, enqueued_at=utc_now())
        with self._lock:
            inbox = self._devices.get(message.device_id)
            if inbox is None:
                self._pending_c2d.setdefault(message.device_id, deque()).append(stamped)
                return
        inbox.put(stamped)

    def deliver_d2c(self, message: Message) -> None:
        """Hand a D2C message to every open cloud side and keep it in the history."""
        stamped = replace(message, enqueued_at=utc_now())
        with self._lock:
            self._d2c_history.append(stamped)
            clouds = list(self._clouds)
        for inbox in clouds:
            inbox.put(stamped)

    def attach_device(self, device_id: str, inbox: _Inbox) -> None:
        """Connect `device_id` to `inbox` and hand it the C2D messages queued meanwhile.

        Raises:
            ChannelError: the device is connected already.
        """
        with self._lock:
            if device_id in self._devices:
                raise ChannelError(f"device {device_id!r} is already connected to this local hub")
            self._devices[device_id] = inbox
            pending = self._pending_c2d.pop(device_id, deque())
        for message in pending:
            inbox.put(message)

    def detach_device(self, device_id: str, inbox: _Inbox) -> None:
        """Disconnect `device_id`, if `inbox` is still the one connected."""
        with self._lock:
            if self._devices.get(device_id) is inbox:
                del self._devices[device_id]

    def attach_cloud(self, inbox: _Inbox, since: datetime | None) -> None:
        """Connect a cloud side to `inbox` and hand it the kept D2C messages since `since`."""
        with self._lock:
            backlog = [
                message
                for message in self._d2c_history
                if since is not None and message.enqueued_at and message.enqueued_at >= since
            ]
            self._clouds.append(inbox)
        for message in backlog:
            inbox.put(message)

    def detach_cloud(self, inbox: _Inbox) -> None:
        """Disconnect a cloud side (idempotent)."""
        with self._lock:
            if inbox in self._clouds:
                self._clouds.remove(inbox)


_default_hub = LocalHub()


def default_hub() -> LocalHub:
    """The process-wide hub the embedded default uses."""
    return _default_hub


class LocalChannel(DeliveryChannel):
    """Cloud side of the in-process transport.

    Args:
        hub: the hub to attach to (default: the process-wide `default_hub()`).
    """

    name = "local"

    def __init__(self, hub: LocalHub | None = None) -> None:
        self.hub = hub or default_hub()
        self._inbox: _Inbox | None = None

    async def open(self, since: datetime | None = None) -> None:
        """Attach to the hub, reading the D2C messages enqueued at or after `since`."""
        if self._inbox is not None:
            return
        self._inbox = _Inbox()
        self.hub.attach_cloud(self._inbox, since)

    async def send(self, message: Message) -> None:
        """Send a C2D message to `message.device_id` through the hub."""
        if self._inbox is None:
            raise ChannelError("the local channel is not open: use `async with channel:`")
        self.hub.deliver_c2d(message)

    async def receive(self) -> AsyncIterator[Message]:
        """D2C messages from every device, in arrival order, until the channel is closed."""
        if self._inbox is None:
            raise ChannelError("the local channel is not open: use `async with channel:`")
        async for message in self._inbox.drain():
            yield message

    async def close(self) -> None:
        """Detach from the hub; ends `receive()`. Safe to call twice."""
        if self._inbox is None:
            return
        self.hub.detach_cloud(self._inbox)
        self._inbox.put(_CLOSED)
        self._inbox = None


class LocalDeviceTransport(DeviceTransport):
    """Device side of the in-process transport.

    Args:
        device_id: the device this transport speaks for.
        hub: the hub to attach to (default: the process-wide `default_hub()`).
    """

    def __init__(self, device_id: str, hub: LocalHub | None = None) -> None:
        self.device_id = device_id
        self.hub = hub or default_hub()
        self._inbox: _Inbox | None = None

    async def open(self) -> None:
        """Attach to the hub as `device_id` and get what was sent while it was away."""
        if self._inbox is not None:
            return
        self._inbox = _Inbox()
        self.hub.attach_device(self.device_id, self._inbox)

    async def send(self, message: Message) -> None:
        """Send a D2C message through the hub, always as `device_id`."""
        if self._inbox is None:
            raise ChannelError(f"device {self.device_id!r} is not connected: open it first")
        if message.device_id != self.device_id:
            message = replace(message, device_id=self.device_id)
        self.hub.deliver_d2c(message)

    async def receive(self) -> AsyncIterator[Message]:
        """C2D messages for this device, in arrival order, until the transport is closed."""
        if self._inbox is None:
            raise ChannelError(f"device {self.device_id!r} is not connected: open it first")
        async for message in self._inbox.drain():
            yield message

    async def close(self) -> None:
        """Detach from the hub; ends `receive()`. Safe to call twice."""
        if self._inbox is None:
            return
        self.hub.detach_device(self.device_id, self._inbox)
        self._inbox.put(_CLOSED)
        self._inbox = None
