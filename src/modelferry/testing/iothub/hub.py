"""`FakeIoTHub`: an IoT hub in memory, for tests (like `structlog.testing`).

The two SDK clients are in `modelferry.testing.iothub.sdk`:
- `hub.RegistryManager` has `IoTHubRegistryManager.from_connection_string` and
  `send_c2d_message` with the SDK's signatures (a test compares them). As the SDK does, it
  moves `contentType`, `contentEncoding`, `messageId`, `correlationId` and `expiryTimeUtc`
  into system properties; as the service does, it refuses a message to an unregistered
  device, a body over 64 KB, a property name or value with characters IoT Hub refuses, a
  device queue already holding 50 messages, or a wrong key; the SDK then raises a bare
  `Exception("C2D message send failure")`, and so does the fake (`hub.refusals` says why).
- `hub.ConsumerClient` has `EventHubConsumerClient.from_connection_string`, `receive`,
  `get_partition_ids` and `close` with the SDK's signatures. Events are real `EventData`
  decoded from AMQP bytes laid out as the service sends them (application properties
  with bytes keys and values; `iothub-connection-device-id`, `iothub-enqueuedtime`,
  `iothub-message-source` and `x-opt-*` annotations; content type and encoding as
  properties). As the SDK does, `receive()` returns only once the client is closed, hands
  exceptions raised by `on_event` to `on_error` instead of raising them, and reports
  errors to `on_error` while it retries. `max_wait_time` and load balancing are not simulated.
- `hub.device(device_id)` registers a device and returns a `DeviceTransport` that sees the
  hub as a device on its MQTT endpoint does: C2D messages arrive on
  `devices/{id}/messages/devicebound/{bag}` with IoT Hub's `%24.mid`/`%24.to`/`%24.ct`/`%24.ce`,
  D2C messages are published on `devices/{id}/messages/events/{bag}`, and both are read
  with the MQTT transport's own topic code.

    hub = FakeIoTHub()
    async with hub.channel() as channel, hub.device("press-7") as device:
        ...
    hub.fail_events(AuthenticationError("expired key"))  # receivers report it to on_error
"""

from __future__ import annotations

import base64
import logging
import threading
import uuid
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from modelferry.delivery.channels.base import DeviceTransport
from modelferry.delivery.channels.iothub.channel import IoTHubChannel
from modelferry.delivery.channels.iothub.sdk import azure_sdk
from modelferry.delivery.channels.mqtt.topics import (
    C2D_SEGMENT,
    D2C_SEGMENT,
    d2c_topic,
    parse_topic,
)
from modelferry.delivery.protocol.messages import Message
from modelferry.errors import ChannelError
from modelferry.testing.iothub.sdk import (
    SEND_FAILURE,
    FakeEventHubConsumerClient,
    FakeIoTHubRegistryManager,
    Waker,
)

with azure_sdk("FakeIoTHub"):
    from azure.eventhub._pyamqp._encode import encode_payload
    from azure.eventhub._pyamqp.message import Message as AmqpMessage
    from azure.eventhub._pyamqp.message import Properties as AmqpProperties
    from azure.eventhub._pyamqp.types import TYPE, VALUE, AMQPTypes

__all__ = ["FakeIoTHub", "FakeIoTHubDevice"]

logger = logging.getLogger(__name__)

C2D_QUEUE_LIMIT = 50
C2D_MAX_BYTES = 64 * 1024
_SYSTEM_FROM_SDK = {
    "contentType": "content_type",
    "contentEncoding": "content_encoding",
    "correlationId": "correlation_id",
    "expiryTimeUtc": "absolute_expiry_time",
    "messageId": "message_id",
}
# What IoT Hub accepts in C2D property names and values.
_PROPERTY_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
)


@dataclass
class SentC2D:
    """One C2D message as the service took it: application and system properties apart."""

    device_id: str
    body: bytes
    properties: dict[str, str]
    system: dict[str, Any]


@dataclass
class _Device:
    queue: deque[tuple[str, bytes]] = field(default_factory=deque)
    waker: Waker | None = None


