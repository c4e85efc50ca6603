"""The MQTT transport: IoT Hub's device topics on a self-hosted broker such as Mosquitto.

    C2D  devices/{deviceId}/messages/devicebound/{property_bag}   (the device subscribes)
    D2C  devices/{deviceId}/messages/events/{property_bag}        (the cloud subscribes to all)

so one device agent can speak to this broker or to IoT Hub itself
(`channels.iothub.channel.IoTHubDeviceTransport`).
Property bags are described in `topics`; the client's reconnects and acknowledgements
in `client`; how it runs on the event loop with no thread per client in `loop`.

Delivery guarantees, with QoS 1 and persistent sessions (MQTT 5 by default, 3.1.1 on request):
- `send()` returns when the broker acknowledged the message (PUBACK). A message sent while
  the broker is unreachable waits in the client and goes out after the automatic reconnect
  (exponential backoff with jitter); if no PUBACK arrives within `publish_timeout_s`,
  `send()` raises `ChannelError` (the message may still be delivered later: at least once).
- With MQTT 5 a broker says when nobody subscribes to a topic; then the message is
  discarded, so `send()` raises `ChannelError` rather than report a success. This is how a
  C2D message to a device that never connected fails (a broker keeps messages only for
  sessions it knows: unlike IoT Hub, a device exists for the broker once it has connected).
  MQTT 3.1.1 has no way to say it, so prefer MQTT 5 where the broker speaks it.
- Sessions outlive disconnections (`session_expiry_s`, MQTT 5; 3.1.1 sessions last until the
  broker expires them): a device that reconnects with its device id as client id gets the
  C2D messages sent while it was away; a cloud channel that reopens with the same
  `client_id` gets the D2C messages sent while it was closed. Two channels open at once
  must use different client ids (a broker disconnects the older of two clients sharing an
  id). A broker must persist its sessions to keep them over its own restart
  (Mosquitto: `persistence true`, stopped with SIGTERM).

`MqttChannel.open(since)` does not drop D2C messages older than `since`: MQTT carries no
enqueued time, and the body timestamp is the device's clock (devices drift, and a body that
does not parse must still be yielded). What a session queued while the channel was closed is
yielded first; consumers ignore other deliveries' messages by `deliveryId` anyway.
`Message.enqueued_at` is None for this transport.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import SecretStr

from modelferry.delivery.channels.base import DeliveryChannel, DeviceTransport
from modelferry.delivery.channels.mqtt.client import AsyncMqttClient, ClientSettings, Credentials
from modelferry.delivery.channels.mqtt.topics import (
    C2D_SEGMENT,
    D2C_SEGMENT,
    D2C_SUBSCRIPTION,
    c2d_subscription,
    c2d_topic,
    check_device_id,
    d2c_topic,
    parse_topic,
)
from modelferry.delivery.protocol.messages import Message
from modelferry.errors import ChannelError

logger = logging.getLogger(__name__)

MqttProtocol = Literal["5", "3.1.1"]
_PROTOCOLS = {"5": MQTTProtocolVersion.MQTTv5, "3.1.1": MQTTProtocolVersion.MQTTv311}
_NO_MATCHING_SUBSCRIBERS = 0x10
_CLOSED = object()

DEFAULT_CLOUD_CLIENT_ID = "modelferry-cloud"


@dataclass(frozen=True)
class MqttBroker:
    """Where a broker listens and how to sign in to it.

    TLS is on when `tls` is true or a `ca_file` is given; without a `ca_file` the system's
    trusted CAs verify the broker. The password is unwrapped only when a connection is made.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: str | None = None
    protocol: MqttProtocol = "5"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"MQTT port {self.port} is not a TCP port")
        if self.protocol not in _PROTOCOLS:
            raise ValueError(
                f"MQTT protocol must be one of {sorted(_PROTOCOLS)}, not {self.protocol!r}"
            )
        if self.password is not None and self.username is None and self.protocol == "3.1.1":
            raise ValueError("MQTT 3.1.1 needs a username with a password")

    @property
    def uses_tls(self) -> bool:
        """Whether connections are encrypted."""
        return self.tls or self.ca_file is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context, or None without TLS."""
        if not self.uses_tls:
            return None
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ChannelError(f"cannot load the CA file {self.ca_file!r}: {exc}") from None

    def credentials(self) -> tuple[str | None, str | None]:
        """(username, password) for CONNECT; the only place the password is unwrapped."""
        password = self.password.get_secret_value() if self.password is not None else None
        return self.username, password


@dataclass(frozen=True)
class MqttOptions:
    """Timeouts, reconnect backoff, session lifetime and queue bounds of one client."""

    keepalive_s: int = 60
    connect_timeout_s: float = 10.0
    publish_timeout_s: float = 30.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    session_expiry_s: int = 7 * 24 * 3600
    max_inflight: int = 20
    max_queued: int = 10_000


def client_settings(
    broker: MqttBroker,
    client_id: str,
    options: MqttOptions,
    credentials: Credentials | None = None,
) -> ClientSettings:
    """The settings of one connection (for transports built on this one)."""
    return ClientSettings(
        host=broker.host,
        port=broker.port,
        client_id=client_id,
        protocol=_PROTOCOLS[broker.protocol],
        credentials=credentials or broker.credentials,
        tls=broker.ssl_context(),
        keepalive_s=options.keepalive_s,
        session_expiry_s=options.session_expiry_s,
        connect_timeout_s=options.connect_timeout_s,
        reconnect_min_s=options.reconnect_min_s,
        reconnect_max_s=options.reconnect_max_s,
        max_inflight=options.max_inflight,
        max_queued=options.max_queued,
    )


class _MqttEndpoint:
    """What both sides share: one client, an inbox of received messages, open/close."""

    options: MqttOptions

    def __init__(self) -> None:
        self._client: AsyncMqttClient | None = None
        self._inbox: asyncio.Queue[object] | None = None

    def _settings(self) -> ClientSettings:
        raise NotImplementedError

    def _subscription(self) -> str:
        raise NotImplementedError

    def _parse(self, raw: paho.MQTTMessage) -> Message | None:
        raise NotImplementedError

    def _what(self) -> str:
        raise NotImplementedError

    async def _open(self) -> None:
        if self._client is not None:
            return
        inbox: asyncio.Queue[object] = asyncio.Queue()

        def deliver(raw: paho.MQTTMessage) -> None:
            try:
                message = self._parse(raw)
            except Exception as exc:
                logger.warning(
                    "%s skipped an MQTT message it could not read (%s: %s)",
                    self._what(),
                    type(exc).__name__,
                    str(exc)[:200],
                )
                return
            if message is not None:
                inbox.put_nowait(message)

        client = AsyncMqttClient(self._settings(), deliver, subscription=self._subscription())
        await client.connect()
        self._client, self._inbox = client, inbox

    def _open_client(self) -> AsyncMqttClient:
        if self._client is None:
            raise ChannelError(f"{self._what()} is not open: use `async with` or open() first")
        return self._client

    async def _publish(self, topic: str, body: bytes, what: str, nobody: str) -> None:
        client = self._open_client()
        reason = await client.publish(topic, body, self.options.publish_timeout_s)
        _check_acknowledged(reason, what, nobody, client.settings.where)

    async def _drain(self) -> AsyncIterator[Message]:
        inbox = self._inbox
        if inbox is None:
            raise ChannelError(f"{self._what()} is not open: use `async with` or open() first")
        while True:
            item = await inbox.get()
            if item is _CLOSED:
                inbox.put_nowait(_CLOSED)  # for any other reader
                return
            assert isinstance(item, Message)
            yield item

    async def close(self) -> None:
        """Disconnect, keeping the session; ends `receive()`. Safe to call twice."""
        client, inbox = self._client, self._inbox
        self._client = self._inbox = None
        if client is not None:
            await client.close()
        if inbox is not None:
            inbox.put_nowait(_CLOSED)


def _check_acknowledged(reason: ReasonCode, what: str, nobody: str, where: str) -> None:
    if reason.is_failure:
        raise ChannelError(f"the MQTT broker at {where} refused the {what}: {reason}")
    if reason.value == _NO_MATCHING_SUBSCRIBERS:
        raise ChannelError(f"the MQTT broker at {where} discarded the {what}: {nobody}")


def _topic_of(raw: paho.MQTTMessage) -> str | None:
    try:
        return raw.topic
    except UnicodeDecodeError:
        logger.warning("skipped an MQTT message whose topic is not UTF-8")
        return None


class MqttChannel(_MqttEndpoint, DeliveryChannel):
    """Cloud side over an MQTT broker: C2D to any device, D2C from every device.

    `client_id` names the channel's persistent session on the broker: reopening with the
    same id resumes it; two channels open at the same time need two ids.

        async with MqttChannel(MqttBroker("broker.example.com", 8883, tls=True,
                                          username="cloud", password=SecretStr("..."))):
            ...

    Args:
        broker: where to connect and how to sign in (default: one on 127.0.0.1).
        client_id: the channel's persistent session, as above.
        options: timeouts, reconnect backoff, session lifetime and queue bounds.
    """

    name = "mqtt"

    def __init__(
        self,
        broker: MqttBroker | None = None,
        *,
        client_id: str = DEFAULT_CLOUD_CLIENT_ID,
        options: MqttOptions | None = None,
    ) -> None:
        super().__init__()
        if not client_id:
            raise ValueError("the cloud channel needs a client id for its persistent session")
        self.broker = broker or MqttBroker()
        self.client_id = client_id
        self.options = options or MqttOptions()

    def __repr__(self) -> str:
        return f"MqttChannel({self.broker!r}, client_id={self.client_id!r})"

    def _settings(self) -> ClientSettings:
        return client_settings(self.broker, self.client_id, self.options)

    def _subscription(self) -> str:
        return D2C_SUBSCRIPTION

    def _what(self) -> str:
        return f"MQTT channel {self.client_id!r}"

    def _parse(self, raw: paho.MQTTMessage) -> Message | None:
        topic = _topic_of(raw)
        if topic is None:
            return None
        try:
            parsed = parse_topic(topic, D2C_SEGMENT)
        except ValueError as exc:
            logger.warning("skipped a D2C message with an undecodable property bag (%s)", exc)
            return None
        if parsed is None:
            logger.warning("skipped an MQTT message on an unexpected topic %r", topic[:200])
            return None
        return Message(parsed.device_id, parsed.properties, bytes(raw.payload))

    async def open(self, since: datetime | None = None) -> None:
        """Connect and subscribe to every device's events (`since`: see the module docstring)."""
        await self._open()

    async def send(self, message: Message) -> None:
        """Publish a C2D message to `message.device_id`; returns on the broker's PUBACK."""
        device_id = message.device_id
        try:
            topic = c2d_topic(device_id, message.properties)
        except ValueError as exc:
            raise ChannelError(f"cannot send to device {device_id!r}: {exc}") from None
        await self._publish(
            topic,
            message.body,
            f"C2D message to device {device_id!r}",
            "no session subscribes to that device's messages (it never connected to this "
            "broker, or its session expired)",
        )

    def receive(self) -> AsyncIterator[Message]:
        """D2C messages from every device, in arrival order, until the channel is closed."""
        return self._drain()


