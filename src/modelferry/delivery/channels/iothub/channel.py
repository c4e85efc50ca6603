"""The Azure IoT Hub transport: the service SDKs on the cloud side, MQTT on the device side.

Cloud side (`IoTHubChannel`, needs `pip install 'modelferry[azure]'`):
- C2D through `IoTHubRegistryManager.send_c2d_message(device_id, body, properties)`. The
  SDK call blocks, so it runs on one worker thread (the SDK's AMQP sender is not shared
  between threads); the body is the JSON text; `contentType`/`contentEncoding` go with the
  properties, and the SDK turns them into the message's system properties.
- D2C from the hub's built-in Event Hub-compatible endpoint with
  `EventHubConsumerClient.receive()`. The SDK swallows exceptions raised inside its
  `on_event` callback, so the callback only queues the event; `receive()` converts it
  (property keys and values arrive as bytes; the device id is the system property
  `iothub-connection-device-id`; `enqueued_at` is the event's enqueued time). A receiver
  that stops, or a hub that rejects the credentials, ends `receive()` with `ChannelError`.
- `open(since)` reads from `since - clock_skew` (default 30 s): the hub stamps events with
  its own clock, and an answer must not be missed because ours runs ahead. What comes
  before `since` is other deliveries' traffic, which consumers ignore by `deliveryId`.
- Events that are not device telemetry (twin changes, lifecycle events routed to the
  built-in endpoint) are skipped.

Device side (`IoTHubDeviceTransport`): the MQTT device transport pointed at IoT Hub's MQTT
endpoint, signing in with a SAS token made from the device's connection string (renewed
on every reconnect; the hub disconnects a client whose token expired, and the transport
reconnects with a fresh one). No Azure SDK is needed on the device.

`modelferry.testing.iothub.FakeIoTHub` stands in for the hub in tests (yours too).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, cast

from pydantic import SecretStr

from modelferry.delivery.channels.base import DeliveryChannel
from modelferry.delivery.channels.iothub.auth import DeviceCredentials, parse_connection_string
from modelferry.delivery.channels.iothub.sdk import (
    ConsumerClient,
    ConsumerClientFactory,
    RegistryManager,
    RegistryManagerFactory,
    azure_sdk,
    first_line,
    message_from_event,
    sdk_consumer_client,
    sdk_registry_manager,
)
from modelferry.delivery.channels.mqtt.channel import (
    MqttBroker,
    MqttDeviceTransport,
    MqttOptions,
    client_settings,
)
from modelferry.delivery.channels.mqtt.client import ClientSettings
from modelferry.delivery.channels.mqtt.topics import CONTENT_ENCODING
from modelferry.delivery.protocol.messages import CONTENT_TYPE, Message, utc_now
from modelferry.errors import ChannelError
from modelferry.redaction import Redactor

if TYPE_CHECKING:
    from azure.eventhub import EventData
    from azure.eventhub.aio import PartitionContext

logger = logging.getLogger(__name__)

IOTHUB_MQTT_PORT = 8883
_CLOSED = object()


class IoTHubChannel(DeliveryChannel):
    """Cloud side over Azure IoT Hub; see the module docstring.

    Args:
        service_connection_string: a hub policy with ServiceConnect (e.g. `service`).
        eventhub_connection_string: the hub's Event Hub-compatible endpoint (Built-in
            endpoints page), including `EntityPath` unless `eventhub_name` is given.
        consumer_group: a consumer group of the built-in endpoint that no other reader
            uses at the same time.
        eventhub_name: the built-in endpoint's Event Hub name, when the connection string
            has no `EntityPath`.
        clock_skew: how far before `since` `open()` starts reading, for the hub's clock.
        open_timeout_s: seconds `open()` waits for the built-in endpoint to answer.
        send_timeout_s: seconds `send()` waits for the hub to accept a C2D message.
        registry_manager_factory: builds the C2D client (default: the SDK's).
        consumer_client_factory: builds the events reader (default: the SDK's).
    """

    name = "iothub"

    def __init__(
        self,
        service_connection_string: str | SecretStr,
        eventhub_connection_string: str | SecretStr,
        *,
        consumer_group: str = "$Default",
        eventhub_name: str | None = None,
        clock_skew: timedelta = timedelta(seconds=30),
        open_timeout_s: float = 60.0,
        send_timeout_s: float = 60.0,
        registry_manager_factory: RegistryManagerFactory | None = None,
        consumer_client_factory: ConsumerClientFactory | None = None,
    ) -> None:
        self._service = _secret(service_connection_string)
        self._events = _secret(eventhub_connection_string)
        service = parse_connection_string(self._service.get_secret_value())
        events = parse_connection_string(self._events.get_secret_value())
        self.hostname = service.get("HostName", "IoT Hub")
        # What error messages must never show.
        self._redactor = Redactor(
            {
                self._service.get_secret_value(),
                self._events.get_secret_value(),
                *(
                    pairs["SharedAccessKey"]
                    for pairs in (service, events)
                    if pairs.get("SharedAccessKey")
                ),
            }
        )
        self.consumer_group = consumer_group
        self.eventhub_name = eventhub_name
        self.clock_skew = clock_skew
        self.open_timeout_s = open_timeout_s
        self.send_timeout_s = send_timeout_s
        self._registry_factory = registry_manager_factory or sdk_registry_manager
        self._consumer_factory = consumer_client_factory or sdk_consumer_client
        self._executor: ThreadPoolExecutor | None = None
        self._registry: RegistryManager | None = None
        self._consumer: ConsumerClient | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[object] | None = None
        self._failure: ChannelError | None = None
        self._closing = False

    def __repr__(self) -> str:
        return f"IoTHubChannel({self.hostname!r}, consumer_group={self.consumer_group!r})"

    async def open(self, since: datetime | None = None) -> None:
        """Build the C2D client, check the events endpoint answers, start reading events."""
        if self._receiver is not None:
            return
        start = (since or utc_now()) - self.clock_skew
        self._closing, self._failure = False, None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iothub-c2d")
        loop = asyncio.get_running_loop()
        try:
            self._registry = await loop.run_in_executor(
                self._executor, self._registry_factory, self._service.get_secret_value()
            )
            self._consumer = self._consumer_factory(
                self._events.get_secret_value(),
                consumer_group=self.consumer_group,
                eventhub_name=self.eventhub_name,
            )
            await asyncio.wait_for(self._consumer.get_partition_ids(), self.open_timeout_s)
        except ImportError:
            await self._release()
            raise
        except Exception as exc:
            await self._release()
            raise ChannelError(
                f"cannot open the IoT Hub channel to {self.hostname}: {self._redact(exc)}"
            ) from None
        inbox: asyncio.Queue[object] = asyncio.Queue()
        self._inbox = inbox
        self._receiver = asyncio.create_task(
            self._consumer.receive(
                self._on_event,
                starting_position=start,
                starting_position_inclusive=True,
                on_error=self._on_error,
            )
        )
        self._receiver.add_done_callback(self._receiver_ended)

    async def send(self, message: Message) -> None:
        """Send a C2D message; returns once the hub accepted it into the device's queue."""
        if self._registry is None or self._executor is None:
            raise ChannelError("the IoT Hub channel is not open: use `async with channel:`")
        properties = dict(message.properties)
        properties.setdefault("contentType", CONTENT_TYPE)
        properties.setdefault("contentEncoding", CONTENT_ENCODING)
        try:
            body = message.body.decode("utf-8")
        except UnicodeDecodeError:
            raise ChannelError(
                f"C2D message to {message.device_id!r} has a body that is not UTF-8"
            ) from None
        registry = self._registry
        call = asyncio.get_running_loop().run_in_executor(
            self._executor,
            lambda: registry.send_c2d_message(message.device_id, body, properties=properties),
        )
        try:
            await asyncio.wait_for(call, self.send_timeout_s)
        except TimeoutError:
            raise ChannelError(
                f"IoT Hub {self.hostname} did not accept a C2D message to "
                f"{message.device_id!r} within {self.send_timeout_s:g} s"
            ) from None
        except Exception as exc:
            raise ChannelError(
                f"IoT Hub {self.hostname} refused a C2D message to {message.device_id!r} "
                f"(is the device registered, its queue not full?): {self._redact(exc)}"
            ) from None

    async def receive(self) -> AsyncIterator[Message]:
        """D2C messages from every device until the channel is closed.

        Raises:
            ChannelError: the events receiver failed (credentials refused, receiver stopped).
        """
        inbox = self._inbox
        if inbox is None:
            raise ChannelError("the IoT Hub channel is not open: use `async with channel:`")
        while True:
            if self._failure is not None:
                raise self._failure
            item = await inbox.get()
            if item is _CLOSED:
                inbox.put_nowait(_CLOSED)  # for any other reader
                return
            if isinstance(item, ChannelError):
                continue  # recorded in self._failure; raised above
            message = message_from_event(cast("EventData", item))
            if message is not None:
                yield message

    async def close(self) -> None:
        """Stop reading events and release both clients. Safe to call twice."""
        if self._receiver is None and self._executor is None:
            return
        self._closing = True
        receiver, inbox = self._receiver, self._inbox
        self._receiver = None
        await self._release()
        if receiver is not None:
            try:
                await asyncio.wait_for(receiver, 10.0)
            except TimeoutError:
                logger.warning("the IoT Hub events receiver did not stop within 10 s")
            except Exception as exc:
                # Readers were told already (see _receiver_ended); closing goes on.
                logger.debug("the IoT Hub events receiver ended with %s", self._redact(exc))
        if inbox is not None:
            inbox.put_nowait(_CLOSED)
        self._inbox = None

    async def _release(self) -> None:
        consumer, registry, executor = self._consumer, self._registry, self._executor
        self._consumer = self._registry = self._executor = None
        if consumer is not None:
            try:
                await consumer.close()
            except Exception as exc:
                logger.warning("closing the IoT Hub events client failed: %s", self._redact(exc))
        if executor is not None:
            if registry is not None:
                disconnecting = asyncio.get_running_loop().run_in_executor(
                    executor, _disconnect, registry
                )
                try:
                    await asyncio.wait_for(disconnecting, 10.0)
                except TimeoutError:
                    logger.warning("the IoT Hub C2D client did not close within 10 s")
            executor.shutdown(wait=False)

    async def _on_event(self, partition: PartitionContext, event: EventData | None) -> None:
        # Runs inside the SDK, which swallows what this raises: only queue the event.
        if event is None or self._inbox is None:
            return
        self._inbox.put_nowait(event)
        try:
            # In memory: a partition receiver the SDK restarts resumes after this event.
            await partition.update_checkpoint(event)
        except Exception as exc:
            logger.debug("checkpoint of partition %s failed: %s", partition.partition_id, exc)

    async def _on_error(self, partition: PartitionContext | None, error: Exception) -> None:
        with azure_sdk():
            from azure.eventhub.exceptions import AuthenticationError
        where = f"partition {partition.partition_id}" if partition is not None else "load balancing"
        if isinstance(error, AuthenticationError):
            self._fail(f"IoT Hub {self.hostname} refused the events credentials ({where})", error)
        else:
            # The SDK retries these itself (lost connections, timeouts).
            logger.warning("reading IoT Hub events (%s): %s", where, self._redact(error))

    def _receiver_ended(self, task: asyncio.Task[None]) -> None:
        if self._closing or task.cancelled():
            return
        error = task.exception()
        reason = "stopped" if error is None else "failed"
        self._fail(f"the IoT Hub events receiver of {self.hostname} {reason}", error)

    def _fail(self, what: str, error: BaseException | None) -> None:
        detail = f": {self._redact(error)}" if error is not None else ""
        failure = ChannelError(f"{what}{detail}")
        if self._failure is None:
            self._failure = failure
        if self._inbox is not None:
            self._inbox.put_nowait(failure)  # wakes a waiting reader

    def _redact(self, error: BaseException) -> str:
        return self._redactor(first_line(error))


def _secret(value: str | SecretStr) -> SecretStr:
    return value if isinstance(value, SecretStr) else SecretStr(value)


def _disconnect(registry: RegistryManager) -> None:
    client = getattr(registry, "amqp_svc_client", None)
    disconnect = getattr(client, "disconnect_sync", None)
    if disconnect is None:
        return
    try:
        disconnect()
    except Exception as exc:
        logger.warning("closing the IoT Hub C2D client failed: %s", first_line(exc))


class IoTHubDeviceTransport(MqttDeviceTransport):
    """Device side over IoT Hub's MQTT endpoint: MQTT 3.1.1, TLS, port 8883, SAS token.

    transport = IoTHubDeviceTransport.from_connection_string(
        "HostName=hub.azure-devices.net;DeviceId=press-7;SharedAccessKey=...")

    Args:
        credentials: the device's hub, id and key (and gateway, if any) to sign in with.
        ca_file: CA certificates to trust for the hub's TLS (default: the system's).
        token_ttl: how long each connection's SAS token is valid.
        options: timeouts, reconnect backoff and queue bounds of the MQTT client.
    """

    def __init__(
        self,
        credentials: DeviceCredentials,
        *,
        ca_file: str | None = None,
        token_ttl: timedelta = timedelta(hours=1),
        options: MqttOptions | None = None,
    ) -> None:
        broker = MqttBroker(
            host=credentials.gateway or credentials.hostname,
            port=IOTHUB_MQTT_PORT,
            username=credentials.mqtt_username(),
            tls=True,
            ca_file=ca_file,
            protocol="3.1.1",
        )
        super().__init__(credentials.device_id, broker, options=options)
        self.credentials = credentials
        self.token_ttl = token_ttl

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str | SecretStr,
        *,
        ca_file: str | None = None,
        token_ttl: timedelta = timedelta(hours=1),
        options: MqttOptions | None = None,
    ) -> IoTHubDeviceTransport:
        """From a device connection string (`HostName=...;DeviceId=...;SharedAccessKey=...`)."""
        credentials = DeviceCredentials.from_connection_string(connection_string)
        return cls(credentials, ca_file=ca_file, token_ttl=token_ttl, options=options)

    def sign_in(self, now: float | None = None) -> tuple[str, str]:
        """(username, SAS token) for the next connection, valid for `token_ttl`."""
        expiry = int((time.time() if now is None else now) + self.token_ttl.total_seconds())
        return self.credentials.mqtt_username(), self.credentials.sas_token(expiry)

    def _settings(self) -> ClientSettings:
        return client_settings(self.broker, self.device_id, self.options, self._sign_in)

    def _sign_in(self) -> tuple[str | None, str | None]:
        return self.sign_in()