@dataclass(frozen=True)
class _Event:
    enqueued: datetime
    sequence: int
    payload: bytes


class FakeIoTHub:
    """An IoT hub and its built-in events endpoint in memory; see the module docstring.

    Args:
        name: the hub's name, in its host name and its Event Hub's.
        partitions: how many partitions the built-in endpoint has.
    """

    def __init__(self, name: str = "fake-hub", *, partitions: int = 2) -> None:
        self.hostname = f"{name}.azure-devices.net"
        self.namespace = f"{name}-ns.servicebus.windows.net"
        self.eventhub_name = name
        self.partitions = [str(index) for index in range(partitions)]
        self.service_key = base64.b64encode(uuid.uuid4().bytes * 2).decode()
        self.events_key = base64.b64encode(uuid.uuid4().bytes * 2).decode()
        self.sent: list[SentC2D] = []
        self.refusals: list[str] = []
        self._lock = threading.Lock()
        self._devices: dict[str, _Device] = {}
        self._events: dict[str, list[_Event]] = {pid: [] for pid in self.partitions}
        self._offsets: dict[str, int] = dict.fromkeys(self.partitions, 0)
        self._consumers: set[Waker] = set()
        self._events_error: Exception | None = None
        self._receive_crash: Exception | None = None
        hub = self
        self.RegistryManager: type[FakeIoTHubRegistryManager] = type(
            "FakeIoTHubRegistryManager", (FakeIoTHubRegistryManager,), {"hub": hub}
        )
        self.ConsumerClient: type[FakeEventHubConsumerClient] = type(
            "FakeEventHubConsumerClient", (FakeEventHubConsumerClient,), {"hub": hub}
        )

    # -- what a test sees ----------------------------------------------------------------

    @property
    def service_connection_string(self) -> str:
        """A connection string of the hub's `service` policy."""
        return (
            f"HostName={self.hostname};SharedAccessKeyName=service;"
            f"SharedAccessKey={self.service_key}"
        )

    @property
    def eventhub_connection_string(self) -> str:
        """The built-in endpoint's Event Hub-compatible connection string."""
        return (
            f"Endpoint=sb://{self.namespace}/;SharedAccessKeyName=service;"
            f"SharedAccessKey={self.events_key};EntityPath={self.eventhub_name}"
        )

    def channel(self, **options: Any) -> IoTHubChannel:
        """An `IoTHubChannel` on this hub (options as `IoTHubChannel` takes them)."""
        options.setdefault("registry_manager_factory", self.RegistryManager.from_connection_string)
        options.setdefault("consumer_client_factory", self.ConsumerClient.from_connection_string)
        return IoTHubChannel(
            self.service_connection_string, self.eventhub_connection_string, **options
        )

    def register_device(self, device_id: str) -> None:
        """Add a device to the registry (idempotent)."""
        with self._lock:
            self._devices.setdefault(device_id, _Device())

    def device(self, device_id: str) -> FakeIoTHubDevice:
        """A registered device's transport."""
        self.register_device(device_id)
        return FakeIoTHubDevice(self, device_id)

    def queued(self, device_id: str) -> int:
        """How many C2D messages wait for the device."""
        with self._lock:
            device = self._devices.get(device_id)
            return len(device.queue) if device else 0

    def fail_events(self, error: Exception | None) -> None:
        """Make the events endpoint fail with `error` (None: recover)."""
        self._events_error = error
        self._wake_consumers()

    def crash_receivers(self, error: Exception | None) -> None:
        """Make every running `receive()` raise `error`, as an SDK bug would."""
        self._receive_crash = error
        self._wake_consumers()

    def append_event(
        self,
        body: bytes,
        *,
        properties: Mapping[str, Any] | Mapping[bytes, Any] | None = None,
        annotations: Mapping[bytes, Any] | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        partition: str | None = None,
    ) -> None:
        """Put any event on the built-in endpoint, as IoT Hub routes it there."""
        with self._lock:
            pid = partition or self.partitions[0]
            enqueued = datetime.now(UTC)
            sequence = len(self._events[pid])
            offset = self._offsets[pid]
            milliseconds = int(enqueued.timestamp() * 1000)
            stamped: dict[str | bytes, Any] = {
                b"x-opt-sequence-number": {TYPE: AMQPTypes.long, VALUE: sequence},
                b"x-opt-offset": str(offset),
                b"x-opt-enqueued-time": {TYPE: AMQPTypes.timestamp, VALUE: milliseconds},
            }
            merged: dict[str | bytes, Any] = dict(annotations.items()) if annotations else {}
            merged.update(stamped)
            message = AmqpMessage(
                message_annotations=merged,
                properties=AmqpProperties(
                    message_id=str(uuid.uuid4()).encode(),
                    content_type=content_type.encode() if content_type else None,
                    content_encoding=content_encoding.encode() if content_encoding else None,
                ),
                application_properties=dict(properties.items()) if properties else {},
                data=[body],
            )
            payload = bytearray()
            encode_payload(payload, message)
            self._events[pid].append(_Event(enqueued, sequence, bytes(payload)))
            self._offsets[pid] = offset + len(payload)
        self._wake_consumers()

    # -- the service side of the SDK clients and the device ------------------------------

    def _accept_c2d(self, device_id: str, body: bytes, properties: Mapping[str, Any]) -> None:
        system = {_SYSTEM_FROM_SDK[k]: v for k, v in properties.items() if k in _SYSTEM_FROM_SDK}
        application = {k: str(v) for k, v in properties.items() if k not in _SYSTEM_FROM_SDK}
        system.setdefault("message_id", str(uuid.uuid4()))
        with self._lock:
            device = self._devices.get(device_id)
            refusal = _c2d_refusal(device_id, device, body, application)
            if refusal is not None:
                self.refusals.append(refusal)
                raise Exception(SEND_FAILURE)  # what the SDK raises, whatever the cause
            assert device is not None
            self.sent.append(SentC2D(device_id, body, application, system))
            device.queue.append((_c2d_topic(device_id, application, system), body))
            waker = device.waker
        if waker is not None:
            waker.wake()

    def _accept_d2c(self, device_id: str, topic: str, payload: bytes) -> None:
        parsed = parse_topic(topic, D2C_SEGMENT)
        if parsed is None or parsed.device_id != device_id:
            raise ChannelError(f"IoT Hub closes a connection that publishes on {topic!r}")
        partition = self.partitions[zlib.crc32(device_id.encode()) % len(self.partitions)]
        now = int(datetime.now(UTC).timestamp() * 1000)
        self.append_event(
            payload,
            properties=parsed.properties,
            annotations={
                b"iothub-connection-device-id": device_id,
                b"iothub-connection-auth-method": (
                    '{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}'
                ),
                b"iothub-connection-auth-generation-id": "638000000000000000",
                b"iothub-enqueuedtime": {TYPE: AMQPTypes.timestamp, VALUE: now},
                b"iothub-message-source": "Telemetry",
            },
            content_type=parsed.system.get("$.ct"),
            content_encoding=parsed.system.get("$.ce"),
            partition=partition,
        )

    def _attach(self, device_id: str, waker: Waker) -> None:
        with self._lock:
            device = self._devices.get(device_id)
            if device is None:
                raise ChannelError(f"IoT Hub refuses device {device_id!r}: not registered")
            if device.waker is not None:
                raise ChannelError(f"device {device_id!r} is already connected to the fake hub")
            device.waker = waker

    def _detach(self, device_id: str, waker: Waker) -> None:
        with self._lock:
            device = self._devices.get(device_id)
            if device is not None and device.waker is waker:
                device.waker = None

    def _take_c2d(self, device_id: str) -> tuple[str, bytes] | None:
        with self._lock:
            device = self._devices.get(device_id)
            return device.queue.popleft() if device and device.queue else None

    def _events_from(self, partition: str, index: int) -> list[_Event]:
        with self._lock:
            return self._events[partition][index:]

    def _first_index(self, partition: str, position: Any, inclusive: bool) -> int:
        with self._lock:
            events = self._events[partition]
            if position in (None, "@latest"):
                return len(events)
            if position in ("-1", -1):
                return 0
            if isinstance(position, datetime):
                for index, event in enumerate(events):
                    if event.enqueued > position or (inclusive and event.enqueued == position):
                        return index
                return len(events)
            if isinstance(position, int):
                return position if inclusive else position + 1
            raise ValueError(f"the fake hub does not read from position {position!r}")

    def _wake_consumers(self) -> None:
        with self._lock:
            consumers = list(self._consumers)
        for waker in consumers:
            waker.wake()