class MqttDeviceTransport(_MqttEndpoint, DeviceTransport):
    """Device side over an MQTT broker; its device id is its client id and session.

    Args:
        device_id: the device this transport speaks for; refused if the topics cannot
            carry it.
        broker: where to connect and how to sign in (default: one on 127.0.0.1).
        options: timeouts, reconnect backoff, session lifetime and queue bounds.
    """

    def __init__(
        self,
        device_id: str,
        broker: MqttBroker | None = None,
        *,
        options: MqttOptions | None = None,
    ) -> None:
        super().__init__()
        self.device_id = check_device_id(device_id)
        self.broker = broker or MqttBroker()
        self.options = options or MqttOptions()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.device_id!r}, {self.broker!r})"

    def _settings(self) -> ClientSettings:
        return client_settings(self.broker, self.device_id, self.options)

    def _subscription(self) -> str:
        return c2d_subscription(self.device_id)

    def _what(self) -> str:
        return f"device {self.device_id!r}"

    def _parse(self, raw: paho.MQTTMessage) -> Message | None:
        topic = _topic_of(raw)
        if topic is None:
            return None
        try:
            parsed = parse_topic(topic, C2D_SEGMENT)
        except ValueError as exc:
            logger.warning("skipped a C2D message with an undecodable property bag (%s)", exc)
            return None
        if parsed is None or parsed.device_id != self.device_id:
            logger.warning("device %r skipped a message on topic %r", self.device_id, topic[:200])
            return None
        return Message(self.device_id, parsed.properties, bytes(raw.payload))

    async def open(self) -> None:
        """Connect as `device_id`, resuming its session, and subscribe to its C2D topic."""
        await self._open()

    async def send(self, message: Message) -> None:
        """Publish a D2C message from this device; returns on the broker's PUBACK."""
        try:
            topic = d2c_topic(self.device_id, message.properties)
        except ValueError as exc:
            raise ChannelError(f"device {self.device_id!r} cannot send: {exc}") from None
        await self._publish(
            topic,
            message.body,
            f"D2C message from device {self.device_id!r}",
            "no cloud channel subscribes to device events on this broker",
        )

    def receive(self) -> AsyncIterator[Message]:
        """C2D messages for this device, in arrival order, until the transport is closed."""
        return self._drain()