def _c2d_refusal(
    device_id: str, device: _Device | None, body: bytes, properties: Mapping[str, str]
) -> str | None:
    if device is None:
        return f"device {device_id!r} is not registered"
    if len(body) > C2D_MAX_BYTES:
        return f"the body is {len(body)} bytes, over IoT Hub's {C2D_MAX_BYTES}"
    if len(device.queue) >= C2D_QUEUE_LIMIT:
        return f"device {device_id!r} already has {C2D_QUEUE_LIMIT} messages queued"
    for key, value in properties.items():
        if not key or not set(key + value) <= _PROPERTY_CHARACTERS:
            return f"property {key!r}={value!r} has characters IoT Hub refuses"
    return None


def _c2d_topic(device_id: str, properties: Mapping[str, str], system: Mapping[str, Any]) -> str:
    """How IoT Hub renders a C2D message's topic for an MQTT device."""
    bag = [
        ("$.mid", str(system["message_id"])),
        ("$.to", f"/devices/{device_id}/messages/deviceBound"),
    ]
    for name, key in (("content_type", "$.ct"), ("content_encoding", "$.ce")):
        if system.get(name):
            bag.append((key, str(system[name])))
    bag.extend(properties.items())
    encoded = "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in bag)
    return f"devices/{device_id}/messages/{C2D_SEGMENT}/{encoded}"


class FakeIoTHubDevice(DeviceTransport):
    """A device connected to a `FakeIoTHub`, speaking its MQTT topics."""

    def __init__(self, hub: FakeIoTHub, device_id: str) -> None:
        self.hub = hub
        self.device_id = device_id
        self._waker: Waker | None = None

    async def open(self) -> None:
        """Connect to the fake hub as `device_id`; C2D messages sent meanwhile follow."""
        if self._waker is not None:
            return
        waker = Waker()
        self.hub._attach(self.device_id, waker)
        self._waker = waker

    async def send(self, message: Message) -> None:
        """Publish a D2C message on the device's events topic.

        Raises:
            ChannelError: not connected, or a property the topic cannot carry.
        """
        if self._waker is None:
            raise ChannelError(f"device {self.device_id!r} is not connected: open it first")
        try:
            topic = d2c_topic(self.device_id, message.properties)
        except ValueError as exc:
            raise ChannelError(f"device {self.device_id!r} cannot send: {exc}") from None
        self.hub._accept_d2c(self.device_id, topic, message.body)

    async def receive(self) -> AsyncIterator[Message]:
        """C2D messages for this device, in arrival order, until the transport is closed."""
        waker = self._waker
        if waker is None:
            raise ChannelError(f"device {self.device_id!r} is not connected: open it first")
        while self._waker is waker:
            item = self.hub._take_c2d(self.device_id)
            if item is None:
                await waker.wait()
                continue
            topic, body = item
            parsed = parse_topic(topic, C2D_SEGMENT)
            if parsed is None:
                logger.warning("fake device %r skipped topic %r", self.device_id, topic)
                continue
            yield Message(self.device_id, parsed.properties, body)

    async def close(self) -> None:
        """Disconnect; ends `receive()`. Safe to call twice."""
        waker, self._waker = self._waker, None
        if waker is not None:
            self.hub._detach(self.device_id, waker)
            waker.wake()
